"""Does any head beat the supervised one? ``make rl-study``: the evidence the product pipeline ships by.

    python -m rl.head_study --data ../shared/data/chairv2-train --out runs/rl-study      # ~50 min on 2 cores
    python -m rl.head_study --data DIR --partial-prob 0 --out runs/rl-complete            # the paper's baseline
    python -m rl.head_study --data DIR --checkpoint SUPERVISED_DIR ...                    # skip step 1

1. A ``holdout`` share of the train photos is carved out (``--holdout-fraction``); a supervised
   encoder trains on the rest (or ``--checkpoint``: the study takes its card's split, and split flags
   given must agree with it).
   Its models are this study's, never the product's: ``make reproduce`` trains on every train photo.
2. From the supervised head, PPO per reward and the fair control (the same head trained by
   supervised gradient descent for the same minutes) train for each seed; each keeps its best
   state on val (``rl.heads``).
3. Every head ranks the holdout sketches (which selected nothing). ``rl.compare`` gives per-seed
   intervals; the ship rule (``retrieval.evaluation.ship_rule``: a margin fixed in advance, a
   hierarchical bootstrap over photos and seeds, ties to the supervised head) decides.

Writes ``OUT/verdict.json`` (what ships, the rule, every candidate's intervals and how to train the
winner), ``OUT/comparison.md`` / ``.json`` / ``.png`` and ``OUT/timings.json``. ``make reproduce
ARGS="--verdict OUT/verdict.json"`` retrains a winning head on the product model; without a winner
the product ships its supervised head.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from retrieval.cli import parse_config
from retrieval.evaluation.metrics import per_sketch
from retrieval.evaluation.ship_rule import ShipRule, decide
from retrieval.model.encoder import Encoder
from retrieval.provenance import Stopwatch, git_commit
from retrieval.train.config import SupervisedRecipe
from retrieval.train.pipeline import start_recipe_run, supervised_encoder
from rl.compare import compare, markdown
from rl.features import cached_features
from rl.heads import CONTROL, HeadBudget, train_heads
from rl.report import plot_rank_curves
from rl.scoring import make_head, step_ranks


@dataclass
class HeadStudyConfig(SupervisedRecipe):
    """Supervised vs RL rewards vs fair control on a holdout no model saw; the ship verdict."""

    out: str = "runs/rl-study"
    """output folder"""
    minutes_supervised: float = 36.0
    """time budget of supervised training (36 + 12 RL/control minutes + features keep Chair-V2 near 55 min)"""
    holdout_fraction: float = 0.2
    """share of train photos (after the val carve) carved out as the holdout the heads are judged on"""
    partial_prob: float = 0.5
    """share of supervised training sketches cut at a random point (0 = complete sketches only, the paper's baseline)"""
    rewards: tuple[str, ...] = ("rank", "rank+kendall", "rank+episode")
    """RL reward variants (rl.env.REWARD_MODES)"""
    seeds: int = 3
    """runs per method (seeds 0..seeds-1)"""
    minutes_rl: float = 1.0
    """budget of each PPO run and each control run"""
    hidden: int = 64
    """hidden width of the progress-aware head's MLP (0 = linear)"""
    margin: float = 1.0
    """ship rule: m@B points a head must win by, fixed before the run"""

    @property
    def budget(self) -> HeadBudget:
        return HeadBudget(
            self.rewards, self.seeds, self.minutes_rl, self.hidden, self.threads, self.tiny, self.progress
        )


def study(cfg: HeadStudyConfig) -> dict:
    """Run the study; returns ``{"comparison", "verdict", "timings", "report"}`` (report: comparison.md's text)."""
    cfg, out = start_recipe_run(cfg, cfg.out)
    clock = Stopwatch()
    dataset = cfg.data_split.open()
    checkpoint = supervised_encoder(cfg, out, dataset, partial_prob=cfg.partial_prob)
    clock.lap("supervised training")

    encoder = Encoder.load(checkpoint)
    caches = {
        s: cached_features(encoder, dataset, s, out / "cache", progress=cfg.progress)
        for s in ("train", "val", "holdout")
    }
    state = encoder.sketch_head_state()
    head = (state["weight"].numpy(), state["bias"].numpy())
    clock.lap("features")
    heads, val_scores = train_heads(cfg.budget, caches, head, out / "runs")
    clock.lap("head training")

    holdout = caches["holdout"]
    supervised = make_head(caches["train"], *head)
    comparison = compare(holdout, supervised, heads, control=CONTROL)
    n = len(holdout.photo_ids)
    photos = [[holdout.photo_ids[i] for i in holdout.true_index]]
    decision = decide(
        ShipRule(margin=cfg.margin),
        [per_sketch(step_ranks(holdout, supervised), n)],
        {name: [per_sketch(step_ranks(holdout, h), n) for h in per_seed] for name, per_seed in heads.items()},
        photos,
        "holdout",
    )
    clock.lap("comparison")
    verdict = {
        **decision.to_json(),
        "split": cfg.data_split.record(dataset),
        "supervised": {"checkpoint": str(checkpoint), "partial_prob": cfg.partial_prob, "encoder": cfg.encoder},
        "head_budget": asdict(cfg.budget),
        "val_scores": val_scores,
        "git_commit": git_commit(),
    }
    report = write_report(cfg, out, comparison, verdict, clock.total())
    return {"comparison": comparison, "verdict": verdict, "timings": clock.total(), "report": report}


def write_report(cfg: HeadStudyConfig, out: Path, comparison: dict, verdict: dict, timings: dict) -> str:
    """Write the study's files into ``out``; returns comparison.md's text."""
    text = f"# Supervised vs RL vs fair control ({cfg.data}, partial_prob {cfg.partial_prob})\n\n"
    text += markdown(comparison, "holdout", CONTROL) + "\n" + verdict_markdown(verdict)
    text += "\n- Time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + "\n"
    (out / "comparison.md").write_text(text)
    (out / "comparison.json").write_text(json.dumps(_without_curves(comparison), indent=2))
    (out / "verdict.json").write_text(json.dumps(verdict, indent=2))
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    curves = {"supervised": comparison["supervised"]["curve"]}
    curves |= {name: entry["seeds"][0]["metrics"]["curve"] for name, entry in comparison["methods"].items()}
    plot_rank_curves({"holdout": curves}, out / "comparison.png", title=f"true-photo rank while drawing ({cfg.data})")
    return text


def verdict_markdown(verdict: dict) -> str:
    """The ship rule's table: each candidate against the supervised head, photos and seeds resampled."""
    rule = verdict["rule"]
    judged = (rule["metric"], *rule["guards"])  # the metrics the rule decided on, its own first
    lines = [
        f"## Ship rule: {rule['metric']} must rise by ≥ {rule['margin']:+.2f} with its {rule['level']:.0%} interval "
        f"above 0, no significant loss on {', '.join(rule['guards'])}; otherwise the supervised head ships",
        "",
        "Intervals: hierarchical bootstrap over seeds, then photos (all of a photo's sketches together).",
        "",
        "| candidate | " + " | ".join(f"Δ{k} [95 %]" for k in judged) + " | passes? |",
        "|---|" + "---|" * len(judged) + "---|",
    ]
    for name, entry in verdict["candidates"].items():
        iv = entry["vs_supervised"]
        cells = " | ".join(f"{iv[k]['delta']:+.2f} [{iv[k]['low']:+.2f}, {iv[k]['high']:+.2f}]" for k in judged)
        lines.append(f"| {name} | {cells} | {'yes' if entry['passed'] else 'no'}: {entry['reason']} |")
    lines += ["", f"**Ships: {verdict['ship']}**", ""]
    return "\n".join(lines)


def _without_curves(obj):
    if isinstance(obj, dict):
        return {k: _without_curves(v) for k, v in obj.items() if k != "curve"}
    if isinstance(obj, list):
        return [_without_curves(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> dict:
    result = study(parse_config(HeadStudyConfig, argv, description=__doc__))
    print(result["report"])
    return result


if __name__ == "__main__":
    main()
