"""Accuracy benchmark with power: k-fold cross-validation over train photos, equal steps, hierarchical bootstrap.

A lever (a pre-training stage, a stage order, a loss) is judged here, not on the 97-sketch val split
that also picks checkpoints. For each arm, fold and seed:

1. the train photos left after the val carve are dealt into ``--folds`` folds (seeded, by photo);
   the fold is the ``holdout``: no sketch, photo or edge map of it is trained on or selected on;
2. the arm's stages run for a fixed number of **steps** each (equal compute, logged per run; machine
   load changes only the wall time), keeping the best checkpoint on val, as ``make reproduce`` does;
3. that checkpoint ranks the fold's sketches among the fold's photos at the 17 cuts.

Every photo of the train split is tested once per seed. An arm is compared with ``--base`` run by
run (same fold, same seed, same sketches): the hierarchical bootstrap resamples runs, then photos
within runs (``retrieval.evaluation.bootstrap``), and the minimal detectable effect (80 % power,
5 % level) says what this budget can resolve. A lever is kept only if its m@B interval lies above
0 with no significant loss elsewhere (``retrieval.evaluation.ship_rule.judge`` with margin 0).

    .venv/bin/python -m bench.accuracy.bench_accuracy --arms base jigsaw quickdraw_first --folds 5 --seeds 2
    .venv/bin/python -m bench.accuracy.bench_accuracy --device cuda --parallel 8 --finegrained-steps 2500 ...  # a GPU
    .venv/bin/python -m bench.accuracy.bench_accuracy --report-only --out runs/bench_accuracy   # tables from finished runs

Runs are resumable (a finished run's ``result.json`` is reused). Writes ``<report>.md`` and ``.json``.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.lib.common import header_lines, machine_info
from retrieval.cli import parse_config
from retrieval.evaluation.bootstrap import hierarchical_bootstrap, minimal_detectable_effect, paired_runs
from retrieval.evaluation.metrics import HEADLINE_METRICS, per_sketch
from retrieval.evaluation.ship_rule import ShipRule, judge
from retrieval.runtime import set_threads


@dataclass
class AccuracyBenchConfig:
    """Cross-validated, equal-step comparison of pipeline arms."""

    data: str = "../shared/data/chairv2-train"
    """dataset spec (its train split is cross-validated; a test split is never touched)"""
    out: str = "runs/bench_accuracy"
    """folder of the runs (one sub-folder per arm, fold and seed)"""
    report: str = "docs/results/accuracy_bench"
    """report path without suffix: <report>.md and <report>.json"""
    arms: tuple[str, ...] = ("base", "jigsaw")
    """arms to run (see ARMS): base, jigsaw, quickdraw_first, complete_only"""
    base: str = "base"
    """the arm every other is compared with"""
    folds: int = 5
    """cross-validation folds of the train photos left after the val carve"""
    seeds: int = 1
    """training seeds per fold (run seed = seed index; every photo is tested once per seed)"""
    edges_steps: int = 300
    """steps of the edges stage (the jigsaw arm spends the same time as 0.7x jigsaw + 0.6x edges steps)"""
    quickdraw_steps: int = 150
    """steps of the quickdraw stage"""
    finegrained_steps: int = 600
    """steps of the finegrained stage"""
    val_fraction: float = 0.1
    """val carve (checkpoint selection), the same for every fold"""
    split_seed: int = 0
    """seed of the val carve and of the folds"""
    parallel: int = 2
    """runs at once (processes)"""
    threads: int = 1
    """torch threads per run"""
    device: str = "cpu"
    """torch device of training (cuda on a GPU machine); evaluation stays on the CPU"""
    report_only: bool = False
    """only summarise the finished runs under --out"""


def arm_stages(arm: str, cfg: AccuracyBenchConfig) -> tuple[list[tuple[str, int]], dict]:
    """``([(stage, steps), ...], extra Config fields)`` of an arm at this budget."""
    edges, quickdraw, finegrained = cfg.edges_steps, cfg.quickdraw_steps, cfg.finegrained_steps
    plans = {
        # make reproduce's order without the jigsaw stage
        "base": ([("edges", edges), ("quickdraw", quickdraw), ("finegrained", finegrained)], {}),
        # 0.7 E jigsaw + 0.6 E edges steps take the time of E edges steps (a jigsaw step costs ~0.55 of an
        # edges step, docs/results/chair-v2_jigsaw.md): the jigsaw share comes out of the edges budget
        "jigsaw": (
            [("jigsaw", round(0.7 * edges)), ("edges", round(0.6 * edges)), ("quickdraw", quickdraw)]
            + [("finegrained", finegrained)],
            {},
        ),
        "quickdraw_first": ([("quickdraw", quickdraw), ("edges", edges), ("finegrained", finegrained)], {}),
        # the paper's baseline: complete sketches only in the finegrained stage
        "complete_only": (
            [("edges", edges), ("quickdraw", quickdraw), ("finegrained", finegrained)],
            {"partial_prob": 0.0},
        ),
    }
    if arm not in plans:
        raise ValueError(f"unknown arm {arm!r}; choose from {sorted(plans)}")
    return plans[arm]


def run_name(arm: str, fold: int, seed: int) -> str:
    return f"{arm}__f{fold}__s{seed}"


def run_one(cfg: AccuracyBenchConfig, arm: str, fold: int, seed: int) -> dict:
    """Train one arm on one fold and seed, score its best-on-val checkpoint on the fold; resumable."""

    from retrieval.data.splits import DataSplit
    from retrieval.evaluation.protocol import evaluate_split
    from retrieval.model.encoder import Encoder
    from retrieval.train.config import Config
    from retrieval.train.pipeline import run as train

    folder = Path(cfg.out) / run_name(arm, fold, seed)
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    set_threads(cfg.threads)
    plan, extra = arm_stages(arm, cfg)
    split = DataSplit(cfg.data, cfg.val_fraction, holdout_folds=cfg.folds, holdout_fold=fold, split_seed=cfg.split_seed)
    train_cfg = Config(
        **asdict(split),
        out=folder,
        run_name="train",
        stages=tuple(stage for stage, _ in plan),
        **{f"steps_{stage}": steps for stage, steps in plan},
        **{f"minutes_{stage}": 10_000.0 for stage, _ in plan},  # steps decide, never the clock
        seed=seed,
        threads=cfg.threads,
        device=cfg.device,
        progress=False,
        **extra,
    )
    started = time.monotonic()
    run_dir = train(train_cfg)
    seconds = time.monotonic() - started
    encoder = Encoder.load(run_dir / "best")
    dataset = split.open()
    result = evaluate_split(encoder, dataset, "holdout", steps="points", progress=False)
    ranks = np.asarray(result.ranks, dtype=np.float64)
    np.save(folder / "ranks.npy", ranks)
    card = encoder.meta["card"]
    out = {
        "arm": arm,
        "fold": fold,
        "seed": seed,
        "photo_ids": [r.photo_id for r in dataset.sketches("holdout")],
        "n_gallery": len(dataset.photo_ids("holdout")),
        "steps_per_stage": json.loads((run_dir / "last" / "model.json").read_text())["card"]["steps_per_stage"],
        "planned_steps": dict(plan),
        "selected_at": {"stage": card.get("stage"), "global_step": card.get("global_step")},
        "train_seconds": round(seconds, 1),
        "metrics": {k: result.summary[k] for k in HEADLINE_METRICS},
    }
    done.write_text(json.dumps(out, indent=1))
    return out


def load_runs(cfg: AccuracyBenchConfig) -> list[dict]:
    runs = []
    for path in sorted(Path(cfg.out).glob("*__f*__s*/result.json")):
        run = json.loads(path.read_text())
        run["ranks"] = np.load(path.parent / "ranks.npy")
        runs.append(run)
    return runs


def compare_arms(runs: list[dict], base: str) -> dict:
    """Per arm: pooled metrics and per-run rows; per other arm: intervals and MDE against ``base``."""
    by_key = {(r["arm"], r["fold"], r["seed"]): r for r in runs}
    arms = list(dict.fromkeys(r["arm"] for r in runs))
    summary: dict = {"arms": {}, "vs_base": {}}
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        per_run = [per_sketch(r["ranks"], r["n_gallery"]) for r in mine]
        pooled = {k: float(np.mean(np.concatenate([p[k] for p in per_run]))) for k in HEADLINE_METRICS}
        summary["arms"][arm] = {
            "pooled": pooled,
            "runs": [{**r["metrics"], "fold": r["fold"], "seed": r["seed"]} for r in mine],
        }
        if arm == base:
            continue
        pairs = [(r, by_key[(base, r["fold"], r["seed"])]) for r in mine if (base, r["fold"], r["seed"]) in by_key]
        if not pairs:
            continue
        diffs = paired_runs(
            [per_sketch(a["ranks"], a["n_gallery"]) for a, _ in pairs],
            [per_sketch(b["ranks"], b["n_gallery"]) for _, b in pairs],
            [a["photo_ids"] for a, _ in pairs],
        )
        intervals = hierarchical_bootstrap(diffs, HEADLINE_METRICS)
        for value in intervals.values():
            value["mde"] = minimal_detectable_effect(value["se"])
        kept, reason = judge(ShipRule(margin=0.0), intervals)
        summary["vs_base"][arm] = {"intervals": intervals, "kept": kept, "reason": reason, "pairs": len(pairs)}
    return summary


def markdown(cfg: AccuracyBenchConfig, summary: dict, runs: list[dict], machine: dict, command: str) -> str:
    lines = header_lines(
        "Accuracy benchmark: k-fold cross-validation, equal steps, hierarchical bootstrap", command, machine
    )
    budget = {arm: " → ".join(f"{s} {n}" for s, n in arm_stages(arm, cfg)[0]) for arm in summary["arms"]}
    seconds = [r["train_seconds"] for r in runs]
    lines += [
        f"- data: `{cfg.data}`, {cfg.folds} folds of the train photos left after the val carve "
        f"({cfg.val_fraction:.0%}, split seed {cfg.split_seed}), {cfg.seeds} seed(s) per fold; device {cfg.device}, "
        f"{cfg.threads} thread(s) per run, {cfg.parallel} at once",
        "- budget (steps per stage): " + "; ".join(f"`{a}`: {b}" for a, b in budget.items()),
        f"- training time per run: median {np.median(seconds):.0f} s (min {min(seconds):.0f}, max {max(seconds):.0f})",
        "",
        "## Pooled over folds (each train photo's sketches scored once per seed, gallery = its fold's photos)",
        "",
        "| arm | runs | " + " | ".join(HEADLINE_METRICS) + " |",
        "|---|---:|" + "---:|" * len(HEADLINE_METRICS),
    ]
    for arm, entry in summary["arms"].items():
        cells = " | ".join(f"{entry['pooled'][k]:.2f}" for k in HEADLINE_METRICS)
        lines.append(f"| `{arm}` | {len(entry['runs'])} | {cells} |")
    lines += [
        "",
        f"## Against `{cfg.base}`, paired run by run",
        "",
        "Δ = arm − base, 95 % interval from a hierarchical bootstrap (runs, then photos within runs; "
        "10,000 resamples). MDE = the smallest true Δ this budget detects with 80 % power at the 5 % level.",
        "",
        "| arm | pairs | " + " | ".join(f"Δ{k} [95 %] (MDE)" for k in HEADLINE_METRICS) + " | verdict |",
        "|---|---:|" + "---|" * len(HEADLINE_METRICS) + "---|",
    ]
    for arm, entry in summary["vs_base"].items():
        cells = " | ".join(
            f"{v['delta']:+.2f} [{v['low']:+.2f}, {v['high']:+.2f}] ({v['mde']:.2f})"
            for v in (entry["intervals"][k] for k in HEADLINE_METRICS)
        )
        verdict = "**wins**" if entry["kept"] else "no win"
        lines.append(f"| `{arm}` | {entry['pairs']} | {cells} | {verdict}: {entry['reason']} |")
    lines += ["", "## Every run", "", "| arm | fold | seed | " + " | ".join(HEADLINE_METRICS) + " | steps | train s |"]
    lines.append("|---|---:|---:|" + "---:|" * len(HEADLINE_METRICS) + "---|---:|")
    for r in runs:
        steps = ", ".join(f"{s} {n}" for s, n in r["steps_per_stage"].items())
        cells = " | ".join(f"{r['metrics'][k]:.2f}" for k in HEADLINE_METRICS)
        lines.append(f"| `{r['arm']}` | {r['fold']} | {r['seed']} | {cells} | {steps} | {r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(AccuracyBenchConfig, argv, description=__doc__)
    machine = machine_info()
    jobs = [(arm, fold, seed) for seed in range(cfg.seeds) for fold in range(cfg.folds) for arm in cfg.arms]
    if not cfg.report_only:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        context = multiprocessing.get_context("spawn")  # fresh torch per run: no state shared between arms
        with ProcessPoolExecutor(max_workers=cfg.parallel, mp_context=context) as pool:
            futures = [pool.submit(run_one, cfg, *job) for job in jobs]
            for future in tqdm(futures, desc="runs", unit="run"):
                future.result()
    runs = load_runs(cfg)
    if not runs:
        raise SystemExit(f"no finished runs under {cfg.out}")
    summary = compare_arms(runs, cfg.base)
    command = "bench/accuracy/bench_accuracy.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    report = Path(cfg.report)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.with_suffix(".md").write_text(markdown(cfg, summary, runs, machine, command))
    public = [{k: v for k, v in r.items() if k not in ("ranks", "photo_ids")} for r in runs]
    report.with_suffix(".json").write_text(
        json.dumps({"config": asdict(cfg), "machine": machine, "summary": summary, "runs": public}, indent=1)
    )
    print(report.with_suffix(".md").read_text())
    return summary


if __name__ == "__main__":
    main()
