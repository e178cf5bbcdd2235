"""Exact target rank at scale: full scan vs IVF centroid bounds vs batched scans (docs/scaling.md).

The exact rank needs, per stroke, the number of photos scoring >= the target's score s_t. A full
scan reads every embedding (14 ms per 1M photos on one core, bench/results/latency_1m.md). Two
ways to make it cheaper, both exact:

* centroid bounds: give each IVF list its centroid c, radius r = max |v - c| and cone half-angle
  a = max angle(v, c). For a unit query every member scores within q.c +- r (ball) and within
  cos(angle(q, c) -+ a) (cone, unit embeddings); the tighter of the two is used. A list whose
  upper bound is below s_t adds 0, one whose lower bound is >= s_t adds its size, and only lists
  straddling s_t are scanned (bounds widened by 1e-5 against rounding).
* batching: one pass over the embeddings for B strokes at once (a (N, D) x (D, B) product).

Gallery: the real procedural embeddings of the model, grown to each size with synthetic
near-duplicates (bench/synthetic.py, as bench_latency.py). Queries: procedural sketches of gallery
photos cut at 25/50/75/100 % of their points, each with its own photo as target.

    .venv/bin/python bench/bench_rank_bounds.py --sizes 100k,1M
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import (
    BENCH_CACHE,
    DEFAULT_MODEL,
    command_line,
    header_lines,
    load_encoder,
    machine_info,
    parse_sizes,
    percentiles,
    size_label,
    write_results,
)
from synthetic import synthesise

from retrieval.cli import parse_config

MARGIN = 1e-5  # widening of every bound: float rounding of q.c and r can never drop a photo


@dataclass
class Config:
    """Benchmark settings."""

    sizes: str = "100k,1M"
    """gallery sizes (real procedural photos + synthetic near-duplicates)"""
    real_photos: int = 10_000
    """rendered procedural photos embedded by the model (the bench cache's gallery)"""
    queries: int = 60
    """sketches (x 4 cuts) used as queries, each ranked against its own photo"""
    batch: int = 8
    """strokes per batched scan"""
    model: Path = DEFAULT_MODEL
    cache_dir: Path = BENCH_CACHE
    seed: int = 0
    name: str = "rank_bounds"


class BoundedCounter:
    """Exact ``#(v . q >= s)`` over IVF lists, scanning only the lists whose bounds straddle ``s``."""

    def __init__(self, vectors: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> None:
        order = np.argsort(labels, kind="stable")
        self.vectors = np.ascontiguousarray(vectors[order])
        self.starts = np.searchsorted(labels[order], np.arange(len(centroids) + 1))
        self.sizes = np.diff(self.starts)
        self.centroids = centroids
        diff = self.vectors.astype(np.float64) - centroids[labels[order]].astype(np.float64)
        dist = np.linalg.norm(diff, axis=1)
        self.radius = np.zeros(len(centroids))
        np.maximum.at(self.radius, labels[order], dist)
        self.unit_centroids = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        members = np.einsum("nd,nd->n", self.vectors.astype(np.float64), self.unit_centroids[labels[order]])
        self.half_angle = np.zeros(len(centroids))
        np.maximum.at(self.half_angle, labels[order], np.arccos(np.clip(members, -1.0, 1.0)))

    def count(self, query: np.ndarray, s: float) -> tuple[int, int]:
        """(count of photos scoring >= s, photos scanned)."""
        q = query.astype(np.float64)
        centre = self.centroids.astype(np.float64) @ q
        angle = np.arccos(np.clip(self.unit_centroids @ q / max(np.linalg.norm(q), 1e-12), -1.0, 1.0))
        cone_upper = np.cos(np.clip(angle - self.half_angle, 0.0, np.pi)) * np.linalg.norm(q)
        cone_lower = np.cos(np.clip(angle + self.half_angle, 0.0, np.pi)) * np.linalg.norm(q)
        upper = np.minimum(centre + self.radius, cone_upper) + MARGIN
        lower = np.maximum(centre - self.radius, cone_lower) - MARGIN
        total = int(self.sizes[lower >= s].sum())
        straddle = np.flatnonzero((upper >= s) & (lower < s))
        if len(straddle) == 0:
            return total, 0
        rows = np.concatenate([np.arange(self.starts[i], self.starts[i + 1]) for i in straddle])
        return total + int((self.vectors[rows] @ query >= s).sum()), len(rows)


def queries_and_targets(cfg: Config, encoder, index) -> tuple[np.ndarray, np.ndarray]:
    """Sketch embeddings (4 cuts of ``cfg.queries`` sketches) and their photos' rows in ``index``."""
    from retrieval.data.procedural import generate_sketch
    from retrieval.data.procedural.dataset import photo_id_of

    rng = np.random.default_rng(cfg.seed)
    row_of = {pid: i for i, pid in enumerate(index.ids)}
    rasters, rows = [], []
    for photo in rng.choice(cfg.real_photos, cfg.queries, replace=False):
        sketch = generate_sketch(cfg.seed, int(photo), 0)
        for fraction in (0.25, 0.5, 0.75, 1.0):
            rasters.append(encoder.render(sketch.first_fraction(fraction)))
            rows.append(row_of[photo_id_of(cfg.seed, int(photo))])
    return encoder.embed_sketches(np.stack(rasters)), np.array(rows)


def measure(vectors: np.ndarray, queries: np.ndarray, rows: np.ndarray, cfg: Config) -> dict:
    from retrieval.serving.index import PhotoIndex

    start = time.perf_counter()
    index = PhotoIndex.build(vectors, [str(i) for i in range(len(vectors))], kind="ivf")
    ivf = index._faiss
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    labels = ivf.quantizer.assign(vectors, 1).reshape(-1)
    counter = BoundedCounter(vectors, centroids, labels)
    setup_s = time.perf_counter() - start
    full_ms, bounded_ms, scanned, agree = [], [], [], 0
    for q, row in zip(queries, rows):
        t = time.perf_counter()
        scores = vectors @ q
        s = scores[row]
        full = int((scores >= s).sum())
        full_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        bounded, n_scanned = counter.count(q, float(s))
        bounded_ms.append((time.perf_counter() - t) * 1e3)
        scanned.append(n_scanned / len(vectors))
        agree += bounded == full
    batch_ms = []
    for start_q in range(0, len(queries) - cfg.batch + 1, cfg.batch):
        block = queries[start_q : start_q + cfg.batch]
        t = time.perf_counter()
        scores = vectors @ block.T
        thresholds = scores[rows[start_q : start_q + cfg.batch], np.arange(cfg.batch)]
        _ = (scores >= thresholds[None, :]).sum(axis=0)
        batch_ms.append((time.perf_counter() - t) * 1e3 / cfg.batch)
    return {
        "nlist": int(ivf.nlist),
        "setup_s": setup_s,
        "full": percentiles(full_ms),
        "bounded": percentiles(bounded_ms),
        "scanned": percentiles(100 * np.asarray(scanned)),
        "batched": percentiles(batch_ms),
        "agree": agree,
        "n": len(queries),
    }


def main(argv: list[str] | None = None) -> None:
    import torch

    from retrieval.serving.gallery import open_gallery

    cfg = parse_config(Config, argv, __doc__)
    machine = machine_info()
    torch.set_num_threads(1)
    import faiss

    faiss.omp_set_num_threads(1)
    encoder = load_encoder(cfg.model)
    index = open_gallery(encoder, f"procedural:photos={cfg.real_photos}", cfg.cache_dir, progress=True).index
    queries, rows = queries_and_targets(cfg, encoder, index)
    rng = np.random.default_rng(cfg.seed)
    results, how = {}, ""
    for n in parse_sizes(cfg.sizes):
        extra, how = synthesise(index.vectors, max(0, n - len(index)), rng) if n > len(index) else (None, "none")
        vectors = index.vectors[:n] if extra is None else np.concatenate([index.vectors, extra])
        results[n] = measure(vectors, queries, rows, cfg)
        print(f"{size_label(n)}: {results[n]}", flush=True)
    lines = header_lines(
        "Exact target rank: full scan vs IVF centroid bounds vs batched scans", command_line(__file__, argv), machine
    )
    lines += [
        f"- gallery: {len(index):,} real procedural photo embeddings of {cfg.model.name} + synthetic: {how}",
        f"- queries: {len(queries)} sketch embeddings ({cfg.queries} sketches cut at 25/50/75/100 %), target = own "
        "photo; one core (torch and faiss 1 thread); times per query",
        "",
        "| photos | IVF lists | setup s (IVF + bounds) | full scan p50 / p95 ms | bounded p50 / p95 ms | "
        f"photos scanned p50 / p95 % | batched scan ({cfg.batch} per pass) p50 ms per query | counts equal |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {n:,} | {r['nlist']} | {r['setup_s']:.1f} | {r['full']['p50']:.2f} / {r['full']['p95']:.2f} | "
            f"{r['bounded']['p50']:.2f} / {r['bounded']['p95']:.2f} | {r['scanned']['p50']:.1f} / "
            f"{r['scanned']['p95']:.1f} | {r['batched']['p50']:.2f} | {r['agree']} / {r['n']} |"
            for n, r in results.items()
        ),
    ]
    write_results(cfg.name, lines, [], {"results": {str(n): r for n, r in results.items()}}, machine)


if __name__ == "__main__":
    main()
