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

    .venv/bin/python bench/bench_cluster.py                          # ~5 min on 2 cores once the gallery is cached
    .venv/bin/python bench/bench_cluster.py --users 10 --servers single,ray-1 --gallery-size 1000
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import bench_concurrency as concurrency  # noqa: E402
import numpy as np
from common import (  # noqa: E402
    BENCH_CACHE,
    DEFAULT_MODEL,
    ROOT,
    command_line,
    cpu_seconds,
    header_lines,
    load_encoder,
    machine_info,
    model_label,
    percentiles,
    save_plot,
    time_calls,
    use_agg,
    versions,
    write_results,
)

from retrieval.cli import parse_config  # noqa: E402
from retrieval.serving.serve_client import rank_request  # noqa: E402
from retrieval.ui.api_client import LOCALHOST, ApiError, call_rank_async, free_port, running_app, stop_process  # noqa: E402

Sender = Callable[..., Awaitable[dict]]


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


# --- servers -----------------------------------------------------------------------------------
@contextmanager
def serve_cluster(replicas: int, shards: int, cfg: Config) -> Iterator[tuple[str, int]]:
    """``python -m retrieval.serving.serve_ray`` in its own process group; yields (base URL, pid) once deployed."""
    port = free_port()
    log = cfg.cache_dir / f"serve-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "retrieval.serving.serve_ray", "--replicas", str(replicas), "--shards", str(shards),
           "--gallery-size", str(cfg.gallery_size), "--cache-dir", str(cfg.cache_dir), "--model", str(cfg.model),
           "--port", str(port)]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "NO_PROXY": LOCALHOST, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while "EarlySketch on Ray Serve" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve_ray did not come up (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://{LOCALHOST}:{port}", proc.pid
    finally:
        proc.terminate()  # SIGTERM: serve.shutdown() + ray.shutdown() in serve_ray.main
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            stop_process(proc)
        with contextlib.suppress(ProcessLookupError):  # any Ray agent left in the group we started
            os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def server(name: str, cfg: Config) -> Iterator[tuple[str, Sender, float, int]]:
    """(base URL, request sender, start-up seconds, pid of its root process) of the server ``name``."""
    start = time.perf_counter()
    if name == "single":
        args = ["--gallery-size", str(cfg.gallery_size), "--cache-dir", str(cfg.cache_dir), "--model", str(cfg.model)]
        with running_app(args) as app:
            yield app.url, call_rank_async, time.perf_counter() - start, app.proc.pid
        return
    replicas = int(re.fullmatch(r"ray-(\d+)", name).group(1))  # type: ignore[union-attr]
    with serve_cluster(replicas, cfg.shards, cfg) as (url, pid):
        yield url, call_serve_async, time.perf_counter() - start, pid


def idle_cores(pid: int, seconds: float = 5.0) -> float:
    """CPU the server burns with no request (cores): Ray's daemons poll, the app warms thumbnails."""
    before = tree_usage(pid)[1]
    time.sleep(seconds)
    return (tree_usage(pid)[1] - before) / seconds


def tree_usage(root: int) -> tuple[float, float]:
    """(resident MiB, CPU seconds so far) of ``root`` and all its descendants: the app, or the Ray
    driver with its daemons and every replica (Ray workers run in their own sessions, so a process
    group would miss them)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                stats[int(entry.name)] = fields
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    todo, rss_pages, ticks = [root], 0, 0
    while todo:
        pid = todo.pop()
        if pid in stats:
            rss_pages += int(stats[pid][21])
            ticks += int(stats[pid][11]) + int(stats[pid][12])
        todo += children.get(pid, [])
    return rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**20, ticks / os.sysconf("SC_CLK_TCK")


async def call_serve_async(client, url: str, sketch: str, k: int, target_id: str | None, timeout_s: float) -> dict:
    response = await client.post(f"{url}/rank", json=rank_request(sketch, k, target_id), timeout=timeout_s)
    if response.status_code != 200:
        raise ApiError(f"HTTP {response.status_code}: {response.text[:300]}")
    return response.json()


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
                    row.update(latency_ms=(time.perf_counter() - start) * 1e3, batch_size=int(answer["batch_size"]),
                               server_ms=float(answer["timings_ms"]["total"]),
                               check=concurrency.check_answer(s, i, answer, index, 1e-4),
                               rank_ok=answer["target_rank"] == s.expected_ranks[i])  # fmt: skip
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
    return {"rows": rows, "wall_s": time.perf_counter() - start, "client_cpu_s": cpu_seconds() - cpu,
            "server_cpu_s": tree_usage(pid)[1] - server_cpu, "expected": sum(len(s.payloads) for s in sessions),
            "load_avg": os.getloadavg()[0]}  # fmt: skip


def summary(run: dict) -> dict:
    ok = [r for r in run["rows"] if "latency_ms" in r]
    return {
        "latency": percentiles([r["latency_ms"] for r in ok]),
        "server": percentiles([r["server_ms"] for r in ok]),
        "throughput": len(ok) / max(run["wall_s"], 1e-9),
        "batches": dict(sorted(Counter(r["batch_size"] for r in ok).items())),
        "errors": len(run["rows"]) - len(ok) + run["expected"] - len(run["rows"]),
        "checks": {c: sum(r.get("check") == c for r in ok) for c in ("exact", "equivalent", "mixup")},
        "rank_ok": sum(bool(r.get("rank_ok")) for r in ok),
        "n": len(ok),
    }


def encoder_batch_costs(cfg: Config, sizes=(1, 2, 4, 8), reps: int = 30) -> dict[int, dict]:
    """Forward p50/p95 (ms) of the served encoder (channels_last, 1 thread) at each batch size: the
    capacity plan's cost per stroke (docs/scaling.md)."""
    import torch

    from retrieval.data.procedural import generate_sketch

    torch.set_num_threads(1)
    encoder = load_encoder(cfg.model, channels_last=True)
    rasters = np.stack([encoder.render(generate_sketch(cfg.seed, i, 0).first_fraction(0.5)) for i in range(max(sizes))])
    return {b: percentiles(time_calls(lambda b=b: encoder.embed_sketches(rasters[:b]), reps)) for b in sizes}


def laptop_ratio(cfg: Config, sessions, reps: int = 3) -> dict:
    """Per-stroke ``Retriever.rank`` of ``cfg.base_commit``'s retriever.py against this tree's, on the
    same encoder, index and strokes, alternating call by call: p50s, their ratio, identical answers."""
    import importlib.util
    import tempfile

    import torch

    from retrieval.serving.gallery import open_gallery
    from retrieval.serving.retriever import Retriever

    source = subprocess.run(["git", "show", f"{cfg.base_commit}:retrieval/serving/retriever.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "retriever_base.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("retriever_base", path)
        base_module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules["retriever_base"] = base_module  # dataclasses look their module up
        spec.loader.exec_module(base_module)  # type: ignore[union-attr]
    torch.set_num_threads(1)
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
    return {"base_p50_ms": p50["base"], "new_p50_ms": p50["new"], "ratio": p50["new"] / p50["base"],
            "identical": same, "strokes": total, "base_commit": cfg.base_commit}  # fmt: skip


# --- report --------------------------------------------------------------------------------------
def table(results: dict) -> list[str]:
    lines = [
        "| server | sessions | strokes | throughput strokes/s | p50 ms | p95 ms | p99 ms | server p50 / p95 ms | "
        "strokes per forward: count | answers exact / equiv. / mix-up | target rank equal | errors | "
        "server CPU ms per stroke (all / above idle) | load-gen CPU % of 2 cores | load avg after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, res in results.items():
        idle = res["idle_cores"]
        for users, run in res["runs"].items():
            st, lat = summary(run), summary(run)["latency"]
            hist = ", ".join(f"{b}: {n}" for b, n in st["batches"].items())
            c = st["checks"]
            lines.append(
                f"| {name} | {users} | {st['n']} | {st['throughput']:.1f} | {lat['p50']:.1f} | {lat['p95']:.1f} | "
                f"{lat['p99']:.1f} | {st['server']['p50']:.1f} / {st['server']['p95']:.1f} | {hist} | "
                f"{c['exact']} / {c['equivalent']} / {c['mixup']} | {st['rank_ok']} / {st['n']} | {st['errors']} | "
                f"{1e3 * run['server_cpu_s'] / max(st['n'], 1):.1f} / "
                f"{1e3 * (run['server_cpu_s'] - idle * run['wall_s']) / max(st['n'], 1):.1f} | "
                f"{100 * run['client_cpu_s'] / max(run['wall_s'], 1e-9) / (os.cpu_count() or 1):.0f} | "
                f"{run['load_avg']:.2f} |"
            )
    return lines


def report(
    results: dict, costs: dict, laptop: dict | None, cfg: Config, machine: dict, command: str, n_strokes: int
) -> None:
    lines = header_lines("Closed-loop sessions: single process vs Ray Serve", command, machine)
    ray_version = versions(("ray",)).get("ray", "not installed")
    lines += [
        f"- ray {ray_version}; model: {model_label(cfg.model)}; gallery: {cfg.gallery_size:,} procedural photos; "
        f"k={cfg.k}; every stroke asks the exact rank of the session's own photo",
        f"- load: closed loop, {cfg.strokes} strokes per session at human times x{cfg.pace:g} (answer, then pen-up "
        f"gap + next stroke); cap {cfg.max_s:.0f} s per load; {n_strokes} stroke states checked",
        f"- Ray app: {cfg.shards} index shards, encoder replicas as named, @serve.batch max 8, no batch wait",
        "- every server starts fresh in its own process group; the load generator (this process) runs on the "
        "same 2 cores (its CPU share is a column)",
        "",
        "| server | start-up s | resident MiB (all its processes) | idle CPU, cores | warm-up strokes | "
        "warm-up p50 / p95 ms |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {res['startup_s']:.1f} | {res['rss_mb']:.0f} | {res['idle_cores']:.2f} | {summary(res['warmup'])['n']} | "
            f"{summary(res['warmup'])['latency']['p50']:.1f} / {summary(res['warmup'])['latency']['p95']:.1f} |"
            for name, res in results.items()
        ),  # fmt: skip
        "",
        "Encoder forward alone (this process, channels_last, 1 torch thread, 30 calls after 3 warm-up):",
        "",
        "| strokes per forward | p50 ms | p95 ms | p50 ms per stroke |",
        "|---:|---:|---:|---:|",
        *(f"| {b} | {c['p50']:.2f} | {c['p95']:.2f} | {c['p50'] / b:.2f} |" for b, c in costs.items()),
        "",
        *(
            [
                f"Laptop path (`Retriever.rank` in process, {laptop['strokes']} strokes with a target, alternating): "
                f"commit {laptop['base_commit']} p50 {laptop['base_p50_ms']:.2f} ms, this tree {laptop['new_p50_ms']:.2f} ms, "
                f"ratio x{laptop['ratio']:.3f}; identical answers (ids, scores, rank) {laptop['identical']} / "
                f"{laptop['strokes']}.",
                "",
            ]
            if laptop
            else []
        ),  # fmt: skip
        *table(results),
        "",
        "Answers: `exact` = same ids as the single-process library; `equivalent` = same scores from the "
        "session's own embedding within 1e-4, near-tied order; target rank equal = the exact rank equals the "
        "library's for that sketch (a batched forward can move a score by float noise).",
    ]
    raw = {"encoder_batch_ms": costs, "laptop": laptop}
    raw |= {name: {"startup_s": r["startup_s"], "rss_mb": r["rss_mb"], "idle_cores": r["idle_cores"], "warmup": r["warmup"], "runs": {str(u): v for u, v in r["runs"].items()}}
           for name, r in results.items()}  # fmt: skip
    write_results(cfg.name, lines, [], {"results": raw, "config": {k: str(v) for k, v in vars(cfg).items()}}, machine)
    plot_latency(cfg, results)


def plot_latency(cfg: Config, results: dict) -> None:
    """p50 and p95 per-stroke latency against the number of concurrent sessions, one line pair per server."""
    use_agg()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, res in results.items():
        users = sorted(res["runs"])
        ax.plot(users, [summary(res["runs"][u])["latency"]["p95"] for u in users], marker="o", label=f"{name} p95")
        ax.plot(users, [summary(res["runs"][u])["latency"]["p50"] for u in users], ls="--", marker=".",
                label=f"{name} p50")  # fmt: skip
    ax.set(xlabel="concurrent sessions", ylabel="per-stroke latency ms", title="closed-loop sessions, 2 cores")
    ax.legend(fontsize=7)
    save_plot(fig, cfg.name)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(Config, argv, __doc__)
    machine = machine_info()
    base = concurrency.Config(users=max(cfg.users), strokes=cfg.strokes, gallery_size=cfg.gallery_size, k=cfg.k,
                              pace=cfg.pace, model=cfg.model, cache_dir=cfg.cache_dir, seed=cfg.seed)  # fmt: skip
    sessions = concurrency.make_sessions(base, np.random.default_rng(cfg.seed))
    index = concurrency.expected_rankings(sessions, base)
    for s in sessions:
        s.expected_ranks = index.ranks_of(s.embeddings, [s.photo_id] * len(s.payloads)).tolist()
    warm = concurrency.make_sessions(replace(base, users=cfg.warmup_sessions, strokes=2),
                                     np.random.default_rng(cfg.seed + 1))  # fmt: skip
    concurrency.expected_rankings(warm, base)
    for s in warm:
        s.expected_ranks = index.ranks_of(s.embeddings, [s.photo_id] * len(s.payloads)).tolist()
    if "single" in cfg.servers:
        concurrency.prewarm_thumbnails(base)  # the app's thumbnail thread must not run during the loads
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
                print(f"  {users} sessions: p95 {summary(results[name]['runs'][users])['latency']['p95']:.0f} ms",
                      flush=True)  # fmt: skip
    report(results, costs, laptop, cfg, machine, command_line(__file__, argv), sum(len(s.payloads) for s in sessions))


if __name__ == "__main__":
    main()
