"""Photo index over faiss: exact inner product for small galleries, HNSW above a measured size.

Embeddings are L2-normalised float32 rows, so inner product = cosine similarity. The index keeps
its own copy of the vectors (numpy) for the exact ``rank_of`` and to rebuild as another kind;
faiss serves the top-k search. See bench/results/index.md for the measurements behind the
defaults below.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from retrieval.metrics import true_ranks

# Below this size exact search costs under ~2 ms a query on 2 cores, less than a tenth of an
# encoder forward, and needs no build time; above it HNSW is >10x faster at recall@10 >= 0.95
# (bench/results/index.md).
HNSW_THRESHOLD = 50_000
KINDS = ("auto", "flat", "hnsw")


@dataclass(frozen=True)
class HNSWParams:
    """HNSW graph parameters (chosen by recall@10 >= 0.95 vs exact and p95 latency, see bench)."""

    M: int = 32  # graph degree: memory ~ 2*M*4 bytes/vector on top of the vectors
    ef_construction: int = 64  # build-time beam: higher = better graph, slower build
    ef_search: int = 64  # query-time beam: higher = better recall, slower queries


def set_faiss_threads(n: int | None = None) -> int:
    """Cap faiss' OpenMP threads (``EARLYSKETCH_FAISS_THREADS`` or ``min(2, cores)``) and return it.

    faiss and torch each default to one thread per core; on a small machine serving several
    sessions they fight over the cores, so both are capped.
    """
    global _threads_set
    if n is None:
        n = int(os.environ.get("EARLYSKETCH_FAISS_THREADS", min(2, os.cpu_count() or 1)))
    faiss.omp_set_num_threads(max(1, n))
    _threads_set = True
    return max(1, n)


_threads_set = False  # an explicit set_faiss_threads() call wins over the default applied by PhotoIndex


def _as_matrix(embeddings: np.ndarray, dim: int | None = None) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"embedding size {x.shape[1]} does not match the index ({dim}); was it built by another model?")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain NaN or inf; check the encoder output")
    return x


def _new_faiss(kind: str, dim: int, params: HNSWParams) -> faiss.Index:
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    index = faiss.IndexHNSWFlat(dim, params.M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = params.ef_construction
    index.hnsw.efSearch = params.ef_search
    return index


class PhotoIndex:
    """Photo embeddings with string ids: top-k search (faiss) and exact rank of a target.

    Safe to share between threads: ``add`` and ``search`` hold a lock; ``rank_of`` reads an
    immutable snapshot of the vectors, so it never waits.

    Example:
        >>> index = PhotoIndex.build(photo_embeddings, ["a", "b", "c"])
        >>> scores, ids = index.search(sketch_embeddings, k=2)
        >>> index.rank_of(sketch_embeddings[0], "b")
    """

    def __init__(self, dim: int, kind: str = "auto", params: HNSWParams | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"index kind must be one of {KINDS}, got {kind!r}")
        if not _threads_set:
            set_faiss_threads()
        self.dim = int(dim)
        self.requested_kind = kind
        self.params = params or HNSWParams()
        self.kind = "hnsw" if kind == "hnsw" else "flat"
        self._faiss = _new_faiss(self.kind, self.dim, self.params)
        self._lock = threading.Lock()
        # (vectors, ids, id -> row) replaced as a whole on add, so readers see a consistent triple.
        self._snapshot: tuple[np.ndarray, list[str], dict[str, int]] = (np.zeros((0, self.dim), np.float32), [], {})

    # --- building ------------------------------------------------------------------------------
    @classmethod
    def build(
        cls, embeddings: np.ndarray, ids: list[str], kind: str = "auto", params: HNSWParams | None = None
    ) -> PhotoIndex:
        """Index ``embeddings`` ``(N, D)`` under ``ids``; ``kind`` "auto" picks flat or HNSW by size."""
        x = _as_matrix(embeddings)
        index = cls(x.shape[1], kind, params)
        index.add(x, ids)
        return index

    @property
    def ids(self) -> list[str]:
        return list(self._snapshot[1])

    @property
    def vectors(self) -> np.ndarray:
        """Read-only ``(N, D)`` float32 view of the stored embeddings."""
        view = self._snapshot[0].view()
        view.flags.writeable = False
        return view

    def __len__(self) -> int:
        return len(self._snapshot[1])

    def __contains__(self, photo_id: str) -> bool:
        return photo_id in self._snapshot[2]

    def add(self, embeddings: np.ndarray, ids: list[str]) -> None:
        """Append photos. Ids must be new; an "auto" index switches to HNSW past the threshold."""
        x = _as_matrix(embeddings, self.dim)
        ids = [str(i) for i in ids]
        if len(ids) != len(x):
            raise ValueError(f"got {len(x)} embeddings but {len(ids)} ids")
        with self._lock:
            vectors, old_ids, row_of = self._snapshot
            clash = [i for i in ids if i in row_of] or ([] if len(set(ids)) == len(ids) else ["(repeated in batch)"])
            if clash:
                raise ValueError(f"photo ids already in the index: {clash[:5]}; ids must be unique")
            new_vectors = np.concatenate([vectors, x]) if len(vectors) else x.copy()
            new_ids = old_ids + ids
            new_rows = dict(row_of)
            new_rows.update({pid: len(old_ids) + j for j, pid in enumerate(ids)})
            if self.requested_kind == "auto" and self.kind == "flat" and len(new_ids) > HNSW_THRESHOLD:
                # Crossing the threshold: rebuild as HNSW from all stored vectors.
                self.kind = "hnsw"
                self._faiss = _new_faiss("hnsw", self.dim, self.params)
                self._faiss.add(new_vectors)
            else:
                self._faiss.add(x)
            self._snapshot = (new_vectors, new_ids, new_rows)

    # --- queries -------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top-``k`` photos per query: scores ``(B, k')`` and ids, ``k' = min(k, len(index))``."""
        q = _as_matrix(queries, self.dim)
        with self._lock:
            ids = self._snapshot[1]
            k = min(int(k), len(ids))
            if k <= 0:
                return np.zeros((len(q), 0), np.float32), [[] for _ in range(len(q))]
            scores, rows = self._faiss.search(q, k)
        # HNSW can return fewer than k hits (row -1, score -FLT_MAX); those ids are left out.
        return scores, [[ids[r] for r in row if r >= 0] for row in rows]

    def rank_of(self, query: np.ndarray, photo_id: str) -> int:
        """Exact 1-based rank of ``photo_id`` for ``query`` ``(D,)``; ties count against it."""
        return int(self.ranks_of(_as_matrix(query, self.dim), [photo_id])[0])

    def ranks_of(self, queries: np.ndarray, photo_ids: list[str]) -> np.ndarray:
        """Exact ranks ``(B,)`` of one target per query (``queries`` ``(B, D)``), by a matmul."""
        vectors, _, row_of = self._snapshot
        missing = [p for p in photo_ids if p not in row_of]
        if missing:
            raise KeyError(f"photo ids not in the index: {missing[:5]}")
        q = _as_matrix(queries, self.dim)
        return true_ranks(q @ vectors.T, np.array([row_of[p] for p in photo_ids], dtype=np.int64))

    # --- persistence ---------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``index.faiss``, ``ids.json``, ``vectors.npy`` and ``index.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            vectors, ids, _ = self._snapshot
            faiss.write_index(self._faiss, str(folder / "index.faiss"))
        np.save(folder / "vectors.npy", vectors)
        (folder / "ids.json").write_text(json.dumps(ids))
        meta = {"dim": self.dim, "kind": self.kind, "requested_kind": self.requested_kind, "params": asdict(self.params)}
        (folder / "index.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> PhotoIndex:
        """Read an index written by :meth:`save`."""
        folder = Path(folder)
        if not (folder / "index.json").exists():
            raise FileNotFoundError(f"no index at {folder}: expected index.json from PhotoIndex.save")
        meta = json.loads((folder / "index.json").read_text())
        index = cls(meta["dim"], meta["requested_kind"], HNSWParams(**meta["params"]))
        ids = json.loads((folder / "ids.json").read_text())
        vectors = _as_matrix(np.load(folder / "vectors.npy"), index.dim)
        index._faiss = faiss.read_index(str(folder / "index.faiss"))
        index.kind = meta["kind"]
        if index._faiss.ntotal != len(ids) or len(vectors) != len(ids):
            raise ValueError(f"index at {folder} is inconsistent (faiss {index._faiss.ntotal}, ids {len(ids)}); rebuild it")
        if index.kind == "hnsw":
            index._faiss.hnsw.efSearch = index.params.ef_search  # efSearch is not serialised
        index._snapshot = (vectors, list(ids), {pid: i for i, pid in enumerate(ids)})
        return index
