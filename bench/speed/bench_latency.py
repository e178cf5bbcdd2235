"""Per-stroke server latency (validate -> render -> encode -> search -> response) at 1k..1M photos.

For each gallery size, replays realistic partial sketches (every stroke prefix of procedural
sketches of gallery photos, as stroke-JSON text, the way the app receives them) through
``Retriever.rank(payload, k, target_id)`` and serialises the response like the app's ``rank``
endpoint, recording each stage. It also measures the photo index alone: k-NN search p50/p95,
recall@10 against exact search (ties within 1e-6 count as hits), the exact target-rank cost, and
the index build time and memory (RSS growth; peak via VmHWM).

Galleries: up to ``--render-max`` photos (default 10k) are real procedural photos embedded by the
model (cached in .cache/bench by model hash). Larger galleries keep those real embeddings and add
synthetic ones WITHOUT rendering: copies of random real embeddings perturbed by Gaussian noise whose
size gives each copy the same cosine to its source as a real photo has to its nearest real
neighbour (median), then renormalised. So the synthetic photos sit in the real clusters. If the
real embeddings have collapsed (an untrained model: every photo at cosine ~1 to every other), the
synthetic part is random unit vectors with cluster structure instead (bench_index's Gaussian
mixture) and recall queries are jittered gallery points; the report says which was used.

    .venv/bin/python -m bench.speed.bench_latency --sizes 1k,10k --strokes 100     # quick (~2 min + gallery build)
    .venv/bin/python -m bench.speed.bench_latency                                   # 1k,10k,100k,1M (~2.5 min + gallery build)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.lib.common import (
    BENCH_CACHE,
    DEFAULT_MODEL,
    command_line,
    load_encoder,
    machine_info,
    measure_memory,
    parse_sizes,
    percentiles,
    size_label,
)
from bench.lib.synthetic import exact_top_k, recall_at_k, synthesise
from bench.speed.latency_report import STAGES, report
from retrieval.cli import parse_config
from retrieval.runtime import set_threads


@dataclass
class Config:
    """Benchmark settings."""

    sizes: str = "1k,10k,100k,1M"  # gallery sizes (k = 1,000; M = 1,000,000)
    strokes: int = 400  # timed per-stroke calls per gallery size
    warmup: int = 20  # untimed calls first (allocator, oneDNN kernel choice)
    queries: int = 500  # sketch embeddings used for index search latency and recall@10
    k: int = 20  # photos returned per stroke
    threads: int = 1  # torch threads (bench/results/encoder.md: 1 beats 2 on a loaded 2-core box)
    render_max: int = 10_000  # galleries up to this size are rendered photos; larger ones add synthetic embeddings
    sketch_photos: int = 60  # photos whose sketches (all stroke prefixes) make the stroke pool
    max_s_per_size: float = 240.0  # time cap for the timed per-stroke loop of one size
    compare_kinds: str = (
        "hnsw,flat"  # other index kinds measured on the same vectors and queries above the exact-search threshold
    )
    model: Path = DEFAULT_MODEL
    cache_dir: Path = BENCH_CACHE
    seed: int = 0
    name: str = "latency"


# --- galleries -----------------------------------------------------------------------------------
def real_gallery(encoder, n: int, cache_dir: Path) -> tuple[np.ndarray, list[str]]:
    """Embeddings and ids of the first ``n`` procedural photos (rendered, embedded, cached)."""
    from retrieval.serving.gallery import open_gallery

    gallery = open_gallery(encoder, f"procedural:photos={n}", cache_dir, progress=True)
    index = gallery.index
    return np.array(index.vectors), index.ids


# --- sketches ------------------------------------------------------------------------------------
def stroke_pool(n_photos: int, cfg: Config, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(stroke-JSON text, photo id) for every stroke prefix of sketches of random gallery photos."""
    from retrieval.data.formats.stroke_json import to_stroke_json
    from retrieval.data.procedural import generate_sketch
    from retrieval.data.procedural.dataset import photo_id_of

    pool = []
    for index in rng.choice(n_photos, min(cfg.sketch_photos, n_photos), replace=False):
        sketch = generate_sketch(cfg.seed, int(index), int(rng.integers(0, 3)))
        for k in range(1, sketch.num_strokes + 1):
            pool.append((json.dumps(to_stroke_json(sketch.first_strokes(k))), photo_id_of(cfg.seed, int(index))))
    rng.shuffle(pool)
    return pool


