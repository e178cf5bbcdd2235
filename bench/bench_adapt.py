"""Does ``python -m retrieval.adapt`` help on a person's own photos? Before/after on real sketches, paired.

"A person's folder" is one cross-validation fold of the Chair-V2 train photos (``DataSplit`` with
``--folds`` holdout folds, no val carve): the start model never saw these photos, and the
adaptation sees only the photos, never a sketch. The human sketches of those photos are the
queries, ranked among the fold's photos at the 17 point cuts, before (the start model) and after
(the adapted one). For every fold and seed the run adapts with a fixed **step** budget (equal
compute whatever the machine's load; minutes are recorded too), and the paired hierarchical
bootstrap (``retrieval.evaluation.bootstrap``: runs, then photos) gives the intervals of the gain.

Forgetting is measured on the start model's own kind of data: procedural sketches of chairs it
never trained on (``--forgetting-data``), before and after.

    nice -n 19 .venv/bin/python bench/bench_adapt.py --folds 3 --seeds 1 --steps 150
    .venv/bin/python bench/bench_adapt.py --report-only

Resumable: a run's ``result.json`` is reused. Writes bench/results/adapt.md and .json.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from common import RESULTS, header_lines, machine_info, write_markdown
from tqdm import tqdm

from retrieval.adapt.run import AdaptConfig, adapt
from retrieval.cli import parse_config
from retrieval.data.datasets import open_dataset
from retrieval.data.splits import DataSplit
from retrieval.evaluation.bootstrap import hierarchical_bootstrap, minimal_detectable_effect, paired_runs
from retrieval.evaluation.metrics import HEADLINE_METRICS, per_sketch
from retrieval.evaluation.protocol import evaluate_split
from retrieval.model.encoder import Encoder
from retrieval.runtime import set_threads


@dataclass
class AdaptBenchConfig:
    """Before/after adaptation on folds of real photos with their human sketches."""

    data: str = "../shared/data/chairv2-train"
    """QMUL-layout data whose train photos are dealt into folds (one fold = one person's folder)"""
    model: str = "assets/model"
    """start checkpoint"""
    folds: int = 3
    """folds of the train photos (each ~100 Chair-V2 photos)"""
    seeds: int = 1
    """adaptation seeds per fold"""
    steps: int = 150
    """adaptation steps per run (equal compute; minutes are recorded)"""
    forgetting_data: str = "procedural:photos=100,sketches=2,seed=99"
    """the start model's kind of data, unseen by it (its train split is scored before/after)"""
    out: str = "runs/bench_adapt"
    """folder of the runs (photo folders, adapted models, result.json)"""
    report: str = str(RESULTS / "adapt")
    """report path without suffix"""
    threads: int = 2
    """torch threads"""
    report_only: bool = False
    """only write the report from finished runs"""


def fold_dataset(cfg: AdaptBenchConfig, fold: int):
    return DataSplit(data=cfg.data, val_fraction=0.0, holdout_folds=cfg.folds, holdout_fold=fold).open()


def photo_folder(cfg: AdaptBenchConfig, fold: int) -> Path:
    """The fold's photos copied into a folder of their own (what a person would point --photos at)."""
    folder = Path(cfg.out) / f"photos_f{fold}"
    if not folder.is_dir():
        dataset = fold_dataset(cfg, fold)
        files = dataset.base  # the QMUL folder under the holdout carve: it knows where each photo's file is
        tmp = folder.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for pid in dataset.photo_ids("holdout"):
            shutil.copy2(files.photo_path(pid), tmp / files.photo_path(pid).name)
        tmp.rename(folder)
    return folder


def scored(encoder: Encoder, dataset, split: str) -> dict:
    """Per-sketch metrics and each sketch's photo, ranked among the split's photos at the 17 cuts."""
    result = evaluate_split(encoder, dataset, split)
    per = per_sketch(np.asarray(result.ranks, dtype=np.float64), result.summary["n_gallery"])
    return {
        "summary": {k: result.summary[k] for k in HEADLINE_METRICS},
        "per_sketch": {k: per[k].tolist() for k in HEADLINE_METRICS},
        "photo_ids": [r.photo_id for r in dataset.sketches(split)],
    }


def before(cfg: AdaptBenchConfig, fold: int) -> dict:
    """The start model on the fold (the same for every seed), cached."""
    path = Path(cfg.out) / f"before_f{fold}.json"
    if not path.is_file():
        path.write_text(json.dumps(scored(Encoder.load(cfg.model), fold_dataset(cfg, fold), "holdout")))
    return json.loads(path.read_text())


def run_one(cfg: AdaptBenchConfig, fold: int, seed: int) -> dict:
    folder = Path(cfg.out) / f"adapted_f{fold}_s{seed}"
    done = folder.with_suffix(".json")
    if done.is_file():
        return json.loads(done.read_text())
    photos = photo_folder(cfg, fold)
    load_before = round(__import__("os").getloadavg()[0], 2)
    started = time.monotonic()
    adapt(AdaptConfig(model=cfg.model, photos=str(photos), out=str(folder), minutes=0, steps=cfg.steps, seed=seed))
    seconds = time.monotonic() - started
    adapted = Encoder.load(folder)
    forgetting = open_dataset(cfg.forgetting_data)
    result = {
        "fold": fold,
        "seed": seed,
        "steps": adapted.meta["card"]["adaptation"]["steps"],
        "train_minutes": round(seconds / 60, 2),
        "load_avg_1m": {"start": load_before, "end": round(__import__("os").getloadavg()[0], 2)},
        "after": scored(adapted, fold_dataset(cfg, fold), "holdout"),
        "forgetting_after": scored(adapted, forgetting, "train")["summary"],
    }
    done.write_text(json.dumps(result))
    return result


def report(cfg: AdaptBenchConfig, runs: list[dict], command: str) -> dict:
    befores = [before(cfg, r["fold"]) for r in runs]
    pairs = paired_runs(
        [r["after"]["per_sketch"] for r in runs], [b["per_sketch"] for b in befores], [b["photo_ids"] for b in befores]
    )
    gain = hierarchical_bootstrap(pairs, HEADLINE_METRICS)
    forgetting_before = scored(Encoder.load(cfg.model), open_dataset(cfg.forgetting_data), "train")["summary"]
    mean = lambda rows, k: float(np.mean([row[k] for row in rows]))  # noqa: E731
    lines = header_lines("Sketch-free adaptation to a photo folder (retrieval.adapt)", command, machine_info())
    lines += [
        "",
        f"Start model `{cfg.model}`; each run adapts to one fold of `{cfg.data}` train photos (~100) for "
        f"{cfg.steps} steps, then ranks the human sketches of those photos among them (17 cuts).",
        "",
        "| metric | before | after | gain [95 % interval] | MDE |",
        "|---|---:|---:|---:|---:|",
    ]
    for k in HEADLINE_METRICS:
        g = gain[k]
        lines.append(
            f"| {k} | {mean([b['summary'] for b in befores], k):.2f} | {mean([r['after']['summary'] for r in runs], k):.2f} "
            f"| {g['delta']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}] | {minimal_detectable_effect(g['se']):.2f} |"
        )
    lines += ["", "Forgetting (the start model's kind of data, unseen chairs: " + cfg.forgetting_data + ")", ""]
    lines += ["| metric | before | after (mean of runs) |", "|---|---:|---:|"]
    lines += [
        f"| {k} | {forgetting_before[k]:.2f} | {mean([r['forgetting_after'] for r in runs], k):.2f} |"
        for k in HEADLINE_METRICS
    ]
    lines += [
        "",
        "Every run:",
        "",
        "| fold | seed | steps | minutes | load start/end | A@1 | A@10 | m@A | m@B |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in runs:
        s = r["after"]["summary"]
        load = r["load_avg_1m"]
        lines.append(
            f"| {r['fold']} | {r['seed']} | {r['steps']} | {r['train_minutes']} | {load['start']}/{load['end']} "
            f"| {s['A@1']:.2f} | {s['A@10']:.2f} | {s['m@A']:.2f} | {s['m@B']:.2f} |"
        )
    write_markdown(Path(cfg.report + ".md"), lines)
    data = {
        "config": asdict(cfg),
        "gain": gain,
        "forgetting_before": forgetting_before,
        "runs": [{k: v for k, v in r.items() if k != "after"} | {"after": r["after"]["summary"]} for r in runs],
        "before": [b["summary"] for b in befores],
        "machine": machine_info(),
        "command": command,
    }
    Path(cfg.report + ".json").write_text(json.dumps(data, indent=1))
    return data


def main(argv: list[str] | None = None) -> dict:
    import sys

    cfg = parse_config(AdaptBenchConfig, argv, description=__doc__)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    plan = [(fold, seed) for seed in range(cfg.seeds) for fold in range(cfg.folds)]
    runs = []
    for fold, seed in tqdm(plan, desc="adaptation runs"):
        done = Path(cfg.out) / f"adapted_f{fold}_s{seed}.json"
        if cfg.report_only and not done.is_file():
            continue
        before(cfg, fold)
        runs.append(run_one(cfg, fold, seed))
    command = "python bench/bench_adapt.py " + " ".join(sys.argv[1:] if argv is None else argv)
    return report(cfg, runs, command)


if __name__ == "__main__":
    main()
