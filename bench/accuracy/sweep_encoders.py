"""Encoder layouts trained side by side under one time budget, then scored by ``bench_ablation``.

Each ``--runs`` item is a preset of ``retrieval.model.spec.PRESETS`` with optional overrides of
``retrieval.train.pipeline.Config`` fields, ``preset:field=value:field=value`` (tuples comma-separated).
Every run is its own ``python -m retrieval.train`` process on ONE thread, all started at once, so
on a machine with at least as many idle cores as runs they share nothing but memory bandwidth
and each sees the same budget. The stages and their minutes come from the same helpers as
``pipeline.reproduce``'s (``retrieval.train.config.pipeline_stages`` and ``stage_minutes``), without the
jigsaw stage, which two-tower layouts cannot run; name it per run, e.g.
``scratch:stages=jigsaw,edges,quickdraw,finegrained`` (it takes its share out of ``edges``).
Afterwards ``bench_ablation`` scores every best checkpoint (val sketches, val and all-photo
galleries, re-ranking options, per-stroke latency).

    .venv/bin/python -m bench.accuracy.sweep_encoders --data ../shared/data/chairv2-train --minutes 7 \\
        --runs scratch lit-mobilenet lit-lite0 lit-lite0:sketch_frozen_blocks=5 --out runs/sweep
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.accuracy import bench_ablation
from bench.lib.common import markdown_table
from retrieval.cli import parse_config
from retrieval.evaluation.metrics import HEADLINE_METRICS
from retrieval.model.spec import PRESETS
from retrieval.train.config import STAGES, Config, pipeline_stages, preset_flags, stage_minutes


@dataclass
class SweepConfig:
    """Train several encoder layouts at once (one thread each) and compare them."""

    data: str = "../shared/data/chairv2-train"
    """dataset spec"""
    quickdraw: str = "../shared/data/quickdraw-raw"
    """Quick, Draw! folder for the quickdraw stage ('' to skip the stage)"""
    runs: tuple[str, ...] = ("scratch", "lit-mobilenet", "lit-lite0")
    """preset[:field=value...] per run"""
    minutes: float = 7.0
    """supervised budget of every run, split over its stages like pipeline.reproduce"""
    out: str = "runs/sweep"
    """folder of the run folders"""
    name: str = "encoder_sweep"
    """result file name (bench/results/<name>.md) of the ablation"""
    results_dir: str = ""
    """where the ablation result files go ('' = bench/results)"""
    seed: int = 0
    """seed of every run (and of the val carve)"""
    eval_threads: int = 2
    """torch threads of the ablation's accuracy part"""
    summarise_only: bool = False
    """print the table of the run folders already under --out (best val row of each log.csv) and stop"""


def run_config(item: str, cfg: SweepConfig) -> Config:
    preset, *overrides = item.split(":")
    if preset not in PRESETS:
        raise SystemExit(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    kinds = {f.name: f for f in dataclasses.fields(Config)}
    values = preset_flags(preset)
    for override in overrides:
        key, _, text = override.partition("=")
        if key not in kinds:
            raise SystemExit(f"{item}: {key!r} is not a retrieval.train.pipeline.Config field")
        default = kinds[key].default if kinds[key].default is not dataclasses.MISSING else kinds[key].default_factory()
        if isinstance(default, tuple):
            values[key] = tuple(filter(None, text.split(",")))
        elif isinstance(default, bool):
            values[key] = text.lower() in ("1", "true", "yes")
        else:
            values[key] = type(default)(text)
    stages = values.pop("stages", pipeline_stages(cfg.quickdraw))
    minutes = stage_minutes(stages, cfg.minutes)  # a jigsaw stage takes its share out of edges'
    name = item.replace(":", "__").replace("=", "-").replace(",", "+")
    sweep = {"data": cfg.data, "quickdraw": cfg.quickdraw, "seed": cfg.seed}  # a run's override wins over these
    fixed = {"out": Path(cfg.out), "run_name": name, "stages": tuple(stages), "threads": 1, "progress": False}
    return Config(**{**sweep, **values, **minutes, **fixed})


def as_argv(config: Config) -> list[str]:
    """The ``python -m retrieval.train`` flags that rebuild ``config``."""
    argv = []
    for f in dataclasses.fields(Config):
        value = getattr(config, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif isinstance(value, tuple):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def summarise(out: Path, select: str = "val_m@B") -> list[str]:
    """Markdown table of every run folder under ``out``: its best validation row and steps per stage."""
    import pandas as pd

    rows = []
    for log_path in sorted(out.glob("*/log.csv")):
        log = pd.read_csv(log_path)
        steps = log.groupby("stage")["stage_step"].max()
        val = log.dropna(subset=[select])
        if val.empty:
            continue
        best = val.loc[val[select].idxmax()]
        per_stage = "/".join(str(int(steps.get(s, 0))) for s in STAGES)
        metrics = [f"{best[f'val_{m}']:.2f}" for m in HEADLINE_METRICS]
        rows.append((log_path.parent.name, per_stage, f"{best['stage']} {int(best['stage_step'])}", *metrics))
    header = ("run", f"steps ({'/'.join(STAGES)})", "best at", *HEADLINE_METRICS)
    return markdown_table(header, rows, "lll" + "r" * len(HEADLINE_METRICS))


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(SweepConfig, argv, description=__doc__)
    if cfg.summarise_only:
        print("\n".join(summarise(Path(cfg.out))))
        return
    configs = {item: run_config(item, cfg) for item in cfg.runs}
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    procs = {}
    for item, config in configs.items():
        log = open(Path(cfg.out) / f"{config.run_name}.log", "w")
        cmd = [sys.executable, "-m", "retrieval.train", *as_argv(config)]
        procs[item] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    start = time.monotonic()
    failed = [item for item, proc in procs.items() if proc.wait() != 0]
    print(f"{len(procs)} runs in {time.monotonic() - start:.0f} s; failed: {failed or 'none'}")
    print("\n".join(summarise(Path(cfg.out))))
    models = [
        f"{c.run_name}={Path(cfg.out) / c.run_name / 'best'}" for item, c in configs.items() if item not in failed
    ]
    ablation = ["--data", cfg.data, "--name", cfg.name, "--models", *models, "--seed", str(cfg.seed)]
    ablation += ["--threads", str(cfg.eval_threads)]
    if cfg.results_dir:
        ablation += ["--results-dir", cfg.results_dir]
    bench_ablation.main(ablation)


if __name__ == "__main__":
    main()