# --- measurements --------------------------------------------------------------------------------
def per_stroke(retriever, pool: list[tuple[str, str]], cfg: Config) -> dict[str, np.ndarray]:
    """Stage times (ms) of ``cfg.strokes`` per-stroke calls, plus ``total`` = wall time of all stages."""
    stages: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}
    deadline = time.monotonic() + cfg.max_s_per_size
    for i in range(cfg.warmup + cfg.strokes):
        payload, target = pool[i % len(pool)]
        start = time.perf_counter()
        result = retriever.rank(payload, k=cfg.k, target_id=target)
        t = time.perf_counter()
        # What the app's rank endpoint does with the result (gradio then JSON-encodes it).
        json.dumps(
            {
                "ids": list(result.ids),
                "scores": [float(s) for s in result.scores],
                "target_rank": result.target_rank,
                "timings_ms": dict(result.timings_ms),
                "gallery_size": len(retriever),
            }
        )
        end = time.perf_counter()
        if i < cfg.warmup:
            continue
        for stage in STAGES[:-1]:
            stages[stage].append(result.timings_ms[stage])
        stages["response"].append((end - t) * 1e3)
        stages["total"].append((end - start) * 1e3)
        if time.monotonic() > deadline:
            print(f"  per-stroke loop stopped at the {cfg.max_s_per_size:.0f} s cap after {i + 1 - cfg.warmup} calls")
            break
    return {k: np.asarray(v) for k, v in stages.items()}


def index_metrics(index, queries: np.ndarray, targets: list[str], k: int = 10) -> dict[str, float]:
    """k-NN search latency, recall@10 vs exact (tie-aware), exact target-rank latency."""
    vectors = index.vectors
    search_ms, found = [], []
    for q in queries:
        t = time.perf_counter()
        _, ids = index.search(q[None], k)
        search_ms.append((time.perf_counter() - t) * 1e3)
        found.append(ids[0])
    truth_rows, _ = exact_top_k(queries, vectors, k)
    row_of = {pid: i for i, pid in enumerate(index.ids)}
    recall = recall_at_k(queries, vectors, [[row_of[pid] for pid in got] for got in found], truth_rows)
    rank_ms = []
    for q, target in zip(queries[:100], targets[:100]):
        t = time.perf_counter()
        index.rank_of(q, target)
        rank_ms.append((time.perf_counter() - t) * 1e3)
    return {"search": percentiles(search_ms), "recall@10": recall, "target_rank": percentiles(rank_ms)}


def timed_build(vectors: np.ndarray, ids: list[str], kind: str):
    """``PhotoIndex.build`` on all (<= 2) cores: the index, seconds and memory growth."""
    from retrieval.serving.index import PhotoIndex

    set_threads()
    with measure_memory() as memory:
        t = time.perf_counter()
        index = PhotoIndex.build(vectors, ids, kind=kind)
        build_s = time.perf_counter() - t
    return index, build_s, memory


