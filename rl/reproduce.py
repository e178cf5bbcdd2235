"""From raw data to the baseline-vs-RL comparison in one command.

    python -m rl.reproduce --data ../shared/data/chairv2-train --out runs/repro   # ~60 min on 2 cores
    python -m rl.reproduce --out runs/repro-tiny --tiny                            # ~1 min smoke run

1. supervised encoder (``retrieval.train.run``, library call) -> ``OUT/supervised/best``
2. frozen features of every drawing step of train/val (``rl.features``, cached in ``OUT/cache``)
3. PPO on the sketch head from the supervised head (``rl.train.train``) -> ``OUT/rl/encoder``
4. both checkpoints evaluated by ``retrieval.evaluate.run`` on val (and test when the data has
   one): ``OUT/{baseline,rl}/metrics.json`` (val, same keys as retrieval.evaluate), per-split
   folders ``OUT/{baseline,rl}/{val,test}/``, then ``OUT/comparison.md`` and ``OUT/comparison.png``.

Prints a time breakdown at the end (also in ``OUT/timings.json``).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from retrieval.cli import parse_config
from retrieval.train import STAGE_SHARES, STAGES
from rl.features import cached_features
from rl.report import markdown_table, plot_rank_curves
from rl.train import RLConfig
from rl.train import train as train_rl


@dataclass
class ReproduceConfig:
    """Train the supervised baseline and the RL head from raw data, evaluate both, compare."""

    data: str = "procedural"
    """QMUL-layout folder (e.g. ../shared/data/chairv2-train) or a 'procedural[:photos=N,...]' spec"""
    out: str = "runs/reproduce"
    """output folder"""
    minutes_supervised: float = 36.0
    """time budget of supervised training, split over its stages"""
    minutes_rl: float = 6.0
    """time budget of PPO"""
    encoder: str = "lit-lite0"
    """encoder layout, a preset of retrieval.train.ENCODER_PRESETS: scratch, lit-mobilenet, lit-lite0
    (the default won bench/results/chair-v2_encoder_sweep.md and the README's ablation)"""
    quickdraw: str = "../shared/data/quickdraw-raw"
    """Quick, Draw! raw ndjson folder for sketch pre-training; the stage is skipped (its time given to
    the fine-grained stage) when the folder is absent or ''"""
    reward: str = "rank+kendall"
    """RL reward: 'rank' or 'rank+kendall'"""
    val_fraction: float = 0.1
    """share of train photos carved out as val (used by training, RL and evaluation alike)"""
    seed: int = 0
    """seed of the val split, training and PPO"""
    threads: int = 2
    """torch threads"""
    tiny: bool = False
    """smoke scale: tiny procedural data, small model, a few optimisation steps (about a minute)"""
    progress: bool = True
    """show progress bars"""


def supervised_config(cfg: ReproduceConfig, out: Path):
    """``retrieval.train.Config`` for this run (stages and minutes from the budget, layout from the preset)."""
    from retrieval.train import ENCODER_PRESETS, Config

    if cfg.encoder not in ENCODER_PRESETS:
        raise ValueError(f"unknown encoder preset {cfg.encoder!r}; choose one of {sorted(ENCODER_PRESETS)}")

    stages = [s for s in STAGES if s != "quickdraw" or (cfg.quickdraw and Path(cfg.quickdraw).is_dir())]
    total = sum(STAGE_SHARES[s] for s in stages)
    minutes = {f"minutes_{s}": cfg.minutes_supervised * STAGE_SHARES[s] / total for s in stages}
    sup = Config(
        data=cfg.data,
        out=out,
        run_name="supervised",
        stages=tuple(stages),
        quickdraw=cfg.quickdraw,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        threads=cfg.threads,
        progress=cfg.progress,
        **minutes,
        **ENCODER_PRESETS[cfg.encoder],
    )
    if cfg.tiny:
        sup = replace(
            sup,
            stages=("finegrained",),
            max_steps=8,
            input_size=64,
            embed_dim=32,
            batch_size=8,
            eval_every=4,
            save_every=1000,
            hard_negatives=False,
            edge_mix=0.0,
            edges_per_photo=1,
            warmup_steps=2,
            photo_input_size=64 if sup.photo_arch else 0,
            photo_views=1,
        )
    return sup


def rl_config(cfg: ReproduceConfig, out: Path) -> RLConfig:
    rl_cfg = RLConfig(
        data=cfg.data,
        val_fraction=cfg.val_fraction,
        out=str(out / "rl"),
        cache_dir=str(out / "cache"),
        reward=cfg.reward,
        minutes=cfg.minutes_rl,
        seed=cfg.seed,
        threads=cfg.threads,
        progress=cfg.progress,
    )
    if cfg.tiny:
        rl_cfg = replace(rl_cfg, max_timesteps=1024, n_envs=4, n_steps=64, batch_size=64, eval_every=256)
    return rl_cfg


def evaluate_checkpoint(cfg: ReproduceConfig, model: Path, out: Path, splits: list[str]) -> dict[str, dict]:
    """``retrieval.evaluate.run`` on each split; ``out/metrics.json`` = the val metrics."""
    from retrieval.evaluate import EvalConfig, run

    results = {}
    for split in splits:
        results[split] = run(
            EvalConfig(
                data=cfg.data,
                model=model,
                out=out / split,
                split=split,
                val_fraction=cfg.val_fraction,
                seed=cfg.seed,
                threads=cfg.threads,
            )
        )
    shutil.copyfile(out / "val" / "metrics.json", out / "metrics.json")
    return results


def write_comparison(
    out: Path,
    baseline: dict[str, dict],
    rl: dict[str, dict],
    rl_summary: dict,
    timings: dict[str, float],
    cfg: ReproduceConfig,
) -> None:
    """``comparison.md`` (tables per split) and ``comparison.png`` (rank vs progress, both models)."""
    lines = [
        f"# Supervised baseline vs RL sketch head ({cfg.data})",
        "",
        "Ranks of each sketch's true photo among all photos of the split, after each of the 17 point "
        "cuts (retrieval.evaluate); A@k on the finished sketch, m@A/m@B averaged over the drawing. Percent.",
        "",
    ]
    for split in baseline:
        lines += [
            f"## {split}",
            "",
            markdown_table({"supervised (baseline)": baseline[split], f"RL head ({cfg.reward})": rl[split]}),
            "",
        ]
    lines += [
        "## RL run",
        "",
        f"- PPO steps: {rl_summary['timesteps']}, best head at step "
        f"{rl_summary['best_timesteps']} (0 = no improvement on val: the baseline head was kept)",
        f"- reward: {rl_summary['reward']} (gamma_rank {rl_summary['gamma_rank']}, gamma_kendall "
        f"{rl_summary['gamma_kendall']})",
        "",
        "## Time (s)",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *(f"| {k} | {v:.1f} |" for k, v in timings.items()),
        "",
    ]
    (out / "comparison.md").write_text("\n".join(lines))
    curves = {split: {"supervised": baseline[split]["curve"], "RL": rl[split]["curve"]} for split in baseline}
    plot_rank_curves(curves, out / "comparison.png", title=f"true-photo rank while drawing ({cfg.data})")


def reproduce(cfg: ReproduceConfig) -> dict:
    """Run everything; returns ``{"baseline": {split: metrics}, "rl": {...}, "timings": {...}}``."""
    from retrieval.datasets import open_dataset
    from retrieval.encoder import Encoder
    from retrieval.train import run as train_supervised

    if cfg.tiny and cfg.data == "procedural":
        cfg = replace(cfg, data="procedural:photos=40,sketches=2", val_fraction=0.2)
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.__dict__, indent=2))
    timings: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        timings[name] = round(now - clock, 1)
        clock = now

    dataset = open_dataset(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed)
    lap("open data")
    run_dir = train_supervised(supervised_config(cfg, out), dataset=dataset)
    baseline_ckpt = run_dir / "best"
    lap("supervised training")

    encoder = Encoder.load(baseline_ckpt)
    rl_cfg = rl_config(cfg, out)
    caches = {
        split: cached_features(encoder, dataset, split, rl_cfg.cache_dir, progress=cfg.progress)
        for split in ("train", "val")
    }
    lap("RL features")
    result = train_rl(rl_cfg, encoder=encoder, train_cache=caches["train"], val_cache=caches["val"])
    lap("RL training + export")

    splits = [s for s in ("val", "test") if s in dataset.splits()]
    baseline = evaluate_checkpoint(cfg, baseline_ckpt, out / "baseline", splits)
    rl = evaluate_checkpoint(cfg, result.encoder_path, out / "rl", splits)
    lap("evaluation")
    rl_summary = json.loads((Path(rl_cfg.out) / "summary.json").read_text())
    timings["total"] = round(sum(timings.values()), 1)
    write_comparison(out, baseline, rl, rl_summary, timings, cfg)
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    return {"baseline": baseline, "rl": rl, "timings": timings}


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(ReproduceConfig, argv)
    results = reproduce(cfg)
    out = Path(cfg.out)
    print((out / "comparison.md").read_text())
    print("time breakdown (s): " + ", ".join(f"{k} {v:.1f}" for k, v in results["timings"].items()))
    print(f"wrote {out}/comparison.md, comparison.png, baseline/metrics.json, rl/metrics.json")
    return results


if __name__ == "__main__":
    main()
