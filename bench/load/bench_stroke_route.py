"""Server CPU and latency per stroke on the app's stroke route (``POST /es/stroke``) at 50 sessions.

Starts ``app.py`` (study mode by default, logs in a temporary folder) and runs ``--sessions``
participants at once, each a browser of its own (``harness/ui_client.py``: page load for its
cookie, Start, then strokes): every participant draws the procedural sketch of its trial's target
stroke by stroke at human times (the sketch's own stroke durations, Quick, Draw!-like pen-up gaps),
posts each stroke after its pen-up and waits for the answer (closed loop), and presses Next when a
trial ends. Measured per run, over the drawing phase only: the app process's CPU seconds (user +
system, all threads, from /proc) divided by the strokes answered -- Next presses fall in the window
too, so this overstates the per-stroke cost -- and the client-side latency percentiles.
Runs ``--runs`` times, each on a fresh app, and reports every run.

    .venv/bin/python -m bench.load.bench_stroke_route                       # 50 sessions, 4 runs
    .venv/bin/python -m bench.load.bench_stroke_route --sessions 4 --runs 1 --name stroke_route_quick
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from bench.lib.common import (
    BENCH_CACHE,
    Target,
    command_line,
    header_lines,
    machine_info,
    percentiles,
    target_table,
    write_results,
)
from bench.lib.study_traffic import stroke_event
from harness.api_client import running_app
from harness.ui_client import UiApp, UiSession
from retrieval.cli import parse_config
from retrieval.study.payload import JournalWriter

CPU_TARGET_MS = 15.0  # issue 22: server CPU per stroke at 50 sessions
P95_TARGET_MS = 100.0


@dataclass
class Config:
    """Benchmark settings."""

    sessions: int = 50
    """Participants drawing at once."""
    strokes: int = 8
    """Strokes each participant draws (over as many trials as it takes)."""
    runs: int = 4
    """Runs, each on a freshly started app."""
    mode: str = "study"
    """App mode: study (strokes logged, fsync'd) or free."""
    gallery_size: int = 1000
    """Procedural photos in the gallery."""
    seed: int = 0
    """Seed of the pen-up gaps and sketch variants."""
    name: str = "stroke_route"
    """Result file name under bench/results."""


def server_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def start(tab: UiSession, name: str, cfg: Config, gate: asyncio.Semaphore) -> tuple[str, str]:
    """Load the page and press Start (or New challenge in free mode): the trial token and target.
    A few at a time (``gate``): a lab's participants do not all press Start in the same millisecond."""
    app = tab.app
    async with gate:
        if cfg.mode == "study":
            event = app.event("Start", "click")
            out = await tab.call(event, {"Participant id": name, "Session id": "S1"})
        else:
            event = app.event("New challenge", "click")
            out = await tab.call(event)
    return app.output(out, "es-canvas", event)["trial"], app.output(out, "es-panel", event)["target_id"]


async def participant(
    tab: UiSession, trial: tuple[str, str], cfg: Config, rng: np.random.Generator, latencies: list
) -> int:
    """Draw ``cfg.strokes`` strokes from ``trial`` (token, target) on (Next when a trial ends); the strokes answered."""
    from retrieval.data.procedural import generate_sketch
    from retrieval.data.procedural.timing import pen_up_gap

    app, (token, target) = tab.app, trial
    writer, answered, t_ms, drawn_in_trial = JournalWriter(token), 0, 0.0, 0
    await asyncio.sleep(float(rng.uniform(0, 2)))  # participants do not start in the same millisecond
    while answered < cfg.strokes:
        sketch = generate_sketch(0, int(target.rsplit("-", 1)[1]), int(rng.integers(3)))
        stroke = sketch.strokes[drawn_in_trial % sketch.num_strokes]
        pause_ms = (pen_up_gap(rng) if drawn_in_trial else 300.0) + float(stroke[-1, 2] - stroke[0, 2])
        await asyncio.sleep(pause_ms / 1e3)
        t_ms += pause_ms
        writer.add(stroke_event(writer.seq + 1, stroke, t_ms))
        began = time.perf_counter()
        status, answer = await tab.stroke(writer.batch())
        if status != 200:
            raise RuntimeError(f"HTTP {status} {str(answer)[:200]}")
        latencies.append((time.perf_counter() - began) * 1e3)
        writer.acknowledge(answer["applied"])
        answered, drawn_in_trial = answered + 1, drawn_in_trial + 1
        if answer["trial_ended"] and cfg.mode == "study" and answered < cfg.strokes:
            next_ev = app.event("Next trial", "click")
            out = await tab.call(next_ev, {"es-canvas": {"trial": token}})
            token, target = (
                app.output(out, "es-canvas", next_ev)["trial"],
                app.output(out, "es-panel", next_ev)["target_id"],
            )
            writer, t_ms, drawn_in_trial = JournalWriter(token), 0.0, 0
    return answered


async def drive(url: str, pid: int, cfg: Config, run: int) -> dict:
    rng = np.random.default_rng(cfg.seed + run)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=cfg.sessions + 10)
    async with httpx.AsyncClient(trust_env=False, limits=limits, timeout=120) as client:
        app = await UiApp.connect(client, url)
        tabs = [UiSession(client, app) for _ in range(cfg.sessions)]
        # Page loads and Start presses, outside the window.
        gate = asyncio.Semaphore(4)
        trials = await asyncio.gather(*(start(tab, f"R{run}-{i:02d}", cfg, gate) for i, tab in enumerate(tabs)))
        cpu0, wall0 = server_cpu_s(pid), time.monotonic()
        seeds = rng.integers(1 << 31, size=cfg.sessions)
        answered = await asyncio.gather(
            *(
                participant(t, trial, cfg, np.random.default_rng(s), latencies)
                for t, trial, s in zip(tabs, trials, seeds)
            )
        )
        cpu, wall = server_cpu_s(pid) - cpu0, time.monotonic() - wall0
    strokes = int(sum(answered))
    return {
        "run": run,
        "strokes": strokes,
        "wall_s": wall,
        "server_cpu_s": cpu,
        "cpu_ms_per_stroke": 1e3 * cpu / strokes,
        "latency_ms": percentiles(latencies),
        "load_after": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(Config, argv, description=__doc__)
    machine, runs = machine_info(), []
    for run in range(cfg.runs):
        with tempfile.TemporaryDirectory() as tmp:
            study = Path(tmp) / "study.json"
            plan = {"name": "stroke-route", "random_targets": 50, "num_trials": 100, "found_k": 1, "time_limit_s": 0}
            study.write_text(json.dumps(plan))
            mode_args = ["--study", str(study), "--log-dir", str(Path(tmp) / "logs")] if cfg.mode == "study" else []
            args = ["--mode", cfg.mode, *mode_args, "--gallery-size", str(cfg.gallery_size)]
            args += ["--cache-dir", str(BENCH_CACHE), "--rate-limit", "off"]
            with running_app(args, log_path=Path(tmp) / "app.log") as app:
                result = asyncio.run(drive(app.url, app.proc.pid, cfg, run))
        runs.append(result)
        lat = result["latency_ms"]
        print(
            f"run {run}: {result['strokes']} strokes, {result['cpu_ms_per_stroke']:.1f} ms server CPU/stroke, "
            f"p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms",
            flush=True,
        )
    report(cfg, runs, machine, argv)


def report(cfg: Config, runs: list[dict], machine: dict, argv: list[str] | None) -> None:
    lines = header_lines("Server CPU and latency per stroke on POST /es/stroke", command_line(__file__, argv), machine)
    lines += [
        "",
        f"{cfg.sessions} participants at once, {cfg.strokes} strokes each at human timing (closed loop), "
        f"{cfg.mode} mode, {cfg.gallery_size} procedural photos, rate limit off; a fresh app per run. "
        "Server CPU: the app process's user + system seconds over the drawing phase / strokes answered "
        "(Next presses included).",
        "",
        "| run | strokes | wall s | server CPU ms / stroke | p50 ms | p95 ms | p99 ms | load after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lat = r["latency_ms"]
        lines.append(
            f"| {r['run']} | {r['strokes']} | {r['wall_s']:.1f} | {r['cpu_ms_per_stroke']:.1f} | "
            f"{lat['p50']:.0f} | {lat['p95']:.0f} | {lat['p99']:.0f} | {r['load_after']:.2f} |"
        )
    targets = [
        Target(f"server CPU per stroke, run {r['run']}", r["cpu_ms_per_stroke"], CPU_TARGET_MS) for r in runs
    ] + [Target(f"p95 latency, run {r['run']}", r["latency_ms"]["p95"], P95_TARGET_MS) for r in runs]
    lines += ["", *target_table(targets)]
    write_results(cfg.name, lines, targets, {"config": cfg.__dict__, "runs": runs}, machine)


if __name__ == "__main__":
    main()
