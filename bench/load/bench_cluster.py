"""Closed-loop drawing sessions against the single process and the Ray Serve app (1 and 2 replicas).

Each simulated session draws its own procedural sketch of a distinct photo, at human times: it
sends the sketch so far when a stroke ends, waits for the answer (closed loop), then waits the
next pen-up gap plus stroke duration (Quick-Draw-calibrated, as bench_concurrency.py) before the
next stroke. Every stroke asks for the exact rank of the session's own photo.

Servers, each started fresh in its own process group and measured at 10, 25 and 50 sessions:

* ``single``: ``app.py`` with default flags (Gradio queue + RankBatcher), ``POST /gradio_api/call/rank``.
* ``ray-1`` / ``ray-2``: ``python -m retrieval.serving.serve_ray --replicas N --shards 2``, ``POST /rank``.

Warm-up strokes run before each server's measured loads and are reported apart, as are its
start-up time, memory and idle CPU; the app's thumbnail cache is filled first. Every answer is
checked against the single-process library answer for the same sketch (ids, scores from the
session's own embedding, target rank). CPU is reported per load for the server (its whole
process tree) and for the load generator, which shares the 2 cores.

    .venv/bin/python -m bench.load.bench_cluster                          # ~5 min on 2 cores once the gallery is cached
    .venv/bin/python -m bench.load.bench_cluster --users 10 --servers single,ray-1 --gallery-size 1000
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench.lib.common import (
    BENCH_CACHE,
    DEFAULT_MODEL,
    ROOT,
    command_line,
    cpu_seconds,
    load_encoder,
    machine_info,
    percentiles,
    time_calls,
)
from bench.lib.drawing_sessions import (
    Session,
    SessionPlan,
    check_answer,
    expected_rankings,
    make_sessions,
    prewarm_thumbnails,
)
from bench.load.cluster_report import report, summary
from bench.load.cluster_servers import Sender, idle_cores, server, tree_usage
from harness.api_client import ApiError
from retrieval.cli import parse_config
from retrieval.runtime import set_threads


@dataclass
class Config:
    """Benchmark settings."""

    users: tuple[int, ...] = (10, 25, 50)
    """simultaneous sessions per measured load (each server is measured at every count)"""
    servers: str = "single,ray-1,ray-2"
    """which servers to measure: single (app.py), ray-N (Ray Serve, N encoder replicas)"""
    shards: int = 2
    """index shards of the Ray app"""
    strokes: int = 6
    """strokes per session"""
    gallery_size: int = 10_000
    """procedural photos in the gallery"""
    k: int = 10
    """photos asked for per stroke"""
    warmup_sessions: int = 10
    """sessions x 2 strokes sent to each server before its measured loads (reported apart)"""
    max_s: float = 60.0
    """cap on one measured load"""
    pace: float = 1.0
    """drawing speed (human times divided by this)"""
    model: Path = DEFAULT_MODEL
    cache_dir: Path = BENCH_CACHE
    seed: int = 0
    base_commit: str = ""
    """if set, time the in-process Retriever.rank of this commit against this tree's, alternating (laptop path)"""
    name: str = "cluster"


# --- load ----------------------------------------------------------------------------------------
async def closed_loop(sessions, url: str, send: Sender, cfg: Config, index) -> list[dict]:
    """Every session draws its strokes; each stroke waits for the previous answer plus think time."""
    import httpx

    rows: list[dict] = []
    t0 = time.perf_counter() + 0.2

    async def one(s) -> None:
        async with httpx.AsyncClient(trust_env=False) as client:
            await asyncio.sleep(max(0.0, t0 + s.send_at_s[0] - time.perf_counter()))
            for i, payload in enumerate(s.payloads):
                if i:
                    await asyncio.sleep(s.send_at_s[i] - s.send_at_s[i - 1])  # pen-up gap + next stroke
                start = time.perf_counter()
                row = {"user": s.user, "stroke": i, "sent_s": start - t0}
                try:
                    answer = await send(client, url, payload, cfg.k, s.photo_id, timeout_s=cfg.max_s)
                    row.update(
                        latency_ms=(time.perf_counter() - start) * 1e3,
                        batch_size=int(answer["batch_size"]),
                        server_ms=float(answer["timings_ms"]["total"]),
                        check=check_answer(s, i, answer, index, 1e-4),
                        rank_ok=answer["target_rank"] == s.expected_ranks[i],
                    )
                except (ApiError, httpx.HTTPError, KeyError, ValueError) as exc:
                    row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                rows.append(row)

    try:
        await asyncio.wait_for(asyncio.gather(*(one(s) for s in sessions)), timeout=cfg.max_s)
    except TimeoutError:
        pass
    return rows


def measure(sessions, url: str, send: Sender, cfg: Config, index, pid: int) -> dict:
    """One load: rows, wall time, the load generator's own CPU seconds and the server's (all its processes)."""
    cpu, server_cpu, start = cpu_seconds(), tree_usage(pid)[1], time.perf_counter()
    rows = asyncio.run(closed_loop(sessions, url, send, cfg, index))
    return {
        "rows": rows,
        "wall_s": time.perf_counter() - start,
        "client_cpu_s": cpu_seconds() - cpu,
        "server_cpu_s": tree_usage(pid)[1] - server_cpu,
        "expected": sum(len(s.payloads) for s in sessions),
        "load_avg": os.getloadavg()[0],
    }


