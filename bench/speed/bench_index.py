"""Benchmark photo-index kinds on clustered synthetic unit vectors.

Measures build time, memory, p50/p95 single-query latency and recall@10 vs exact search for
exact inner product (IndexFlatIP), HNSW at several (M, efConstruction, efSearch) and IVF-Flat at
several (nlist, nprobe), at 10k / 50k / 100k (and 1M with ``--with-1m``) gallery sizes.

Vectors come from a Gaussian mixture (cluster centres on the sphere, points jittered around them,
renormalised) because real embeddings are clustered, which is harder for approximate indexes than
uniform noise. Queries are jittered copies of random gallery points, like a sketch near its photo.

    .venv/bin/python -m bench.speed.bench_index                 # 10k, 50k, 100k, writes bench/results/index.md
    .venv/bin/python -m bench.speed.bench_index --with-1m       # adds 1M (minutes; ~2 GB RAM)
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from bench.lib.common import (
    RESULTS,
    Target,
    command_line,
    header_lines,
    machine_info,
    markdown_table,
    percentiles,
    target_table,
    write_results,
)
from bench.lib.synthetic import clustered, recall_at_k, unit
from retrieval.cli import parse_config
from retrieval.runtime import set_threads
from retrieval.serving.index import APPROX_THRESHOLD, IndexParams, PhotoIndex


@dataclass
class Config:
    """Benchmark settings."""

    dim: int = 128
    """embedding size (the encoder's embed_dim)"""
    sizes: tuple[int, ...] = (10_000, 50_000, 100_000)
    """gallery sizes"""
    with_1m: bool = False
    """also benchmark 1,000,000 photos (minutes; ~2 GB RAM)"""
    queries: int = 500
    """timed single queries per configuration"""
    clusters: int = 256
    """mixture components"""
    spread: float = 1.0
    """within-cluster noise norm relative to the unit centre"""
    threads: int = 2
    """faiss OpenMP threads"""
    out: Path = RESULTS / "index.md"
    """results file"""
    seed: int = 0
    """seed of the vectors and queries"""

    @property
    def gallery_sizes(self) -> tuple[int, ...]:
        return self.sizes + ((1_000_000,) if self.with_1m else ())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed_queries(index: faiss.Index, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    times, found = [], []
    for q in queries:
        t0 = time.perf_counter()
        _, rows = index.search(q[None], k)
        times.append((time.perf_counter() - t0) * 1e3)
        found.append(rows[0])
    return np.array(times), np.array(found)


def bench_size(n: int, cfg: Config, rng: np.random.Generator) -> list[dict]:
    base = clustered(n, cfg.dim, rng, cfg.clusters, cfg.spread)
    picks = rng.integers(0, n, cfg.queries)
    queries = unit(
        base[picks] + rng.standard_normal((cfg.queries, cfg.dim)).astype(np.float32) * 0.3 / np.sqrt(cfg.dim)
    )
    rows = []

    def record(name: str, index: faiss.Index, build_s: float, mem_mb: float, truth: np.ndarray | None) -> np.ndarray:
        times, found = timed_queries(index, queries)
        latency = percentiles(times, (50, 95))
        rows.append(
            {
                "n": n,
                "index": name,
                "build_s": build_s,
                "mem_mb": mem_mb,
                "p50_ms": latency["p50"],
                "p95_ms": latency["p95"],
                "recall@10": 1.0 if truth is None else recall_at_k(queries, base, found, truth),
            }
        )
        print(rows[-1], flush=True)
        return found

    vec_mb = base.nbytes / 2**20
    t0 = time.perf_counter()
    flat = PhotoIndex.build(base, [str(i) for i in range(n)], kind="flat")._faiss
    truth = record("flat (exact)", flat, time.perf_counter() - t0, vec_mb, None)
    del flat

    built_graphs: dict[tuple[int, int], tuple[faiss.Index, float, float]] = {}
    for m, ef_c in ((16, 64), (32, 64)) if n < 1_000_000 else ((32, 64),):  # 1M graphs take minutes each
        before = peak_rss_mb()
        t0 = time.perf_counter()
        idx = faiss.IndexHNSWFlat(cfg.dim, m, faiss.METRIC_INNER_PRODUCT)
        idx.hnsw.efConstruction = ef_c
        idx.add(base)
        built_graphs[(m, ef_c)] = (
            idx,
            time.perf_counter() - t0,
            max(peak_rss_mb() - before, vec_mb + n * m * 8 / 2**20),
        )
        for ef_s in (16, 32, 64, 128):
            idx.hnsw.efSearch = ef_s
            record(f"HNSW M={m} efC={ef_c} efS={ef_s}", idx, *built_graphs[(m, ef_c)][1:], truth)
        del idx, built_graphs[(m, ef_c)]

    t0 = time.perf_counter()
    ivf = PhotoIndex.build(base, [str(i) for i in range(n)], kind="ivf")._faiss  # the library's cells and training
    ivf_build = time.perf_counter() - t0
    for nprobe in (4, 16, 32, 64):
        ivf.nprobe = nprobe
        record(f"IVF-Flat nlist={ivf.nlist} nprobe={nprobe}", ivf, ivf_build, vec_mb, truth)
    return rows


def write_report(rows: list[dict], cfg: Config, elapsed_s: float, machine: dict, command: str) -> None:
    defaults = IndexParams()
    lines = [
        *header_lines("Photo index benchmark", command, machine),
        f"- faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads; run took {elapsed_s / 60:.1f} min",
        f"- data: D={cfg.dim}, Gaussian mixture of {cfg.clusters} clusters (spread {cfg.spread}), unit vectors; "
        f"{cfg.queries} single queries (jittered gallery points), k=10; seed {cfg.seed}",
        f"- library defaults (retrieval/serving/index.py): exact up to {APPROX_THRESHOLD:,} photos, IVF-Flat above (nlist "
        f"4*sqrt(N), nprobe {defaults.nprobe}); HNSW on request (M={defaults.M}, efConstruction="
        f"{defaults.ef_construction}, efSearch={defaults.ef_search})",
        "- memory: vectors for flat/IVF; HNSW = max(measured RSS growth, vectors + 2*M*4 B links)",
        "",
        *markdown_table(
            ("n", "index", "build s", "memory MB", "p50 ms", "p95 ms", "recall@10"),
            [
                (f"{r['n']:,}", r["index"], f"{r['build_s']:.2f}", f"{r['mem_mb']:.0f}", f"{r['p50_ms']:.3f}")
                + (f"{r['p95_ms']:.3f}", f"{r['recall@10']:.3f}")
                for r in rows
            ],
            "rlrrrrr",
        ),
    ]
    lines += [
        "",
        "Reading: exact search grows linearly with the gallery and stays under ~1 ms p50 up to the exact-search",
        "threshold, small next to the encoder forward, with no build step. Above it both approximate kinds keep",
        "queries near 0.1 ms on this clustered data; compare recall@10 and build time per row. The library uses",
        "IVF-Flat there because on near-duplicate galleries (1M photos, results/latency_1m.md) HNSW's pruned graph",
        "loses recall while IVF-Flat scores every photo in the probed cells exactly; IVF re-trains its cells when the",
        "gallery grows 4x past its training size. Timings vary with load on the shared 2-core machine.",
    ]
    default = f"nprobe={defaults.nprobe}"  # the library's IVF-Flat (nlist 4*sqrt(N)), used above the exact threshold
    targets = [
        Target(f"IVF-Flat default ({default}) recall@10 at {r['n']:,} photos", r["recall@10"], 0.95, ">=", "")
        for r in rows
        if r["index"].startswith("IVF-Flat") and r["index"].endswith(default)
    ]
    at = lines.index("", 2)  # after the header's bullet list (index 1 is the blank line under the title)
    lines[at:at] = ["", *target_table(targets)] if targets else []
    write_results(cfg.out.stem, lines, targets, {"rows": rows}, machine, cfg.out.parent)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(Config, argv, __doc__)
    set_threads(cfg.threads, torch_threads=False)
    machine = machine_info()  # load average at start
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    rows = [row for n in cfg.gallery_sizes for row in bench_size(n, cfg, rng)]
    write_report(rows, cfg, time.perf_counter() - t0, machine, command_line(__file__, argv))


if __name__ == "__main__":
    main()
