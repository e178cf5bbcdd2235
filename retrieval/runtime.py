"""The process's compute threads, set in one place.

The torch and faiss wheels each bring an OpenMP runtime, and torch also keeps its own intra-op
pool: an entry point that sets one and not the other runs with all cores in the other, which on a
2-core machine shared with a web server means oversubscription. Entry points (app, training,
evaluation, RL, benches) call :func:`set_threads` once, after building any index, with the thread
count they serve or train with. Library code (``PhotoIndex``, encoders) never changes threads.

A foundation module: it imports nothing of the project, and torch and faiss only when called.
"""

from __future__ import annotations

import os

THREADS_ENV = "EARLYSKETCH_THREADS"


def default_threads() -> int:
    """``EARLYSKETCH_THREADS`` when set, else ``min(2, cores)`` (the serving default measured in bench/)."""
    value = os.environ.get(THREADS_ENV)
    if value is not None:
        try:
            return max(1, int(value))
        except ValueError:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}") from None
    return min(2, os.cpu_count() or 1)


def set_threads(n: int | None = None, *, torch_threads: bool = True) -> int:
    """Use ``n`` threads (``None``: :func:`default_threads`) in torch and faiss; return the count set.

    ``torch_threads=False`` in a process that never loads torch (a faiss shard): importing torch only
    to set its threads would cost that process torch's memory.
    """
    import faiss

    n = default_threads() if n is None else max(1, int(n))
    if torch_threads:
        import torch

        torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    return n
