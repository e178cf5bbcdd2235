"""Rasteriser latency: one 300-point sketch at 256x256 (the app's per-stroke render) and 17-step batches.

Repeats each measurement many times and reports percentiles, with the machine, date and library
versions, to bench/results/raster.md.

    .venv/bin/python -m bench.speed.bench_raster                 # ~20 s
    .venv/bin/python -m bench.speed.bench_raster --reps 500
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2

from bench.lib.common import (
    RESULTS,
    Target,
    command_line,
    header_lines,
    machine_info,
    markdown_table,
    percentiles,
    target_table,
    time_calls,
    write_results,
)
from retrieval.cli import parse_config
from retrieval.data.procedural import generate_sketch
from retrieval.data.raster import render, render_steps
from retrieval.data.sketch import Sketch, point_cuts


@dataclass
class Config:
    """Benchmark settings."""

    points: int = 300  # points of the timed sketch
    reps: int = 3000  # timed single renders per configuration
    step_reps: int = 300  # timed 17-step batches per configuration
    warmup: int = 50
    out: Path = RESULTS / "raster.md"


def sketch_with_points(n: int) -> Sketch:
    """A procedural chair sketch cut to exactly ``n`` points (the first one long enough)."""
    for index in range(1000):
        sketch = generate_sketch(0, index, 0)
        if sketch.num_points >= n:
            return sketch.first_points(n)
    raise RuntimeError(f"no procedural sketch with {n} points in the first 1000; lower --points")


def p50_p95_p99(fn, reps: int, warmup: int) -> tuple[float, float, float]:
    """Milliseconds p50, p95, p99 of ``reps`` calls of ``fn`` after ``warmup`` untimed ones (no time cap)."""
    stats = percentiles(time_calls(fn, reps, warmup, max_s=math.inf))
    return stats["p50"], stats["p95"], stats["p99"]


def main(cfg: Config) -> None:
    machine = machine_info()  # load average at start, before the timing loops
    sketch = sketch_with_points(cfg.points)
    cuts = point_cuts(sketch.num_points)
    measured = []  # one dict per configuration: call, size, width, p50/p95/p99 ms, rasters per second
    for size, width in ((256, 3), (256, 1), (128, 2), (224, 3)):
        p50, p95, p99 = p50_p95_p99(lambda s=size, w=width: render(sketch, size=s, width=w), cfg.reps, cfg.warmup)
        measured.append(
            dict(call="render (1 raster)", size=size, width=width, p50=p50, p95=p95, p99=p99, per_s=1000 / p50)
        )
        print(measured[-1], flush=True)
    for size, width in ((256, 3), (128, 2)):
        p50, p95, p99 = p50_p95_p99(
            lambda s=size, w=width: render_steps(sketch, cuts, size=s, width=w), cfg.step_reps, cfg.warmup // 5
        )
        measured.append(
            dict(call="render_steps (17 rasters)", size=size, width=width, p50=p50, p95=p95, p99=p99, per_s=17000 / p50)
        )
        print(measured[-1], flush=True)
    headline = next(m for m in measured if m["call"].startswith("render (1") and (m["size"], m["width"]) == (256, 3))
    targets = [Target(f"render one {cfg.points}-point sketch at 256x256, p50", headline["p50"], 1.0)]
    rows = [
        (m["call"], m["size"], m["width"], f"{m['p50']:.3f}", f"{m['p95']:.3f}", f"{m['p99']:.3f}", f"{m['per_s']:.0f}")
        for m in measured
    ]
    lines = [
        *header_lines("Rasteriser latency", command_line(__file__, None), machine),
        "",
        f"Sketch: a procedural chair sketch cut to {sketch.num_points} points in {sketch.num_strokes} strokes; "
        f"{cfg.reps} timed single renders / {cfg.step_reps} timed 17-step batches per row after warm-up, "
        "one thread.",
        "",
        *target_table(targets),
        "",
        *markdown_table(("call", "size", "width", "p50 ms", "p95 ms", "p99 ms", "rasters/s at p50"), rows),
    ]
    write_results(cfg.out.stem, lines, targets, {"rows": measured}, machine, cfg.out.parent)


def parse_args() -> Config:
    return parse_config(Config, None, __doc__)


if __name__ == "__main__":
    cv2.setNumThreads(1)
    main(parse_args())
