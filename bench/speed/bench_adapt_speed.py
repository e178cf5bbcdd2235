"""What ``python -m retrieval.adapt`` costs on one photo folder, and whether it changes the per-stroke cost.

The adaptation runs as a person would run it (a child process with a ``--minutes`` budget) and the
report gives the steps it made, steps per minute of its stage, the setup before the first step
(decoding the photos, loading the rehearsal drawings) as wall time minus stage time, the child's
peak resident memory and CPU time (``os.wait4``), whether it finished, and the load average around
it. The steps made in 10 minutes on a quiet machine are the step budget ``bench/accuracy/bench_adapt.py`` uses.

Then the per-stroke encoder call (one partial-sketch raster through the served head, channels_last
as the app loads it) of the start and the adapted model is timed, interleaved call by call so load
changes hit both alike: the adapted model has the start model's layout, so the ratio should be ~1.

A timing run needs the cores to itself. With the kernel's autogroups (``/proc/sys/kernel/
sched_autogroup_enabled``), ``nice`` ranks processes only within one session, so other sessions'
niced jobs still take an equal share; the report records this session's autogroup weight, and a
timing run raises it (as root) before starting:

    sh -c 'echo -20 > /proc/self/autogroup; exec .venv/bin/python -m bench.speed.bench_adapt_speed \\
        --photos ../shared/data/shoev2-photos --minutes 3 --name shoev2'

Writes bench/results/adapt_speed_<name>.md and .json.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.lib.common import (
    ROOT,
    command_line,
    header_lines,
    load_encoder,
    machine_info,
    markdown_table,
    percentiles,
    write_results,
)
from retrieval.cli import parse_config
from retrieval.data.datasets import open_dataset
from retrieval.data.raster import render_steps
from retrieval.data.sketch import step_cuts
from retrieval.runtime import set_threads


@dataclass
class SpeedConfig:
    """One timed adaptation of a photo folder, then the per-stroke cost before/after."""

    photos: str = "../shared/data/shoev2-photos"
    """folder of photos to adapt to"""
    model: str = "assets/model"
    """start checkpoint"""
    minutes: float = 3.0
    """the adaptation's time budget"""
    name: str = "shoev2"
    """results go to bench/results/adapt_speed_<name>.md/.json"""
    out: str = "runs/bench_adapt_speed"
    """folder of the adapted model and the child's log (the model is replaced on every run)"""
    threads: int = 2
    """torch threads of the adaptation"""
    stroke_threads: int = 1
    """torch threads of the per-stroke calls (the app's setting)"""
    strokes: int = 300
    """timed per-stroke calls per model"""
    sketches: str = "procedural:photos=30,sketches=1,seed=99"
    """drawings whose 17 point cuts are the per-stroke rasters"""


