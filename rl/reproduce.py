"""From raw data to "does the RL stage earn its place?" in one command.

    python -m rl.reproduce --data ../shared/data/chairv2-train --out runs/repro   # ~60 min on 2 cores
    python -m rl.reproduce --data DIR --checkpoint SUPERVISED_DIR --holdout-fraction 0.2 ...  # skip step 1
    python -m rl.reproduce --out runs/repro-tiny --tiny                            # ~1 min smoke run

1. supervised encoder (``retrieval.train.pipeline.run``, library call) -> ``OUT/supervised/best``; it never
   sees the ``holdout`` photos (``--holdout-fraction``, a second seeded carve of train photos).
2. frozen features of every drawing step of train / val / the comparison split (``rl.features``,
   cached in ``OUT/cache``).
3. for each seed: PPO from the supervised head for each reward variant (``rl.train``) and the fair
   control (``rl.control``: the same head trained by supervised gradient descent for the same
   minutes); every run selects its best head on val only.
4. every head scored on the comparison split (``holdout``, else ``test``): metrics per seed, paired
   bootstrap 95 % intervals vs the supervised head and vs the control (``rl.compare``) ->
   ``OUT/comparison.md`` (printed) and ``OUT/comparison.json``.
5. the method with the best mean val score (supervised, an RL variant or the control; never chosen on the comparison
   split) is shipped: its best-on-val seed exported to ``OUT/shipped/encoder`` (the supervised checkpoint copied
   there when it wins), named in ``OUT/shipped.txt``; it and the supervised checkpoint are evaluated end to end by
   ``retrieval.evaluation.evaluate`` on the comparison split (``OUT/{supervised,shipped}/eval``).

Prints a time breakdown at the end (also in ``OUT/timings.json``).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from retrieval.cli import parse_config
from retrieval.train.config import pipeline_stages, stage_minutes
from rl.callbacks import selection_score
from rl.compare import compare, markdown
from rl.control import ControlConfig, train_control
from rl.export import export_encoder
from rl.features import cached_features
from rl.report import plot_rank_curves
from rl.scoring import evaluate_head, make_head
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
    checkpoint: str = ""
    """an existing supervised encoder folder: skip step 1 (it must not have seen the holdout photos)"""
    minutes_rl: float = 1.0
    """time budget of each PPO run and of each control run (3 rewards x 3 seeds + 3 controls = 12 min,
    so the Chair-V2 pipeline stays under 60 min with the 36 supervised minutes)"""
    seeds: int = 3
    """RL and control runs per reward variant, seeds 0..seeds-1 (the data split keeps --seed)"""
    rewards: tuple[str, ...] = ("rank", "rank+kendall", "rank+episode")
    """RL reward variants (rl.env.REWARD_MODES), each run for every seed"""
    hidden: int = 64
    """hidden width of the progress-aware head's MLP (RL and control alike; 0 = linear head)"""
    holdout_fraction: float = 0.2
    """share of train photos carved out as 'holdout' (never trained or selected on); 0 = compare on test"""
    encoder: str = "scratch"
    """encoder layout, a preset of retrieval.train.config.ENCODER_PRESETS: scratch, lit-mobilenet, lit-lite0 (README)"""
    jigsaw: bool = True
    """run the mixed-modal jigsaw stage first, with 10% of the budget out of edges' (measured in
    docs/results/chair-v2_pretrain_arms.md); skipped for layouts without one shared trunk (--encoder lit-*)"""
    quickdraw: str = "../shared/data/quickdraw-raw"
    """Quick, Draw! raw ndjson folder for sketch pre-training; the stage is skipped (its time given to
    the fine-grained stage) when the folder is absent or ''"""
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
    """``retrieval.train.pipeline.Config`` for this run (stages and minutes from the budget, layout from the preset)."""
    from retrieval.train.config import ENCODER_PRESETS, Config

    if cfg.encoder not in ENCODER_PRESETS:
        raise ValueError(f"unknown encoder preset {cfg.encoder!r}; choose one of {sorted(ENCODER_PRESETS)}")

    layout = ENCODER_PRESETS[cfg.encoder]
    stages = pipeline_stages(cfg.quickdraw, jigsaw=cfg.jigsaw and Config(**layout).shared_trunk)
    minutes = stage_minutes(stages, cfg.minutes_supervised)
    sup = Config(
        data=cfg.data,
        out=out,
        run_name="supervised",
        stages=stages,
        quickdraw=cfg.quickdraw,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        threads=cfg.threads,
        progress=cfg.progress,
        **minutes,
        **layout,
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


def rl_config(cfg: ReproduceConfig, out: Path, reward: str, seed: int) -> RLConfig:
    rl_cfg = RLConfig(
        data=cfg.data,
        val_fraction=cfg.val_fraction,
        holdout_fraction=cfg.holdout_fraction,
        out=str(out / "runs" / f"rl-{reward}-s{seed}"),
        cache_dir=str(out / "cache"),
        reward=reward,
        hidden=cfg.hidden,
        minutes=cfg.minutes_rl,
        seed=seed,
        threads=cfg.threads,
        progress=cfg.progress,
        export=False,
    )
    if cfg.tiny:
        rl_cfg = replace(rl_cfg, max_timesteps=1024, n_envs=4, n_steps=64, batch_size=64, eval_every=256)
    return rl_cfg


def control_config(cfg: ReproduceConfig, out: Path, seed: int) -> ControlConfig:
    control = ControlConfig(
        data=cfg.data,
        out=str(out / "runs" / f"control-s{seed}"),
        hidden=cfg.hidden,
        minutes=cfg.minutes_rl,
        seed=seed,
        threads=cfg.threads,
        progress=cfg.progress,
    )
    return replace(control, max_updates=40, eval_every=10) if cfg.tiny else control


def evaluate_checkpoint(cfg: ReproduceConfig, model: Path, out: Path, split: str) -> dict:
    """``retrieval.evaluation.evaluate.run`` of one checkpoint on ``split`` (ranks.csv, curves.png, metrics.json)."""
    from retrieval.evaluation.evaluate import EvalConfig, run

    return run(
        EvalConfig(
            data=cfg.data,
            model=model,
            out=out,
            split=split,
            val_fraction=cfg.val_fraction,
            seed=cfg.seed,
            threads=cfg.threads,
            holdout_fraction=cfg.holdout_fraction,
        )
    )


def reproduce(cfg: ReproduceConfig) -> dict:
    """Run everything; returns ``{"comparison": ..., "evaluated": {...}, "shipped": name, "timings": {...}}``."""
    from retrieval.data.datasets import open_dataset
    from retrieval.model.encoder import Encoder
    from retrieval.train.pipeline import run as train_supervised

    if cfg.tiny and cfg.data == "procedural":
        cfg = replace(cfg, data="procedural:photos=40,sketches=2", val_fraction=0.2, seeds=min(cfg.seeds, 2))
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    clock = Stopwatch()

    dataset = open_dataset(
        cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed, holdout_fraction=cfg.holdout_fraction
    )
    split = "holdout" if cfg.holdout_fraction > 0 else "test"
    if split not in dataset.splits():
        raise ValueError(f"{dataset.name} has no test split: give --holdout-fraction > 0 to compare on held-out photos")
    clock.lap("open data")
    if cfg.checkpoint:
        baseline_ckpt = Path(cfg.checkpoint)
    else:
        baseline_ckpt = train_supervised(supervised_config(cfg, out), dataset=dataset) / "best"
    clock.lap("supervised training")

    encoder = Encoder.load(baseline_ckpt)
    caches = {
        s: cached_features(encoder, dataset, s, out / "cache", progress=cfg.progress) for s in ("train", "val", split)
    }
    state = encoder.sketch_head_state()
    weight, bias = state["weight"].numpy(), state["bias"].numpy()
    clock.lap("RL features")

    methods, val_scores = train_heads(cfg, out, caches, weight, bias, clock)
    supervised = make_head(caches["train"], weight, bias)
    comparison = compare(caches[split], supervised, methods, control="control")
    clock.lap("comparison")

    # Ship the method with the best mean val score (never chosen on the comparison split), its best seed.
    val_scores["supervised"] = [selection_score(evaluate_head(caches["val"], supervised), "m@A+m@B")]
    comparison["val_score_mean"] = {name: float(np.mean(v)) for name, v in val_scores.items()}
    shipped = max(comparison["val_score_mean"], key=comparison["val_score_mean"].get)
    evaluated = ship(cfg, out, split, encoder, baseline_ckpt, shipped, methods[shipped], val_scores[shipped])
    clock.lap("evaluation")
    timings = {**clock.timings, "total": round(sum(clock.timings.values()), 1)}

    write_report(cfg, out, split, comparison, evaluated, shipped, timings)
    return {"comparison": comparison, "evaluated": evaluated, "shipped": shipped, "timings": timings}


class Stopwatch:
    """Wall-clock seconds per named phase: ``lap(name)`` charges the time since the last lap to ``name`` (adds up)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.clock = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.timings[name] = round(self.timings.get(name, 0.0) + now - self.clock, 1)
        self.clock = now


def train_heads(
    cfg: ReproduceConfig, out: Path, caches: dict, weight: np.ndarray, bias: np.ndarray, clock: Stopwatch
) -> tuple[dict[str, list], dict[str, list[float]]]:
    """Per seed, PPO per reward and the control from the supervised head: ``(heads, val scores)`` per method."""
    methods: dict[str, list] = {f"RL {r}": [] for r in cfg.rewards}
    methods["control"] = []
    val_scores: dict[str, list[float]] = {name: [] for name in methods}
    for seed in range(cfg.seeds):
        for reward in cfg.rewards:
            result = train_rl(
                rl_config(cfg, out, reward, seed),
                train_cache=caches["train"],
                val_cache=caches["val"],
                head=(weight, bias),
            )
            methods[f"RL {reward}"].append(result.head)
            val_scores[f"RL {reward}"].append(selection_score(result.best_metrics, "m@A+m@B"))
        clock.lap("RL training")
        control = train_control(control_config(cfg, out, seed), caches["train"], caches["val"], weight, bias)
        methods["control"].append(control.head)
        val_scores["control"].append(selection_score(control.best_metrics, "m@A+m@B"))
        clock.lap("control training")
    return methods, val_scores


def ship(
    cfg: ReproduceConfig,
    out: Path,
    split: str,
    encoder,
    baseline_ckpt: Path,
    shipped: str,
    heads: list,
    val_scores: list,
) -> dict:
    """Write ``OUT/shipped/encoder`` (the best-on-val seed of ``shipped``); evaluate it and the supervised one.

    Returns ``retrieval.evaluation.evaluate`` metrics by method name.
    """
    evaluated = {"supervised": evaluate_checkpoint(cfg, baseline_ckpt, out / "supervised" / "eval", split)}
    if shipped == "supervised":
        shutil.copytree(baseline_ckpt, out / "shipped" / "encoder", dirs_exist_ok=True)
    else:
        head = heads[int(np.argmax(val_scores))]
        kind = "control" if shipped == "control" else "rl"
        path = export_encoder(encoder, head, out / "shipped" / "encoder", asdict(cfg), kind=kind)
        evaluated[shipped] = evaluate_checkpoint(cfg, path, out / "shipped" / "eval", split)
    return evaluated


def write_report(
    cfg: ReproduceConfig, out: Path, split: str, comparison: dict, evaluated: dict, shipped: str, timings: dict
) -> None:
    """comparison.md / .json / .png, shipped.txt and timings.json in ``out``."""
    text = f"# Supervised vs RL vs fair control ({cfg.data})\n\n" + markdown(comparison, split, "control")
    text += _footer(cfg, comparison, shipped, timings)
    (out / "comparison.md").write_text(text)
    (out / "comparison.json").write_text(json.dumps(_strip_curves(comparison), indent=2))
    (out / "shipped.txt").write_text(shipped + "\n")
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    plot_rank_curves(
        {split: {name: m["curve"] for name, m in evaluated.items()}},
        out / "comparison.png",
        title=f"true-photo rank while drawing ({cfg.data}, {split})",
    )


def _strip_curves(obj):
    if isinstance(obj, dict):
        return {k: _strip_curves(v) for k, v in obj.items() if k != "curve"}
    if isinstance(obj, list):
        return [_strip_curves(v) for v in obj]
    return obj


def _footer(cfg: ReproduceConfig, comparison: dict, shipped: str, timings: dict) -> str:
    scores = ", ".join(f"{k} {v:.2f}" for k, v in comparison["val_score_mean"].items())
    lines = [
        "",
        f"- Runs: {cfg.seeds} seeds x ({', '.join(cfg.rewards)} + control), {cfg.minutes_rl} min each, "
        f"head MLP width {cfg.hidden}; supervised checkpoint: {cfg.checkpoint or 'trained by this run'}.",
        f"- Mean validation m@A+m@B of the selected heads: {scores}. Shipped (best on val, not on the "
        f"comparison split): **{shipped}**.",
        "- Time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(ReproduceConfig, argv)
    results = reproduce(cfg)
    out = Path(cfg.out)
    print((out / "comparison.md").read_text())
    print(f"wrote {out}/comparison.md, comparison.json, comparison.png, shipped.txt, supervised/eval/")
    return results


if __name__ == "__main__":
    main()
