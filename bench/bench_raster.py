"""Rasteriser latency: one 300-point sketch at 256x256 (the app's per-stroke render) and 17-step batches.

Repeats each measurement many times and reports percentiles, with the machine, date and library
versions, to bench/results/raster.md.

    .venv/bin/python bench/bench_raster.py                 # ~20 s
    .venv/bin/python bench/bench_raster.py --reps 500
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from retrieval.procedural import generate_sketch  # noqa: E402
from retrieval.raster import render, render_steps  # noqa: E402
from retrieval.sketch import Sketch, point_cuts  # noqa: E402


@dataclass
class Config:
    """Benchmark settings."""

    points: int = 300  # points of the timed sketch
    reps: int = 3000  # timed single renders per configuration
    step_reps: int = 300  # timed 17-step batches per configuration
    warmup: int = 50
    out: Path = Path(__file__).resolve().parent / "results" / "raster.md"


def machine_info() -> str:
    """One line: platform, CPU model, cores, load average, Python/numpy/OpenCV versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return (
        f"{platform.platform()}; {cpu}; {os.cpu_count()} cores (load average {load:.2f}, shared machine); "
        f"Python {platform.python_version()}, numpy {np.__version__}, OpenCV {cv2.__version__}"
    )


def sketch_with_points(n: int) -> Sketch:
    """A procedural chair sketch cut to exactly ``n`` points (the first one long enough)."""
    for index in range(1000):
        sketch = generate_sketch(0, index, 0)
        if sketch.num_points >= n:
            return sketch.first_points(n)
    raise RuntimeError(f"no procedural sketch with {n} points in the first 1000; lower --points")


def percentiles(fn, reps: int, warmup: int) -> tuple[float, float, float]:
    for _ in range(warmup):
        fn()
    times = np.empty(reps)
    for i in range(reps):
        start = time.perf_counter()
        fn()
        times[i] = (time.perf_counter() - start) * 1000.0
    p50, p95, p99 = np.percentile(times, [50, 95, 99])
    return float(p50), float(p95), float(p99)


def main(cfg: Config) -> None:
    sketch = sketch_with_points(cfg.points)
    cuts = point_cuts(sketch.num_points)
    rows = []
    for size, width in ((256, 3), (256, 1), (128, 2), (224, 3)):
        p50, p95, p99 = percentiles(lambda s=size, w=width: render(sketch, size=s, width=w), cfg.reps, cfg.warmup)
        rows.append(f"| render (1 raster) | {size} | {width} | {p50:.3f} | {p95:.3f} | {p99:.3f} | {1000 / p50:.0f} |")
        print(rows[-1], flush=True)
    for size, width in ((256, 3), (128, 2)):
        p50, p95, p99 = percentiles(
            lambda s=size, w=width: render_steps(sketch, cuts, size=s, width=w), cfg.step_reps, cfg.warmup // 5
        )
        rows.append(
            f"| render_steps (17 rasters) | {size} | {width} | {p50:.3f} | {p95:.3f} | {p99:.3f} | {17000 / p50:.0f} |"
        )
        print(rows[-1], flush=True)
    lines = [
        "# Rasteriser latency",
        "",
        f"Date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. Machine: {machine_info()}.",
        f"Sketch: a procedural chair sketch cut to {sketch.num_points} points in {sketch.num_strokes} strokes; "
        f"{cfg.reps} timed single renders / {cfg.step_reps} timed 17-step batches per row after warm-up, "
        "one thread. Target: render p50 <= 1 ms at 256x256.",
        "Command: `.venv/bin/python bench/bench_raster.py`",
        "",
        "| call | size | width | p50 ms | p95 ms | p99 ms | rasters/s at p50 |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {cfg.out}")


def parse_args() -> Config:
    cfg = Config()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=cfg.points)
    parser.add_argument("--reps", type=int, default=cfg.reps)
    parser.add_argument("--step-reps", type=int, default=cfg.step_reps)
    parser.add_argument("--out", type=Path, default=cfg.out)
    args = parser.parse_args()
    return Config(points=args.points, reps=args.reps, step_reps=args.step_reps, out=args.out)


if __name__ == "__main__":
    cv2.setNumThreads(1)
    main(parse_args())
