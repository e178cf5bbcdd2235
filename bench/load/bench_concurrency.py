"""50 simultaneous scripted drawing sessions against the app's ``rank`` endpoint on 127.0.0.1.

Starts ``app.py`` in a subprocess on a free port (gallery cached in .cache/bench) and runs
``--users`` sessions at once, each drawing its own procedural sketch of a distinct photo: after
each stroke it POSTs the whole sketch so far to ``/gradio_api/call/rank`` and reads the SSE
result. Strokes are sent at human times: each stroke's own duration (the generator's, calibrated to
Quick, Draw!) plus a pen-up gap sampled like Quick Draw (lognormal, p10 155 / p50 439 / p90 1,116
ms; ``retrieval.data.procedural.timing.pen_up_gap``). A stroke is sent when its pen lifts even if the
previous answer is still pending, as the canvas does.

Checks: per-stroke latency p50/p95 (POST -> result received), zero errors, and zero cross-session
mix-ups: every answer must be the ranking the library gives for that session's own partial sketch
(same ids; or, under float noise between processes, the same scores for the returned ids within
``--score-tol`` of this sketch's own embedding).

    .venv/bin/python -m bench.load.bench_concurrency                      # 50 users x 6 strokes, 10k photos
    .venv/bin/python -m bench.load.bench_concurrency --users 10 --gallery-size 1000 --app-args "--threads 1"
"""

from __future__ import annotations

import asyncio
import shlex
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench.lib.common import BENCH_CACHE, DEFAULT_MODEL, command_line, cpu_seconds, machine_info
from bench.lib.drawing_sessions import (
    Session,
    SessionPlan,
    check_answer,
    expected_rankings,
    make_sessions,
    prewarm_thumbnails,
)
from bench.load.concurrency_report import report
from harness.api_client import ApiError, call_rank_async, running_app
from retrieval.cli import parse_config


@dataclass
class Config:
    """Benchmark settings."""

    users: int = 50  # simultaneous drawing sessions
    strokes: int = 6  # strokes per session (each sends the sketch so far)
    gallery_size: int = 10_000  # procedural photos in the app's gallery
    k: int = 10  # photos asked for per stroke
    max_s: float = 120.0  # hard cap on the whole load run
    start_spread_s: float = 2.0  # sessions start uniformly within this window
    score_tol: float = 1e-4  # cosine tolerance of the mix-up check (float noise between processes)
    app_args: str = ""  # extra app.py flags, e.g. "--threads 1 --concurrency 2"
    compare_app_args: str = "--batch 1"  # a second app measured with the same sessions ("" = skip)
    rounds: int = 4  # runs per app configuration, in alternating order (A B B A ...) so drift and warm-up even out
    warmup: bool = True  # before each measured run: every session's first 2 strokes, not measured (reported apart)
    thumbnails_s: float = 300.0  # first let the app fill its thumbnail cache for up to this long (0 = skip)
    pace: float = 1.0  # drawing speed: human stroke and pen-up times divided by this (4 = a stress test)
    model: Path = DEFAULT_MODEL
    cache_dir: Path = BENCH_CACHE
    seed: int = 0
    name: str = "concurrency"


def participant_address(i: int) -> str:
    """Session ``i``'s own loopback source address (127.0.1.x, 127.0.2.x, ...): 50 people are 50
    addresses, so the app's per-address bounds (rate limit, queued events) see what a real crowd
    looks like, not one client sending 50 sessions' strokes."""
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


async def run_session(session: Session, url: str, t0: float, cfg: Config, index, out: list[dict], i: int) -> None:
    import httpx

    transport = httpx.AsyncHTTPTransport(local_address=participant_address(i))
    async with httpx.AsyncClient(trust_env=False, transport=transport) as client:

        async def one(stroke: int) -> None:
            await asyncio.sleep(max(0.0, t0 + session.send_at_s[stroke] - time.perf_counter()))
            start = time.perf_counter()
            row = {"user": session.user, "stroke": stroke, "sent_s": start - t0}
            try:
                answer = await call_rank_async(client, url, session.payloads[stroke], cfg.k, None, timeout_s=cfg.max_s)
                row["latency_ms"] = (time.perf_counter() - start) * 1e3
                row["server_ms"] = float(answer["timings_ms"]["total"])
                row["queue_ms"] = float(answer["timings_ms"].get("queue", 0.0))
                row["batch_size"] = int(answer.get("batch_size", 1))
                row["check"] = check_answer(session, stroke, answer, index, cfg.score_tol)
            except (ApiError, httpx.HTTPError, KeyError, ValueError) as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            out.append(row)

        await asyncio.gather(*(one(i) for i in range(len(session.payloads))))


async def load_run(sessions: list[Session], url: str, cfg: Config, index) -> tuple[list[dict], bool]:
    rows: list[dict] = []
    t0 = time.perf_counter() + 0.5
    try:
        await asyncio.wait_for(
            asyncio.gather(*(run_session(s, url, t0, cfg, index, rows, i) for i, s in enumerate(sessions))),
            timeout=cfg.max_s,
        )
        return rows, False
    except TimeoutError:
        return rows, True


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    machine = machine_info()
    plan = SessionPlan.of(cfg)
    sessions = make_sessions(plan, np.random.default_rng(cfg.seed))
    index = expected_rankings(sessions, plan)
    configs = list(dict.fromkeys([cfg.app_args, cfg.compare_app_args] if cfg.compare_app_args else [cfg.app_args]))
    if cfg.thumbnails_s > 0:
        prewarm_thumbnails(plan, cfg.thumbnails_s)
    runs: dict[str, tuple[list[dict], bool, float, float]] = {flags: ([], False, 0.0, 0.0) for flags in configs}
    for round_ in range(cfg.rounds):
        for flags in configs if round_ % 2 == 0 else configs[::-1]:
            rows, timed_out, wall_s, cpu_s = load_against_app(flags, sessions, cfg, index)
            before = runs[flags]
            runs[flags] = (
                before[0] + [{**r, "round": round_} for r in rows],
                before[1] or timed_out,
                before[2] + wall_s,
                before[3] + cpu_s,
            )
    report(runs, sessions, index, cfg, machine, command_line(__file__, argv))


def load_against_app(flags: str, sessions: list[Session], cfg: Config, index) -> tuple[list[dict], bool, float, float]:
    """Start the app with extra ``flags``, warm it up (rows tagged ``warmup``), run every session
    against it: rows, timed out, wall seconds, and this load generator's CPU seconds."""
    app_args = ["--gallery-size", str(cfg.gallery_size), "--cache-dir", str(cfg.cache_dir), "--model", str(cfg.model),
                "--api-diagnostics", *shlex.split(flags)]  # fmt: skip  # diagnostics: answers carry batch_size
    with running_app(app_args) as app:
        print(f"app ready at {app.url} (flags: {flags or 'defaults'}); {cfg.users} sessions", flush=True)
        warm: list[dict] = []
        if cfg.warmup:  # first requests pay one-off costs (queue, threads, connections, new batch shapes)
            firsts = [replace(s, payloads=s.payloads[:2], send_at_s=[0.0, 0.3]) for s in sessions]
            warm = [{**r, "warmup": True} for r in asyncio.run(load_run(firsts, app.url, cfg, index))[0]]
        cpu, start = cpu_seconds(), time.perf_counter()
        rows, timed_out = asyncio.run(load_run(sessions, app.url, cfg, index))
        return warm + rows, timed_out, time.perf_counter() - start, cpu_seconds() - cpu


def parse_args(argv: list[str] | None = None) -> Config:
    return parse_config(Config, argv, __doc__)


if __name__ == "__main__":
    main()
