"""The product pipeline, ``make reproduce``: the best model the data allows, and how good it truly is.

    python -m pipeline.reproduce --data ../shared/data/chairv2-train --out runs/repro     # ~55 min on 2 cores
    python -m pipeline.reproduce --data DIR --verdict runs/rl-study/verdict.json         # ship a head that won there
    python -m pipeline.reproduce --out runs/repro-tiny --tiny                             # ~1 min smoke run

1. The supervised encoder trains on every train photo except the val carve (no holdout: photos
   given to an RL comparison are photos the product never learns from) -> ``OUT/supervised/best``.
2. What ships: the supervised head, unless ``--verdict`` names a ``make rl-study`` verdict on the
   same data and carve whose ship rule passed a candidate (a margin fixed in advance, interval
   above 0, on a holdout that selected nothing). Then that method is trained again from this
   model's head (best seed of the study) and shipped. Validation never chooses between methods.
   ``OUT/shipped/encoder``, whose card records the decision and its evidence.
3. When the data has a test split, both models are evaluated on it and printed, never selected on:
   ``OUT/test/supervised/metrics.json``, ``OUT/test/shipped/metrics.json`` (with ranks.csv and
   curves.png). Val figures (the split that picked the checkpoint) are in ``OUT/val/...``.

Prints ``OUT/summary.md``; phase timings in ``OUT/timings.json``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from retrieval.cli import parse_config
from retrieval.data.splits import DataSplit, SplitMismatchError
from retrieval.evaluation.metrics import HEADLINE_METRICS
from retrieval.model.encoder import Encoder
from retrieval.provenance import Stopwatch, git_commit
from retrieval.train.config import SupervisedRecipe
from retrieval.train.pipeline import start_recipe_run, supervised_encoder
from rl.export import export_encoder
from rl.features import cached_features
from rl.heads import CONTROL, HeadBudget, train_head

SUPERVISED = "supervised"


@dataclass
class ReproduceConfig(SupervisedRecipe):
    """Train the product model from raw data, decide which head ships, evaluate on the test split."""

    out: str = "runs/reproduce"
    """output folder"""
    minutes_supervised: float = 48.0
    """time budget of supervised training, split over its stages (48 + evaluation keeps Chair-V2 under 60 min)"""
    verdict: str = ""
    """verdict.json of make rl-study on the same data: ship its winning head, retrained on this model ('' = supervised)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.has_holdout:
            held = f"holdout_fraction {self.holdout_fraction}, holdout_folds {self.holdout_folds}"
            raise SplitMismatchError(
                f"make reproduce trains the product on every train photo but the val carve, so its split has no "
                f"holdout ({held} here: from a --holdout flag, or a --checkpoint trained for make rl-study); a "
                "holdout belongs to make rl-study (python -m rl.head_study)"
            )


def read_verdict(cfg: ReproduceConfig) -> dict | None:
    """The ``--verdict`` file, refused unless it was measured on this data with this val carve."""
    if not cfg.verdict:
        return None
    verdict = json.loads(Path(cfg.verdict).read_text())
    # The study carved its holdout out of the photos left after the val carve: its val photos are
    # this run's when the data, the val share and the split seed agree.
    studied = DataSplit.from_record(verdict["split"]) or DataSplit()
    val_carve = replace(studied, holdout_fraction=0.0, holdout_folds=0, holdout_fold=0)
    if val_carve != cfg.data_split:
        raise ValueError(
            f"{cfg.verdict} was measured on another data or val carve ({val_carve}), this run uses "
            f"{cfg.data_split}: run make rl-study with the same --data and split"
        )
    return verdict