def encoder_batch_costs(cfg: Config, sizes=(1, 2, 4, 8), reps: int = 30) -> dict[int, dict]:
    """Forward p50/p95 (ms) of the served encoder (channels_last, 1 thread) at each batch size: the
    capacity plan's cost per stroke (docs/scaling.md)."""

    from retrieval.data.procedural import generate_sketch

    set_threads(1)
    encoder = load_encoder(cfg.model, channels_last=True)
    rasters = np.stack([encoder.render(generate_sketch(cfg.seed, i, 0).first_fraction(0.5)) for i in range(max(sizes))])
    return {b: percentiles(time_calls(lambda b=b: encoder.embed_sketches(rasters[:b]), reps)) for b in sizes}


def laptop_ratio(cfg: Config, sessions, reps: int = 3) -> dict:
    """Per-stroke ``Retriever.rank`` of ``cfg.base_commit``'s retriever.py against this tree's, on the
    same encoder, index and strokes, alternating call by call: p50s, their ratio, identical answers."""
    import importlib.util
    import tempfile

    from retrieval.serving.gallery import open_gallery
    from retrieval.serving.retriever import Retriever

    source = subprocess.run(
        ["git", "show", f"{cfg.base_commit}:retrieval/serving/retriever.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "retriever_base.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("retriever_base", path)
        base_module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules["retriever_base"] = base_module  # dataclasses look their module up
        spec.loader.exec_module(base_module)  # type: ignore[union-attr]
    set_threads(1)
    encoder = load_encoder(cfg.model, channels_last=True)
    index = open_gallery(encoder, f"procedural:photos={cfg.gallery_size}", cfg.cache_dir).index
    new, base = Retriever(encoder, index), base_module.Retriever(encoder, index)
    times: dict[str, list[float]] = {"base": [], "new": []}
    same = total = 0
    for _ in range(reps):
        for s in sessions:
            for payload in s.payloads:
                answers = {}
                for name, retriever in (("base", base), ("new", new)) if total % 2 else (("new", new), ("base", base)):
                    start = time.perf_counter()
                    answers[name] = retriever.rank(payload, cfg.k, s.photo_id)
                    times[name].append((time.perf_counter() - start) * 1e3)
                a, b = answers["base"], answers["new"]
                same += (a.ids, a.scores, a.target_rank) == (b.ids, b.scores, b.target_rank)
                total += 1
    p50 = {name: percentiles(t)["p50"] for name, t in times.items()}
    return {
        "base_p50_ms": p50["base"],
        "new_p50_ms": p50["new"],
        "ratio": p50["new"] / p50["base"],
        "identical": same,
        "strokes": total,
        "base_commit": cfg.base_commit,
    }


def scripted_sessions(cfg: Config) -> tuple[list[Session], list[Session], object]:
    """The measured sessions, the warm-up sessions (2 strokes each) and the library's index, every
    prefix with its expected answer and the exact rank of the session's own photo."""
    plan = SessionPlan(
        users=max(cfg.users),
        strokes=cfg.strokes,
        gallery_size=cfg.gallery_size,
        k=cfg.k,
        pace=cfg.pace,
        model=cfg.model,
        cache_dir=cfg.cache_dir,
        seed=cfg.seed,
    )
    sessions = make_sessions(plan, np.random.default_rng(cfg.seed))
    index = expected_rankings(sessions, plan)
    warm = make_sessions(replace(plan, users=cfg.warmup_sessions, strokes=2), np.random.default_rng(cfg.seed + 1))
    expected_rankings(warm, plan)
    for s in sessions + warm:
        s.expected_ranks = index.ranks_of(s.embeddings, [s.photo_id] * len(s.payloads)).tolist()
    if "single" in cfg.servers:  # the app's thumbnail thread must not run during the loads
        prewarm_thumbnails(plan, max_s=300.0)
    return sessions, warm, index


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(Config, argv, __doc__)
    machine = machine_info()
    sessions, warm, index = scripted_sessions(cfg)
    costs = encoder_batch_costs(cfg)
    laptop = laptop_ratio(cfg, sessions) if cfg.base_commit else None
    results = {}
    for name in [n.strip() for n in cfg.servers.split(",") if n.strip()]:
        with server(name, cfg) as (url, send, startup_s, pid):
            print(f"{name} ready at {url} in {startup_s:.1f} s; load average {os.getloadavg()[0]:.2f}", flush=True)
            results[name] = {
                "startup_s": startup_s,
                "rss_mb": tree_usage(pid)[0],
                "idle_cores": idle_cores(pid),
                "warmup": measure(warm, url, send, cfg, index, pid),
                "runs": {},
            }
            for users in cfg.users:
                results[name]["runs"][users] = measure(sessions[:users], url, send, cfg, index, pid)
                print(
                    f"  {users} sessions: p95 {summary(results[name]['runs'][users])['latency']['p95']:.0f} ms",
                    flush=True,
                )
    report(results, costs, laptop, cfg, machine, command_line(__file__, argv), sum(len(s.payloads) for s in sessions))


if __name__ == "__main__":
    main()