def run_adaptation(cfg: SpeedConfig, out: Path) -> dict:
    """Run ``python -m retrieval.adapt`` as a child; its exit status, wall and CPU time, peak memory."""
    shutil.rmtree(out, ignore_errors=True)
    log = out.with_suffix(".log")
    command = [sys.executable, "-m", "retrieval.adapt", "--model", cfg.model, "--photos", cfg.photos]
    command += ["--out", str(out), "--minutes", str(cfg.minutes), "--threads", str(cfg.threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    load_start = os.getloadavg()[0]
    started = time.monotonic()
    with open(log, "w") as sink:
        child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
    return {
        "exit_status": os.waitstatus_to_exitcode(status),
        "wall_s": round(time.monotonic() - started, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "load_avg_1m": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "log": str(log),
    }


def adaptation_facts(out: Path, child: dict) -> dict:
    """Steps, stage time and setup time of a finished adaptation, from its card and ``log.csv``."""
    from retrieval.model.encoder import Encoder

    card = Encoder.load(out).meta["card"]["adaptation"]
    stage_s = float(pd.read_csv(out / "log.csv")["elapsed_s"].dropna().iloc[-1])
    return {
        "photos": card["photos"]["count"],
        "skipped": card["photos"]["skipped"],
        "steps": card["steps"],
        "stage_s": round(stage_s, 1),
        "steps_per_min": round(card["steps"] / (stage_s / 60), 1),
        "setup_and_save_s": round(child["wall_s"] - stage_s, 1),
        "cpu_s_per_step": round(child["cpu_s"] / max(1, card["steps"]), 3),
    }


def stroke_rasters(cfg: SpeedConfig, raster_size: int, line_width: int) -> list[np.ndarray]:
    """Partial-sketch rasters (the 17 point cuts of each drawing), as the app renders them per stroke."""
    rasters = []
    for record in open_dataset(cfg.sketches).sketches("train"):
        rasters.extend(render_steps(record.sketch, step_cuts(record.sketch, "points"), raster_size, line_width))
    return rasters


def stroke_latency(cfg: SpeedConfig, adapted: Path) -> dict:
    """Milliseconds per one-raster sketch embedding of the start and the adapted model, interleaved."""
    set_threads(cfg.stroke_threads)
    models = {"start": load_encoder(Path(cfg.model), channels_last=True), "adapted": load_encoder(adapted, True)}
    meta = models["start"].meta
    rasters = stroke_rasters(cfg, meta["raster_size"], meta["line_width"])
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(cfg.strokes + 10):  # the first 10 rounds warm up (allocator, kernel choice)
        order = list(models) if i % 2 == 0 else list(reversed(models))
        for name in order:
            raster = rasters[i % len(rasters)][None]
            started = time.perf_counter()
            models[name].embed_sketches(raster)
            if i >= 10:
                times[name].append((time.perf_counter() - started) * 1e3)
    stats = {name: percentiles(t) for name, t in times.items()}
    return stats | {"ratio_p50": stats["adapted"]["p50"] / stats["start"]["p50"]}


def report(cfg: SpeedConfig, child: dict, facts: dict, latency: dict, command: str, machine: dict) -> None:
    lines = header_lines(f"Adaptation speed and memory: {cfg.name} ({cfg.photos})", command, machine)
    lines += [
        f"- scheduling: {machine['autogroup']} (with autogroups, `nice` ranks tasks only within a session)",
        "",
        f"`python -m retrieval.adapt --model {cfg.model} --photos {cfg.photos} --minutes {cfg.minutes:g} "
        f"--threads {cfg.threads}`: finished with exit status {child['exit_status']}.",
        "",
    ]
    rows = [
        ("photos (skipped)", f"{facts.get('photos', '-')} ({facts.get('skipped', '-')})"),
        ("steps", facts.get("steps", "-")),
        ("stage time (s)", facts.get("stage_s", "-")),
        ("steps per minute", facts.get("steps_per_min", "-")),
        ("setup + save (s): wall minus stage", facts.get("setup_and_save_s", "-")),
        ("wall (s)", child["wall_s"]),
        ("CPU (s), per step incl. setup", f"{child['cpu_s']}, {facts.get('cpu_s_per_step', '-')}"),
        ("peak resident memory (MB)", child["peak_rss_mb"]),
        ("load average start / end", f"{child['load_avg_1m']['start']} / {child['load_avg_1m']['end']}"),
    ]
    lines += markdown_table(("", "value"), rows)
    if latency:
        lines += [
            "",
            f"Per-stroke sketch embedding, {cfg.strokes} interleaved calls each, {cfg.stroke_threads} thread:",
            "",
        ]
        lines += markdown_table(
            ("model", "p50 ms", "p95 ms", "p99 ms"),
            [
                (n, f"{latency[n]['p50']:.2f}", f"{latency[n]['p95']:.2f}", f"{latency[n]['p99']:.2f}")
                for n in ("start", "adapted")
            ],
        )
        lines += ["", f"adapted / start, p50: {latency['ratio_p50']:.3f}"]
    data = {"config": asdict(cfg), "child": child, "adaptation": facts, "stroke_latency_ms": latency}
    write_results(f"adapt_speed_{cfg.name}", lines, [], data, machine)


def session_weight() -> str:
    """This session's autogroup and its nice value ("no autogroups" where the kernel has none)."""
    try:
        return Path("/proc/self/autogroup").read_text().strip()
    except OSError:
        return "no autogroups"


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(SpeedConfig, argv, description=__doc__)
    machine = machine_info() | {"autogroup": session_weight()}
    out = Path(cfg.out) / cfg.name
    out.parent.mkdir(parents=True, exist_ok=True)
    child = run_adaptation(cfg, out)
    finished = child["exit_status"] == 0 and out.is_dir()
    facts = adaptation_facts(out, child) if finished else {}
    latency = stroke_latency(cfg, out) if finished else {}
    report(cfg, child, facts, latency, command_line(__file__, argv), machine)


if __name__ == "__main__":
    main()
