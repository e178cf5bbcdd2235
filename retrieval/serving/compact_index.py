"""A photo index for tens of millions of photos on one machine: one float32 copy, on disk.

:class:`~retrieval.serving.index.PhotoIndex` keeps two float32 copies in RAM (numpy + faiss) and
string ids: fine for the app's galleries, 124 GB at 100M photos. Here:

* **two small code sets in RAM**, over one k-means partition, ids = row numbers (int64, no strings):
  - *top-k*: faiss IVF-PQ fast-scan (4-bit PQ of residuals, 2 dimensions per sub-quantiser: 32
    bytes at 128-d), whose SIMD kernel reads a list far faster than the scalar quantiser's; its
    ``refine`` x k best candidates are re-scored exactly (the job of faiss' ``IndexRefineFlat``,
    whose flat copy would be the RAM copy this avoids);
  - *rank*: IVF-SQ8 (``by_residual=False``, 1 byte per dimension, decoding error measured per
    dimension at build), each k-means list split into ``shells`` inverted lists by the members'
    distance to the centroid: each shell's members lie between two distances to it, which bounds
    both their spread and (on the sphere of embeddings) their angle to its direction, so its score
    bounds (``ListStats.bounds``) are tighter and the certified rank reads fewer lists;
* **the float32 matrix memory-mapped** read-only (``vectors.f32``): only the rows a query
  re-scores are paged in (the top-k candidates and the band of the certified rank);
* **the certified rank** of retrieval/serving/exact_rank.py over the SQ8 lists.

Folder layout (written by :meth:`CompactIndex.build`): ``vectors.f32`` (or a link to the source
matrix), ``topk.faiss``, ``rank.faiss``, ``bounds.npz`` (list stats + code error), ``index.json``.

    index = CompactIndex.build(np.load("emb.npy", mmap_mode="r"), "/data/idx", nlist=4096)
    scores, rows = index.search(queries, k=10)
    rank = index.rank_target(query, target_row, cap=1000)     # a TargetRank
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

from retrieval.serving.exact_rank import (
    DEFAULT_RANK_CAP,
    IVFRankCounter,
    TargetRank,
    canonical_scores,
    code_error,
    list_labels,
    pad_rows,
)
from retrieval.serving.list_bounds import ListStats
from retrieval.serving.versions import content_hash

ADD_CHUNK = 500_000  # rows assigned and encoded per step: ~0.25 GB of float32 at 128-d
DEFAULT_SHELLS = 8  # rank lists per k-means list (see the module docstring): more shells, tighter bounds


class CompactIndex:
    """Fast-scan top-k codes + shelled IVF-SQ8 rank codes + memory-mapped float32 vectors + integer
    ids (rows); see the module docstring."""

    def __init__(
        self, topk: faiss.IndexIVF, rank: faiss.IndexIVF, vectors: np.ndarray, counter: IVFRankCounter, meta: dict
    ) -> None:
        self.topk, self.rank, self.vectors, self.counter, self.meta = topk, rank, vectors, counter, meta
        self.dim = int(meta["dim"])
        self.nprobe = int(meta["nprobe"])

    def __len__(self) -> int:
        return int(self.meta["n"])

    @property
    def content_hash(self) -> str:
        return str(self.meta["content_hash"])

    @property
    def nprobe(self) -> int:
        """k-means lists the top-k search reads."""
        return int(self.topk.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.topk.nprobe = int(min(value, self.topk.nlist))

    # --- building ------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        folder: str | Path,
        *,
        nlist: int = 4096,
        nprobe: int = 32,
        shells: int = DEFAULT_SHELLS,
        train_size: int = 200_000,
        seed: int = 0,
        progress: bool = True,
    ) -> CompactIndex:
        """Index the ``(N, D)`` float32 ``vectors`` (an array or a memory map, read in chunks) into
        ``folder``; the matrix is written there once (or linked when it already is a ``.f32`` file)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        n, dim = vectors.shape
        if shells < 1:
            raise ValueError(f"shells must be >= 1, got {shells}")
        t = time.perf_counter()
        topk = _trained_fast_scan(vectors, nlist, train_size, seed)
        rank = _empty_rank_codes(vectors, topk.quantizer.reconstruct_n(0, nlist), shells)
        timings = {"train_s": time.perf_counter() - t}
        t = time.perf_counter()
        mapped = _encode_and_store(topk, vectors, folder / "vectors.f32", progress)
        timings["add_s"] = time.perf_counter() - t
        t = time.perf_counter()
        stats = _add_in_shells(rank, mapped, list_labels(topk), shells, progress)
        errors = code_error(rank, mapped)
        timings["rank_codes_s"] = time.perf_counter() - t
        faiss.write_index(topk, str(folder / "topk.faiss"))
        faiss.write_index(rank, str(folder / "rank.faiss"))
        np.savez(
            folder / "bounds.npz",
            centroids=stats.centroids,
            sizes=stats.sizes,
            radius=stats.radius,
            inner_radius=stats.inner_radius,
            max_norm=stats.max_norm,
            min_norm=stats.min_norm,
            code_error=errors,
        )
        meta = {"dim": dim, "n": n, "nlist": nlist, "shells": shells, "nprobe": nprobe, "build": timings}
        meta["codes"] = {"topk": f"IVF{nlist},PQ{topk.pq.M}x4fs", "rank": f"IVF{nlist}x{shells} shells,SQ8"}
        meta["content_hash"] = content_hash([], mapped)  # ids are rows: the matrix is the content
        (folder / "index.json").write_text(json.dumps(meta, indent=2))
        return cls(topk, rank, mapped, IVFRankCounter(rank, stats, errors, mapped), meta)

    @classmethod
    def open(cls, folder: str | Path) -> CompactIndex:
        """Open an index written by :meth:`build` (the matrix memory-mapped, nothing read eagerly)."""
        folder = Path(folder)
        if not (folder / "index.json").exists() or not (folder / "topk.faiss").exists():
            raise FileNotFoundError(
                f"no compact index at {folder}: expected index.json and topk.faiss from CompactIndex.build"
            )
        meta = json.loads((folder / "index.json").read_text())
        topk = faiss.read_index(str(folder / "topk.faiss"))
        rank = faiss.read_index(str(folder / "rank.faiss"))
        mapped = np.memmap(folder / "vectors.f32", np.float32, "r", shape=(meta["n"], meta["dim"]))
        if not topk.ntotal == rank.ntotal == meta["n"]:
            raise ValueError(
                f"index at {folder} is inconsistent (faiss {topk.ntotal} / {rank.ntotal}, meta {meta['n']}); rebuild it"
            )
        with np.load(folder / "bounds.npz") as b:
            if "inner_radius" not in b.files:
                raise ValueError(
                    f"index at {folder} predates the cone bounds (no inner_radius in bounds.npz); rebuild it"
                )
            stats = ListStats(
                b["centroids"], b["sizes"], b["radius"], b["inner_radius"], float(b["max_norm"]), float(b["min_norm"])
            )
            errors = b["code_error"]
        return cls(topk, rank, mapped, IVFRankCounter(rank, stats, errors, mapped), meta)

    # --- queries -------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, refine: int = 50) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query: ``refine * k`` fast-scan candidates re-scored canonically from
        the float32 matrix (50: recall@10 0.98 at 10M and nprobe 32, where 10 stopped at 0.91,
        bench/results/index_10m.md). Returns scores ``(B, k')`` float32 and rows ``(B, k')`` int64."""
        q = np.ascontiguousarray(queries, np.float32).reshape(-1, self.dim)
        _, candidates = self.topk.search(q, max(k, refine * k))
        rows, scores = [], []
        for b in range(len(q)):
            found = np.sort(candidates[b][candidates[b] >= 0])  # sorted: sequential reads of the map
            exact = canonical_scores(q[b], self.vectors[found])
            order = np.argsort(-exact, kind="stable")[:k]
            rows.append(found[order])
            scores.append(exact[order].astype(np.float32))
        width = max((len(r) for r in rows), default=0)
        out_rows = np.full((len(q), width), -1, np.int64)
        for b, r in enumerate(rows):
            out_rows[b, : len(r)] = r
        return pad_rows(scores), out_rows

    def target_score(self, query: np.ndarray, row: int) -> float:
        if not 0 <= row < len(self):
            raise KeyError(f"row {row} is not in the index of {len(self)} photos")
        return float(canonical_scores(query, self.vectors[row : row + 1])[0])

    def rank_target(self, query: np.ndarray, row: int, cap: int | None = DEFAULT_RANK_CAP) -> TargetRank:
        """Certified 1-based rank of photo ``row`` for ``query`` (ties against it); an interval above ``cap``."""
        q = np.ascontiguousarray(query, np.float32).reshape(-1)
        return self.counter.count(q, self.target_score(q, row), cap)


def _training_sample(vectors: np.ndarray, train_size: int, seed: int) -> np.ndarray:
    n = len(vectors)
    rows = np.sort(np.random.default_rng(seed).choice(n, min(n, train_size), replace=False))
    return np.ascontiguousarray(vectors[rows], np.float32)


def _trained_fast_scan(vectors: np.ndarray, nlist: int, train_size: int, seed: int) -> faiss.IndexIVFPQFastScan:
    """An empty IVF-PQ fast-scan index (k-means lists + 4-bit PQ of raw vectors) trained on a seeded sample."""
    dim = vectors.shape[1]
    # Two dimensions per 4-bit sub-quantiser: the finest split whose codes fast-scan still reads.
    pq_m = dim // 2 if dim % 2 == 0 else dim
    topk = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(dim), dim, nlist, pq_m, 4, faiss.METRIC_INNER_PRODUCT)
    # Residuals: near neighbours differ by far less than the spread of raw embeddings, and 4-bit
    # codes of raw vectors left recall@10 at 0.71 on 1M photos whatever nprobe (index_10m.md).
    topk.by_residual = True
    topk.cp.seed = seed
    topk.cp.niter = 10  # k-means iterations: list quality saturates early, build time does not
    topk.train(_training_sample(vectors, train_size, seed))
    return topk


def _empty_rank_codes(vectors: np.ndarray, centroids: np.ndarray, shells: int) -> faiss.IndexIVFScalarQuantizer:
    """IVF-SQ8 over ``len(centroids) * shells`` lists (list ``c * shells + s`` = shell ``s`` of
    k-means list ``c``; its quantiser holds each centroid ``shells`` times, for the bounds only:
    members are placed by :func:`_add_in_shells`, never assigned by it)."""
    dim = vectors.shape[1]
    rank = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(dim),
        dim,
        len(centroids) * shells,
        faiss.ScalarQuantizer.QT_8bit,
        faiss.METRIC_INNER_PRODUCT,
        False,
    )
    rank.quantizer.add(np.ascontiguousarray(np.repeat(centroids, shells, axis=0), np.float32))
    _cover_full_range(rank, vectors)
    rank.is_trained = True
    return rank


def shell_of(labels: np.ndarray, residual_norms: np.ndarray, shells: int) -> np.ndarray:
    """Shell ``0..shells-1`` of each member: equal-count slices of its list by decreasing distance
    to the centroid (shell 0 holds the farthest members, the last shell the closest)."""
    labels = np.asarray(labels, np.int64)
    order = np.lexsort((-np.asarray(residual_norms), labels))
    sizes = np.bincount(labels)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position = np.empty(len(labels), np.int64)
    position[order] = np.arange(len(labels)) - np.repeat(first, sizes)
    return np.minimum(position * shells // np.maximum(sizes[labels], 1), shells - 1)


def _add_in_shells(
    rank: faiss.IndexIVFScalarQuantizer, vectors: np.ndarray, labels: np.ndarray, shells: int, progress: bool
) -> ListStats:
    """Encode ``vectors`` into ``rank``'s lists (k-means list ``labels[i]``, shell by distance) and
    return the lists' stats, from the distances and norms this pass computes anyway."""
    all_centroids = rank.quantizer.reconstruct_n(0, rank.nlist)
    centroids = all_centroids[::shells]
    distances, norms = np.empty(len(vectors), np.float64), np.empty(len(vectors), np.float64)
    for start in range(0, len(vectors), ADD_CHUNK):
        block = np.asarray(vectors[start : start + ADD_CHUNK], np.float64)
        end = start + len(block)
        distances[start:end] = np.linalg.norm(block - centroids[labels[start:end]], axis=1)
        norms[start:end] = np.linalg.norm(block, axis=1)
    keys = labels * shells + shell_of(labels, distances, shells)
    for start in tqdm(range(0, len(vectors), ADD_CHUNK), desc="rank codes", unit="chunk", disable=not progress):
        block = np.ascontiguousarray(vectors[start : start + ADD_CHUNK], np.float32)
        ids = np.arange(start, start + len(block), dtype=np.int64)
        lists = np.ascontiguousarray(keys[start : start + len(block)])
        rank.add_core(len(block), faiss.swig_ptr(block), faiss.swig_ptr(ids), faiss.swig_ptr(lists))
    return ListStats.of_members(all_centroids, keys, distances, norms)