def bench_size(n: int, encoder, base: tuple[np.ndarray, list[str]], pool, cfg: Config, rng) -> dict:

    from retrieval.serving.retriever import Retriever

    vectors, ids, n_real, synthetic = gallery_of(n, base, rng)
    index, build_s, memory = timed_build(vectors, ids, "auto")
    del vectors
    print(
        f"  {size_label(n)}: {index.kind} index built in {build_s:.1f} s, RSS +{memory['rss_delta_mb']:.0f} MB",
        flush=True,
    )
    set_threads(cfg.threads)  # one OpenMP pool: timed_build used all cores, serving uses cfg.threads
    retriever = Retriever(encoder, index)
    usable = [(p, pid) for p, pid in pool if pid in index]
    strokes = per_stroke(retriever, usable, cfg)
    qs = [usable[i % len(usable)] for i in range(cfg.queries)]
    queries = encoder.embed_sketches(np.stack([retriever.render(retriever.validate(p)) for p, _ in qs]))
    if synthetic.startswith("clustered"):  # collapsed sketch embeddings too: query near random gallery points
        rows = rng.integers(0, n, len(queries))
        queries = index.vectors[rows] + rng.standard_normal(queries.shape).astype(np.float32) * (
            0.3 / np.sqrt(index.dim)
        )
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    metrics = index_metrics(index, queries, [pid for _, pid in qs])
    row = {
        "n": n,
        "kind": index.kind,
        "n_real": n_real,
        "synthetic": synthetic,
        "build_s": build_s,
        **memory,
        "stages": {k: percentiles(v) for k, v in strokes.items()},
        **metrics,
        "alternatives": other_kinds(index, queries, [pid for _, pid in qs], cfg),
    }
    st = row["stages"]
    print(
        f"  {size_label(n)}: per stroke p50 {st['total']['p50']:.2f} ms p95 {st['total']['p95']:.2f} ms; "
        f"search p50 {metrics['search']['p50']:.3f} ms recall@10 {metrics['recall@10']:.3f}; "
        f"target rank p50 {metrics['target_rank']['p50']:.2f} ms",
        flush=True,
    )
    return row


def gallery_of(n: int, base: tuple[np.ndarray, list[str]], rng) -> tuple[np.ndarray, list[str], int, str]:
    """``n`` gallery vectors: the real ones first, then synthesised ones: ``(vectors, ids, n_real, synthetic)``."""
    base_vecs, base_ids = base
    n_real = min(n, len(base_ids))
    synthetic = ""
    vectors, ids = base_vecs[:n_real], list(base_ids[:n_real])
    if n > n_real:
        extra, synthetic = synthesise(base_vecs, n - n_real, rng)
        vectors = np.concatenate([vectors, extra])
        ids += [f"synth-{i:07d}" for i in range(n - n_real)]
        del extra
    return vectors, ids, n_real, synthetic


def other_kinds(index, queries: np.ndarray, target_ids: list[str], cfg: Config) -> list[dict]:
    """Build and measure the ``--compare-kinds`` indexes over the same vectors (approximate sizes only)."""
    from retrieval.serving.index import APPROX_THRESHOLD

    alternatives = []
    n = len(index)
    for kind in [k for k in cfg.compare_kinds.split(",") if k and k != index.kind] if n > APPROX_THRESHOLD else []:
        alt, alt_build_s, alt_memory = timed_build(index.vectors, index.ids, kind)
        set_threads(cfg.threads)
        alternatives.append(
            {"kind": kind, "build_s": alt_build_s, **alt_memory, **index_metrics(alt, queries, target_ids)}
        )
        print(
            f"  {size_label(n)}: {kind} for comparison: build {alt_build_s:.1f} s, search p50 "
            f"{alternatives[-1]['search']['p50']:.3f} ms, recall@10 {alternatives[-1]['recall@10']:.3f}",
            flush=True,
        )
        del alt
    return alternatives


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    set_threads(cfg.threads)
    machine = machine_info()
    rng = np.random.default_rng(cfg.seed)
    sizes = parse_sizes(cfg.sizes)
    encoder = load_encoder(cfg.model, channels_last=True)  # as app.py serves it
    base = real_gallery(encoder, min(max(sizes), cfg.render_max), cfg.cache_dir)
    pool = stroke_pool(min(min(sizes), len(base[1])), cfg, rng)  # photos present in every gallery size
    rows = []
    for n in sizes:
        print(f"gallery {size_label(n)}", flush=True)
        rows.append(bench_size(n, encoder, base, pool, cfg, rng))
    report(rows, cfg, machine, command_line(__file__, argv))


def parse_args(argv: list[str] | None = None) -> Config:
    return parse_config(Config, argv, __doc__)


if __name__ == "__main__":
    main()
