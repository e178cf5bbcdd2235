"""``app.py`` with two faults a benchmark can switch on while it runs: a full disk under the study
log and a ranker that fails (a ``--serve-url`` cluster that is down).

Used by ``bench_hostile.py`` through ``running_app(entry=...)``: same flags as ``app.py``. The
faults are read from the file named by ``EARLYSKETCH_FAULTS`` (one fault name per line, rewritten
by the benchmark); each is injected at its seam, and nothing else of the app changes:

- ``disk_full``: the study log's one write seam (``retrieval.study.log._write_all``) raises
  ``OSError(ENOSPC)`` before writing a byte, as ``os.write`` does on a full disk;
- ``ranker_down``: ``Backend.rank`` raises ``ConnectionError``.
"""

from __future__ import annotations

import errno
import os
import runpy
from pathlib import Path

from retrieval.provenance import PROJECT_ROOT

APP = PROJECT_ROOT / "app.py"

FAULTS = Path(os.environ.get("EARLYSKETCH_FAULTS", "/nonexistent"))


def active(fault: str) -> bool:
    """Whether the benchmark has ``fault`` switched on now (one small read per call)."""
    try:
        return fault in FAULTS.read_text().split()
    except OSError:
        return False


def install() -> None:
    import retrieval.study.log as study_log
    from retrieval.ui.backend import Backend

    write_all, rank = study_log._write_all, Backend.rank

    def full_disk_write(fd: int, data: bytes, path: Path) -> None:
        if active("disk_full"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write_all(fd, data, path)

    def failing_rank(self, sketch, target_id, k):
        if active("ranker_down"):
            raise ConnectionError("ranker unreachable (injected by bench/load/faulty_app.py)")
        return rank(self, sketch, target_id, k)

    study_log._write_all = full_disk_write
    Backend.rank = failing_rank


if __name__ == "__main__":
    install()
    runpy.run_path(str(APP), run_name="__main__")