def _cover_full_range(ivf: faiss.IndexIVFScalarQuantizer, vectors: np.ndarray) -> None:
    """Stretch the scalar quantiser's per-dimension range from the training sample's to the whole
    gallery's. Photos outside the sample's range would be clamped, and their decoding error (the
    width of the band the certified rank re-scores) grew 16x at the median on 1M photos; with the
    full range every coordinate decodes within half a step."""
    low = np.full(ivf.d, np.inf, np.float32)
    high = np.full(ivf.d, -np.inf, np.float32)
    for start in range(0, len(vectors), ADD_CHUNK):
        block = np.asarray(vectors[start : start + ADD_CHUNK], np.float32)
        np.minimum(low, block.min(axis=0), out=low)
        np.maximum(high, block.max(axis=0), out=high)
    # QT_8bit (non-uniform) stores [vmin per dim, vdiff per dim]; a relative 1e-6 keeps the extremes inside.
    span = (high - low) * np.float32(1 + 1e-6) + np.float32(1e-12)
    faiss.copy_array_to_vector(np.concatenate([low - span * np.float32(5e-7), span]), ivf.sq.trained)


def _encode_and_store(ivf: faiss.IndexIVF, vectors: np.ndarray, target: Path, progress: bool) -> np.memmap:
    """Add ``vectors`` to ``ivf`` chunk by chunk and keep the float32 matrix at ``target`` (a link
    when the source already is a ``.f32`` file); returns it memory-mapped read-only."""
    n, dim = vectors.shape
    source = Path(getattr(vectors, "filename", "") or "")
    stored = None
    if source.suffix == ".f32" and source.resolve() != target.resolve():
        target.unlink(missing_ok=True)
        target.symlink_to(source.resolve())  # already on disk: the one copy stays where it is
    else:
        stored = np.memmap(target, np.float32, "w+", shape=(n, dim))
    for start in tqdm(range(0, n, ADD_CHUNK), desc="encoding", unit="chunk", disable=not progress):
        block = np.ascontiguousarray(vectors[start : start + ADD_CHUNK], np.float32)
        ivf.add(block)
        if stored is not None:
            stored[start : start + len(block)] = block
    if stored is not None:
        stored.flush()
    return np.memmap(target, np.float32, "r", shape=(n, dim))