def ship(cfg: ReproduceConfig, out: Path, dataset, checkpoint: Path, verdict: dict | None) -> tuple[str, Path]:
    """Write ``OUT/shipped/encoder``: the supervised model, or the verdict's winning head on it."""
    encoder = Encoder.load(checkpoint)
    decision = {
        "rule": "the supervised head ships unless a make rl-study verdict passed another",
        "ship_rule": verdict["rule"] if verdict else None,  # the study's margin, metric, guards and level
        "verdict": None,
    }
    target = out / "shipped" / "encoder"
    shutil.rmtree(target, ignore_errors=True)
    if verdict is None or verdict["ship"] == SUPERVISED:
        if verdict is not None:
            decision["verdict"] = {"file": cfg.verdict, "ship": SUPERVISED, "candidates": _reasons(verdict)}
        encoder.save(target, encoder.card.with_entries(ship_decision=decision))
        return SUPERVISED, target
    method = verdict["ship"]
    studied = verdict["head_budget"]
    budget = HeadBudget(
        rewards=tuple(studied["rewards"]),
        seeds=1,
        minutes=studied["minutes"],
        hidden=studied["hidden"],
        threads=cfg.threads,
        smoke=cfg.tiny,
        progress=cfg.progress,
    )
    seed = int(np.argmax(verdict["val_scores"][method]))  # the study's best-on-val seed of the winning method
    caches = {s: cached_features(encoder, dataset, s, out / "cache", progress=cfg.progress) for s in ("train", "val")}
    state = encoder.sketch_head_state()
    head, _ = train_head(budget, method, seed, caches, (state["weight"].numpy(), state["bias"].numpy()), out / "runs")
    decision["verdict"] = {"file": cfg.verdict, "ship": method, "seed": seed, "candidates": _reasons(verdict)}
    kind = "control" if method == CONTROL else "rl"
    config = {"verdict": cfg.verdict, "method": method, "seed": seed}
    export_encoder(encoder, head, target, config, kind=kind, card_extra={"ship_decision": decision})
    return method, target


def _reasons(verdict: dict) -> dict:
    return {name: {"passed": c["passed"], "reason": c["reason"]} for name, c in verdict["candidates"].items()}


def evaluate(cfg: ReproduceConfig, model: Path, out: Path, split: str) -> dict:
    """``retrieval.evaluation.evaluate.run`` of one checkpoint on ``split`` (metrics.json, ranks.csv, curves.png)."""
    from retrieval.evaluation.evaluate import EvalConfig, run

    return run(
        EvalConfig(
            data=cfg.data,
            model=model,
            out=out,
            split=split,
            threads=cfg.threads,
        )
    )


def reproduce(cfg: ReproduceConfig) -> dict:
    """Run everything; returns ``{"shipped": name, "evaluated": {split: {model: metrics}}, "timings", "summary"}``."""
    cfg, out = start_recipe_run(cfg, cfg.out)
    clock = Stopwatch()
    verdict = read_verdict(cfg)
    dataset = cfg.data_split.open()
    checkpoint = supervised_encoder(cfg, out, dataset)
    clock.lap("supervised training")
    shipped, shipped_path = ship(cfg, out, dataset, checkpoint, verdict)
    clock.lap("shipping")
    evaluated: dict[str, dict] = {}
    for split in [s for s in ("val", "test") if s in dataset.splits()]:
        evaluated[split] = {SUPERVISED: evaluate(cfg, checkpoint, out / split / SUPERVISED, split)}
        evaluated[split]["shipped"] = evaluate(cfg, shipped_path, out / split / "shipped", split)
    clock.lap("evaluation")
    summary = write_summary(cfg, out, shipped, evaluated, clock.total())
    return {"shipped": shipped, "evaluated": evaluated, "timings": clock.total(), "summary": summary}


def write_summary(cfg: ReproduceConfig, out: Path, shipped: str, evaluated: dict, timings: dict) -> str:
    """Write summary.md, shipped.txt and timings.json into ``out``; returns summary.md's text."""
    lines = [
        f"# make reproduce: {cfg.data}",
        "",
        f"Shipped: **{shipped}** head ({'no verdict given' if not cfg.verdict else 'verdict ' + cfg.verdict}); "
        f"`{out}/shipped/encoder`. Commit {git_commit() or 'unknown'}.",
        "",
        "| split | model | photos | sketches | " + " | ".join(HEADLINE_METRICS) + " |",
        "|---|---|---:|---:|" + "---:|" * len(HEADLINE_METRICS),
    ]
    for split, models in evaluated.items():
        for name, m in models.items():
            cells = " | ".join(f"{m[k]:.2f}" for k in HEADLINE_METRICS)
            lines.append(f"| {split} | {name} | {m['n_gallery']} | {m['n_sketches']} | {cells} |")
    lines += [
        "",
        "val picked the checkpoint (its figures are optimistic); test selected nothing. Percent; A@k on the "
        "complete sketch, m@A / m@B over the 17 drawing steps.",
        "",
        "- Time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
        "",
    ]
    text = "\n".join(lines)
    (out / "summary.md").write_text(text)
    (out / "shipped.txt").write_text(shipped + "\n")
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    return text


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(ReproduceConfig, argv, description=__doc__)
    results = reproduce(cfg)
    print(f"{results['summary']}\n\nsummary.md, shipped.txt and timings.json in {cfg.out}")
    return results


if __name__ == "__main__":
    main()
