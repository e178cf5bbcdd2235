"""Photo index over faiss: exact inner product for small galleries, IVF-Flat above a measured size.

Embeddings are L2-normalised float32 rows, so inner product = cosine similarity. The index keeps
its own copy of the vectors (numpy) for the exact rank and to rebuild as another kind; faiss serves
the top-k search. The target rank is certified (retrieval/serving/exact_rank.py): every compared
score comes from one canonical kernel, and an IVF index reads only the lists whose bounds straddle
the target's score. See bench/results/index.md and bench/results/latency_1m.md for the
measurements behind the defaults below; retrieval/serving/compact_index.py is the memory-lean
variant for tens of millions of photos.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import faiss
import numpy as np

from retrieval.serving.exact_rank import (
    IVFRankCounter,
    TargetRank,
    canonical_scores,
    count_at_or_above,
    pad_rows,
    with_target_in_top_k,
)
from retrieval.serving.versions import content_hash

# Below this size exact search costs under ~1 ms a query on 2 cores, far less than an encoder
# forward, and needs no build step; above it an approximate index is >10x faster at recall@10
# >= 0.95 (bench/results/index.md).
APPROX_THRESHOLD = 50_000
KINDS = ("auto", "flat", "hnsw", "ivf")


@dataclass(frozen=True)
class IndexParams:
    """Approximate-index parameters (chosen by recall@10 >= 0.95 vs exact and p95 latency, see bench).

    "auto" uses IVF-Flat above the threshold: on galleries with many near-duplicate photos (1M
    photos, bench/results/latency_1m.md) HNSW's pruned graph loses recall (0.62 at 1M, 0.81 at
    efSearch 512) while IVF-Flat scores every photo of the probed cells exactly (recall >= 0.99).
    """

    M: int = 32  # HNSW graph degree: memory ~ 2*M*4 bytes/vector on top of the vectors
    ef_construction: int = 64  # HNSW build-time beam: higher = better graph, slower build
    ef_search: int = 64  # HNSW query-time beam: higher = better recall, slower queries
    nlist: int = 0  # IVF cells; 0 = 4*sqrt(N) at training time (the faiss guideline)
    # IVF cells scanned per query. Sketch queries on the 100k/1M benchmark galleries: recall@10
    # 0.967/0.986 at 16, 0.975/0.994 at 32 (0.1/0.27 ms), 0.985/0.999 at 64; 32 keeps headroom
    # for a search that costs < 1/10 of the encoder forward.
    nprobe: int = 32
    retrain_growth: float = 4.0  # IVF is re-trained once the gallery grows this many times past its training size


def _as_matrix(embeddings: np.ndarray, dim: int | None = None) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(
            f"embedding size {x.shape[1]} does not match the index ({dim}); was it built by another model?"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain NaN or inf; check the encoder output")
    return x


def _ivf_cells(n: int, params: IndexParams) -> int:
    """IVF cell count for ``n`` training vectors: the asked number, else 4*sqrt(n), and k-means
    needs ~39 points per centroid to be stable, so never more than n/39."""
    wanted = params.nlist or int(4 * np.sqrt(n))
    return int(max(1, min(wanted, n // 39)))


def _new_faiss(kind: str, vectors: np.ndarray, params: IndexParams) -> faiss.Index:
    """A faiss index of ``kind`` holding ``vectors`` (IVF is trained on a seeded sample of them)."""
    dim = vectors.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
    else:
        nlist = _ivf_cells(len(vectors), params)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = 0  # deterministic k-means: the same gallery gives the same cells
        sample = np.random.default_rng(0).choice(len(vectors), min(len(vectors), 64 * nlist), replace=False)
        index.train(vectors[np.sort(sample)])
        index.nprobe = min(params.nprobe, nlist)
    if len(vectors):
        index.add(vectors)
    return index


class PhotoIndex:
    """Photo embeddings with string ids: top-k search (faiss) and exact rank of a target.

    Thread-safe for queries (``add``/``search`` lock; ranks read a snapshot and, for IVF, the faiss
    lists without waiting): do not ``add`` while strokes are ranked (galleries are built first).

    Example:
        >>> index = PhotoIndex.build(photo_embeddings, ["a", "b", "c"])
        >>> scores, ids = index.search(sketch_embeddings, k=2)
        >>> index.rank_of(sketch_embeddings[0], "b")
    """

    def __init__(self, dim: int, kind: str = "auto", params: IndexParams | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"index kind must be one of {KINDS}, got {kind!r}")
        self.dim = int(dim)
        self.requested_kind = kind
        self.params = params or IndexParams()
        self.kind = "flat" if kind == "auto" else kind
        self._faiss: faiss.Index | None = None  # built on the first add (IVF needs data to train)
        self._trained_size = 0  # gallery size when the faiss index was last built
        self.rebuilt_on_load = False  # load() found an index of an older "auto" policy and rebuilt it
        self._lock = threading.Lock()
        # (vectors, ids, id -> row) replaced as a whole on add, so readers see a consistent triple.
        self._snapshot: tuple[np.ndarray, list[str], dict[str, int]] = (np.zeros((0, self.dim), np.float32), [], {})
        self._counter: IVFRankCounter | None = None  # list bounds of the IVF index, rebuilt after a change
        self._content_hash: str | None = None  # of ids + vectors, computed on first use after a change

    # --- building ------------------------------------------------------------------------------
    @classmethod
    def build(
        cls, embeddings: np.ndarray, ids: list[str], kind: str = "auto", params: IndexParams | None = None
    ) -> PhotoIndex:
        """Index ``embeddings`` ``(N, D)`` under ``ids``; ``kind`` "auto" picks flat or IVF by size."""
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

    def content_hash(self) -> str:
        """Hash of the photo ids and their embeddings, in order: two indexes answer alike iff equal."""
        with self._lock:
            if self._content_hash is None:
                self._content_hash = content_hash(self._snapshot[1], self._snapshot[0])
            return self._content_hash

    def add(self, embeddings: np.ndarray, ids: list[str]) -> None:
        """Append photos. Ids must be new; an "auto" index switches to IVF past the threshold."""
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
            if self._needs_rebuild(len(new_ids)):
                self.kind = self._kind_for(len(new_ids))
                self._faiss = _new_faiss(self.kind, new_vectors, self.params)
                self._trained_size = len(new_ids)
            else:
                self._faiss.add(x)
            self._snapshot = (new_vectors, new_ids, new_rows)
            self._counter = self._content_hash = None

    def _kind_for(self, n: int) -> str:
        if self.requested_kind != "auto":
            return self.requested_kind
        return "ivf" if n > APPROX_THRESHOLD else "flat"

    def _needs_rebuild(self, n: int) -> bool:
        """Whether adding up to ``n`` photos needs a new faiss index rather than an incremental add.

        First data; an "auto" index crossing the threshold; or an IVF index that has outgrown its
        cells (trained on ``retrain_growth`` times fewer photos, each probe scans that much more).
        """
        if self._faiss is None or self._kind_for(n) != self.kind:
            return True
        return self.kind == "ivf" and n > self.params.retrain_growth * self._trained_size

    # --- queries -------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top-``k`` photos per query: scores ``(B, k')`` and ids, ``k' = min(k, len(index))``."""
        q = _as_matrix(queries, self.dim)
        with self._lock:
            ids = self._snapshot[1]
            k = min(int(k), len(ids))
            if k <= 0 or self._faiss is None:
                return np.zeros((len(q), 0), np.float32), [[] for _ in range(len(q))]
            scores, rows = self._faiss.search(q, k)
        # HNSW and IVF can return fewer than k hits (row -1, score -FLT_MAX); those ids are left out.
        return scores, [[ids[r] for r in row if r >= 0] for row in rows]

    def target_score(self, query: np.ndarray, photo_id: str) -> float:
        """The canonical score (:func:`~retrieval.serving.exact_rank.canonical_scores`) of ``photo_id``."""
        vectors, _, row_of = self._snapshot
        if photo_id not in row_of:
            raise KeyError(f"photo ids not in the index: {[photo_id]}")
        row = row_of[photo_id]
        return float(canonical_scores(_as_matrix(query, self.dim)[0], vectors[row : row + 1])[0])

    def count_at_or_above(self, query: np.ndarray, threshold: float, cap: int | None = None) -> TargetRank:
        """``#(canonical score >= threshold)``: exact, or bounded once an IVF scan passes ``cap``."""
        q = _as_matrix(query, self.dim)[0]
        counter = self._rank_counter()
        if counter is None:  # flat / HNSW: one pass over the vectors, always exact
            vectors = self._snapshot[0]
            return TargetRank.of(count_at_or_above(q, vectors, threshold), len(vectors))
        return counter.count(q, threshold, cap)

    def _rank_counter(self) -> IVFRankCounter | None:
        """The IVF list bounds (built on first use after a change; None for other kinds)."""
        with self._lock:
            if self.kind != "ivf" or self._faiss is None:
                return None
            if self._counter is None:
                self._counter = IVFRankCounter.over(self._faiss, self._snapshot[0])
            return self._counter

    def rank_target(self, query: np.ndarray, photo_id: str, cap: int | None = None) -> TargetRank:
        """Certified 1-based rank of ``photo_id`` for ``query`` ``(D,)`` (ties count against it);
        exact up to ``cap``, an interval above it (IVF only: a flat scan is always exact)."""
        return self.count_at_or_above(query, self.target_score(query, photo_id), cap)

    def rank_of(self, query: np.ndarray, photo_id: str) -> int:
        """Exact 1-based rank of ``photo_id`` for ``query`` ``(D,)``; ties count against it."""
        return self.rank_target(query, photo_id).rank

    def ranks_of(self, queries: np.ndarray, photo_ids: list[str]) -> np.ndarray:
        """Exact ranks ``(B,)`` of one target per query (``queries`` ``(B, D)``)."""
        q = _as_matrix(queries, self.dim)
        if len(photo_ids) != len(q):
            raise ValueError(f"got {len(q)} queries but {len(photo_ids)} target ids")
        return np.array([self.rank_of(row, pid) for row, pid in zip(q, photo_ids)], dtype=np.int64)

    def search_and_rank(
        self, queries: np.ndarray, k: int, target_ids: list[str | None], rank_cap: int | None = None
    ) -> tuple[np.ndarray, list[list[str]], list[TargetRank | None]]:
        """Top-``k`` per query and the certified rank of each query's target (None where none): the
        one search call of :class:`~retrieval.serving.retriever.Retriever`, also offered by ``ShardedIndex``.

        A target whose exact rank is within ``k`` is always in the returned top-``k`` (an
        approximate search may have missed it), at its rank.
        """
        if len(target_ids) != len(queries):
            raise ValueError(f"got {len(queries)} queries but {len(target_ids)} target ids")
        q = _as_matrix(queries, self.dim)
        scores, ids = self.search(q, k)
        rows = [scores[b, : len(ids[b])] for b in range(len(q))]
        ranks: list[TargetRank | None] = []
        for b, target in enumerate(target_ids):
            if target is None:
                ranks.append(None)
                continue
            score = self.target_score(q[b], target)
            rank = self.count_at_or_above(q[b], score, rank_cap)
            ranks.append(rank)
            rows[b], ids[b] = with_target_in_top_k(rows[b], ids[b], target, score, rank, k)
        return pad_rows(rows), ids, ranks

    # --- persistence ---------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``index.faiss``, ``ids.json``, ``vectors.npy`` and ``index.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            vectors, ids, _ = self._snapshot
            if self._faiss is not None:
                faiss.write_index(self._faiss, str(folder / "index.faiss"))
            trained_size = self._trained_size
        np.save(folder / "vectors.npy", vectors)
        (folder / "ids.json").write_text(json.dumps(ids))
        meta = {
            "dim": self.dim,
            "kind": self.kind,
            "requested_kind": self.requested_kind,
            "trained_size": trained_size,
            "params": asdict(self.params),
        }
        (folder / "index.json").write_text(json.dumps(meta, indent=2))
        return folder

    @staticmethod
    def saved_ids(folder: str | Path) -> list[str]:
        """The photo ids of an index written by :meth:`save`, without reading its vectors."""
        folder = Path(folder)
        if not (folder / "index.json").exists():
            raise FileNotFoundError(f"no index at {folder}: expected index.json from PhotoIndex.save")
        return json.loads((folder / "ids.json").read_text())

    @classmethod
    def load(cls, folder: str | Path) -> PhotoIndex:
        """Read an index written by :meth:`save`."""
        folder = Path(folder)
        ids = cls.saved_ids(folder)
        meta = json.loads((folder / "index.json").read_text())
        known = {f.name for f in fields(IndexParams)}
        params = IndexParams(**{k: v for k, v in meta["params"].items() if k in known})
        index = cls(meta["dim"], meta["requested_kind"], params)
        vectors = _as_matrix(np.load(folder / "vectors.npy"), index.dim)
        index.kind = meta["kind"]
        if ids:
            index._faiss = faiss.read_index(str(folder / "index.faiss"))
            index._trained_size = int(meta.get("trained_size", len(ids)))
        stored = index._faiss.ntotal if index._faiss is not None else 0
        if stored != len(ids) or len(vectors) != len(ids):
            raise ValueError(f"index at {folder} is inconsistent (faiss {stored}, ids {len(ids)}); rebuild it")
        if ids and index.requested_kind == "auto" and index.kind != index._kind_for(len(ids)):
            # Saved under an older "auto" policy (HNSW above the threshold): follow the current one.
            index.kind = index._kind_for(len(ids))
            index._faiss, index._trained_size = _new_faiss(index.kind, vectors, index.params), len(ids)
            index.rebuilt_on_load = True
        # Search-time knobs are not serialised by faiss.
        if index.kind == "hnsw" and ids:
            index._faiss.hnsw.efSearch = index.params.ef_search
        elif index.kind == "ivf" and ids:
            index._faiss.nprobe = min(index.params.nprobe, index._faiss.nlist)
        index._snapshot = (vectors, list(ids), {pid: i for i, pid in enumerate(ids)})
        return index
