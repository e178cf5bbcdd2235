"""CPU latency of one partial-sketch embedding (render + forward) for candidate encoder backbones.

For each arch x input size x torch threads x memory format, times ``Encoder.render`` of a sketch cut
at half its points plus ``Encoder.embed_sketches`` of that one raster (what the app does per
stroke), with randomly initialised weights (latency does not depend on the values). Writes p50/p95
in ms to bench/results/encoder.md with the machine, load average and date.

    .venv/bin/python -m bench.speed.bench_encoder                        # the full grid (~10 min on 2 cores)
    .venv/bin/python -m bench.speed.bench_encoder --archs mobilenet_v3_small --sizes 128 --reps 50
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.lib.common import RESULTS, command_line, header_lines, machine_info, markdown_table, write_results
from retrieval.cli import parse_config
from retrieval.data.sketch import Sketch
from retrieval.model.encoder import create_encoder
from retrieval.runtime import set_threads


@dataclass
class Config:
    """Benchmark settings."""

    archs: tuple[str, ...] = (
        "mobilenet_v3_small",
        "mobilenet_v3_large",
        "shufflenet_v2_x1_0",
        "regnet_x_400mf",
        "resnet18",
        "efficientnet_b0",
    )  # candidate backbones
    sizes: tuple[int, ...] = (96, 128, 160, 224)  # square input sizes
    threads: tuple[int, ...] = (1, 2)  # torch.set_num_threads values
    formats: tuple[str, ...] = ("eager", "channels_last")  # memory formats
    reps: int = 30  # timed calls per configuration (after warm-up)
    warmup: int = 5  # untimed calls first (allocator, oneDNN kernel selection)
    embed_dim: int = 128
    out: Path = RESULTS / "encoder.md"
    seed: int = 0


def test_sketch(seed: int) -> Sketch:
    """A chair-sized doodle: 10 strokes, ~200 points on a 256 canvas (QMUL-like)."""
    rng = np.random.default_rng(seed)
    strokes, t = [], 0.0
    for _ in range(10):
        n = int(rng.integers(10, 30))
        xy = np.cumsum(rng.normal(0, 4, (n, 2)), axis=0) + rng.uniform(40, 216, 2)
        ts = t + np.arange(n) * 15.0
        t = ts[-1] + 400.0
        strokes.append(np.column_stack([np.clip(xy, 0, 255), ts]))
    return Sketch(tuple(strokes))


def time_one(arch: str, size: int, threads: int, fmt: str, cfg: Config, sketch: Sketch) -> tuple[float, float]:
    set_threads(threads)
    enc = create_encoder(
        arch=arch, input_size=size, embed_dim=cfg.embed_dim, seed=cfg.seed, channels_last=fmt == "channels_last"
    )
    half = sketch.num_points // 2
    times = []
    for i in range(cfg.warmup + cfg.reps):
        start = time.perf_counter()
        enc.embed_sketches(enc.render(sketch, half))
        if i >= cfg.warmup:
            times.append((time.perf_counter() - start) * 1000.0)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def main(cfg: Config) -> None:
    machine = machine_info()  # load average at start, before the timing loops
    sketch = test_sketch(cfg.seed)
    measured = []
    for arch in cfg.archs:
        for size in cfg.sizes:
            for threads in cfg.threads:
                for fmt in cfg.formats:
                    p50, p95 = time_one(arch, size, threads, fmt, cfg, sketch)
                    measured.append(dict(arch=arch, input=size, threads=threads, format=fmt, p50=p50, p95=p95))
                    print(
                        f"{arch:22s} {size:4d} t={threads} {fmt:13s} p50 {p50:7.2f} ms  p95 {p95:7.2f} ms", flush=True
                    )
    rows = [(m["arch"], m["input"], m["threads"], m["format"], f"{m['p50']:.2f}", f"{m['p95']:.2f}") for m in measured]
    lines = [
        *header_lines(
            "Encoder latency: one partial-sketch embedding (render + forward), CPU",
            command_line(__file__, None),
            machine,
        ),
        "",
        f"Random weights, batch 1, {cfg.reps} timed calls after {cfg.warmup} warm-up, sketch cut at half its points.",
        "",
        *markdown_table(("arch", "input", "threads", "format", "p50 ms", "p95 ms"), rows, "lrrlrr"),
    ]
    write_results(cfg.out.stem, lines, [], {"rows": measured}, machine, cfg.out.parent)


def check(cfg: Config) -> None:
    unknown = set(cfg.formats) - {"eager", "channels_last"}
    if unknown:
        raise ValueError(f"--formats: unknown {sorted(unknown)}; choose from eager, channels_last")


def parse_args() -> Config:
    return parse_config(Config, description=__doc__, validate=check)


if __name__ == "__main__":
    main(parse_args())
