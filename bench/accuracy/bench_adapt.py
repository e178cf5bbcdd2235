"""Does ``python -m retrieval.adapt`` help on a person's own photos? Before/after on real sketches, paired.

"A person's folder" is one cross-validation fold of the Chair-V2 train photos (``DataSplit`` with
``--folds`` holdout folds, no val carve): the start model never saw these photos, and the
adaptation sees only the photos, never a sketch. The human sketches of those photos are the
queries, ranked among the fold's photos at the 17 point cuts, before (the start model) and after
(the adapted one). For every fold and seed the run adapts with a fixed **step** budget (equal
compute whatever the machine's load; minutes are recorded too), and the paired hierarchical
bootstrap (``retrieval.evaluation.bootstrap``: runs, then photos) gives the intervals of the gain.

Forgetting is measured on the start model's own kind of data: procedural sketches of chairs it
never trained on (``--forgetting-data``), or, for a model trained on ``--data``, its own val split
(``--forgetting-data val``), before and after.

A start model trained on ``--data`` itself (``--model`` with ``{fold}``: one model per fold) must have
held out exactly the fold it is adapted to: the fold is then carved as its card's split records (val
carve included), and a model whose card shows another carve is refused, so the adaptation's photos
and the queries' sketches are ones it never trained on.

    nice -n 19 .venv/bin/python -m bench.accuracy.bench_adapt --folds 3 --seeds 2 --steps 250
    nice -n 19 .venv/bin/python -m bench.accuracy.bench_adapt --folds 5 --fold-list 0,1,2 --seeds 1 --steps 250 \
        --model 'runs/bench_accuracy/base__f{fold}__s0/train/best' --forgetting-data val \
        --out runs/bench_adapt_chairv2 --report bench/results/adapt_from_chairv2
    .venv/bin/python -m bench.accuracy.bench_adapt --report-only

Resumable: a run's ``result.json`` is reused. Writes bench/results/adapt.md and .json.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.lib.common import RESULTS, Target, header_lines, machine_info, target_table, write_markdown
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
    """start checkpoint; "{fold}" in it stands for the fold (a model per fold that held that fold out)"""
    folds: int = 3
    """folds of the train photos (each ~100 Chair-V2 photos)"""
    fold_list: str = ""
    """comma-separated folds to run (default: all --folds)"""
    seeds: int = 1
    """adaptation seeds per fold"""
    steps: int = 150
    """adaptation steps per run (equal compute; minutes are recorded)"""
    forgetting_data: str = "procedural:photos=100,sketches=2,seed=99"
    """the start model's kind of data, unseen by it (its train split is scored before/after); "val": the
    start model's own val split of --data (a model trained on --data)"""
    out: str = "runs/bench_adapt"
    """folder of the runs (photo folders, adapted models, result.json)"""
    report: str = str(RESULTS / "adapt")
    """report path without suffix"""
    threads: int = 2
    """torch threads"""
    report_only: bool = False
    """only write the report from finished runs"""
    target_after: str = ""
    """targets on the mean after adaptation, e.g. "A@10>=75,m@B>=28" (issue 23, from assets/model)"""
    target_gain: str = ""
    """targets on the paired gain, e.g. "A@1>=3,m@B>=0" (issue 23, from a model trained on --data)"""


def start_model(cfg: AdaptBenchConfig, fold: int) -> str:
    return cfg.model.replace("{fold}", str(fold))


def fold_split(cfg: AdaptBenchConfig, fold: int) -> DataSplit:
    """The carve whose holdout is the fold: the start model's own when it was trained on ``--data``.

    A model that trained on ``--data`` saw its train and val photos' sketches, so only its own holdout
    fold is an unseen gallery: the fold must be the one its card records (refused otherwise). A model
    trained on other data gets plain folds of all train photos (no val carve).
    """
    card = Encoder.load(start_model(cfg, fold)).meta.get("card") or {}
    recorded = card.get("split") if isinstance(card.get("split"), dict) else {}
    if not recorded or Path(recorded.get("data", "")).resolve() != Path(cfg.data).resolve():
        return DataSplit(data=cfg.data, val_fraction=0.0, holdout_folds=cfg.folds, holdout_fold=fold)
    split = DataSplit.from_card(card)
    if (split.holdout_folds, split.holdout_fold) != (cfg.folds, fold):
        raise ValueError(
            f"{start_model(cfg, fold)} trained on {cfg.data} holding out fold {split.holdout_fold} of "
            f"{split.holdout_folds}, not fold {fold} of {cfg.folds}: the fold's photos would not be unseen"
        )
    return split


def fold_dataset(cfg: AdaptBenchConfig, fold: int):
    return open_split(fold_split(cfg, fold))


@functools.cache
def open_split(split: DataSplit):
    return split.open()


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


def forgetting(cfg: AdaptBenchConfig, fold: int, encoder: Encoder) -> dict:
    """Headline metrics on what the start model already knew (``--forgetting-data``)."""
    if cfg.forgetting_data == "val":
        if "val" not in fold_dataset(cfg, fold).splits():
            raise ValueError(
                f"--forgetting-data val: {start_model(cfg, fold)} was not trained with a val carve of {cfg.data}"
            )
        return scored(encoder, fold_dataset(cfg, fold), "val")["summary"]
    return scored(encoder, open_dataset(cfg.forgetting_data), "train")["summary"]


def before(cfg: AdaptBenchConfig, fold: int) -> dict:
    """The start model on the fold and on the forgetting data (the same for every seed), cached."""
    path = Path(cfg.out) / f"before_f{fold}.json"
    if not path.is_file():
        encoder = Encoder.load(start_model(cfg, fold))
        result = scored(encoder, fold_dataset(cfg, fold), "holdout")
        path.write_text(json.dumps({**result, "forgetting": forgetting(cfg, fold, encoder)}))
    return json.loads(path.read_text())


def run_one(cfg: AdaptBenchConfig, fold: int, seed: int) -> dict:
    folder = Path(cfg.out) / f"adapted_f{fold}_s{seed}"
    done = folder.with_suffix(".json")
    if done.is_file():
        return json.loads(done.read_text())
    photos = photo_folder(cfg, fold)
    load_before = round(os.getloadavg()[0], 2)
    started = time.monotonic()
    model = start_model(cfg, fold)
    adapt(
        AdaptConfig(
            model=model, photos=str(photos), out=str(folder), minutes=0, steps=cfg.steps, seed=seed, threads=cfg.threads
        )
    )
    seconds = time.monotonic() - started
    adapted = Encoder.load(folder)
    result = {
        "fold": fold,
        "seed": seed,
        "steps": adapted.meta["card"]["adaptation"]["steps"],
        "train_minutes": round(seconds / 60, 2),
        "load_avg_1m": {"start": load_before, "end": round(os.getloadavg()[0], 2)},
        "start_model": model,
        "after": scored(adapted, fold_dataset(cfg, fold), "holdout"),
        "forgetting_after": forgetting(cfg, fold, adapted),
    }
    done.write_text(json.dumps(result))
    return result


def targets(cfg: AdaptBenchConfig, after: dict[str, float], gain: dict[str, dict]) -> list[Target]:
    """``--target-after`` on the mean after adaptation and ``--target-gain`` on the paired gain."""
    checked = []
    for spec, values, what in ((cfg.target_after, after, "after"), (cfg.target_gain, gain, "gain")):
        for item in filter(None, spec.split(",")):
            metric, limit = item.split(">=")
            value = values[metric]["delta"] if what == "gain" else values[metric]
            checked.append(Target(f"{metric} {what}", value, float(limit), ">=", "points"))
    return checked


def photo_counts(befores: list[dict]) -> str:
    counts = sorted({len(set(b["photo_ids"])) for b in befores})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def mean_of(rows: list[dict], key: str) -> float:
    return float(np.mean([row[key] for row in rows]))


def gain_lines(cfg: AdaptBenchConfig, befores: list[dict], runs: list[dict], gain: dict) -> list[str]:
    lines = [
        f"Start model `{cfg.model}`; each run adapts to one fold of `{cfg.data}` train photos "
        f"({photo_counts(befores)} photos) for {cfg.steps} steps, then ranks the human sketches of those photos "
        "among them (17 cuts).",
        "",
        "| metric | before | after | gain [95 % interval] | MDE |",
        "|---|---:|---:|---:|---:|",
    ]
    for k in HEADLINE_METRICS:
        g, was, now = (
            gain[k],
            mean_of([b["summary"] for b in befores], k),
            mean_of([r["after"]["summary"] for r in runs], k),
        )
        lines.append(
            f"| {k} | {was:.2f} | {now:.2f} | {g['delta']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}] "
            f"| {minimal_detectable_effect(g['se']):.2f} |"
        )
    return lines


def forgetting_lines(cfg: AdaptBenchConfig, forgetting_before: dict, runs: list[dict]) -> list[str]:
    known = "its own val split of " + cfg.data if cfg.forgetting_data == "val" else cfg.forgetting_data
    lines = [f"Forgetting (what the start model knew, unseen by it: {known})", ""]
    lines += ["| metric | before (mean of runs) | after (mean of runs) |", "|---|---:|---:|"]
    after = [r["forgetting_after"] for r in runs]
    return lines + [f"| {k} | {forgetting_before[k]:.2f} | {mean_of(after, k):.2f} |" for k in HEADLINE_METRICS]


def every_run_lines(runs: list[dict]) -> list[str]:
    lines = [
        "Every run (minutes: wall time of the adaptation, setup included, on the shared machine):",
        "",
        "| fold | seed | start model | steps | minutes | load start/end | A@1 | A@10 | m@A | m@B |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in runs:
        s, load = r["after"]["summary"], r["load_avg_1m"]
        lines.append(
            f"| {r['fold']} | {r['seed']} | `{r.get('start_model', '')}` | {r['steps']} | {r['train_minutes']} "
            f"| {load['start']}/{load['end']} | {s['A@1']:.2f} | {s['A@10']:.2f} | {s['m@A']:.2f} | {s['m@B']:.2f} |"
        )
    return lines


def report(cfg: AdaptBenchConfig, runs: list[dict], command: str) -> dict:
    befores = [before(cfg, r["fold"]) for r in runs]
    pairs = paired_runs(
        [r["after"]["per_sketch"] for r in runs], [b["per_sketch"] for b in befores], [b["photo_ids"] for b in befores]
    )
    gain = hierarchical_bootstrap(pairs, HEADLINE_METRICS)
    forgetting_before = {k: mean_of([b["forgetting"] for b in befores], k) for k in HEADLINE_METRICS}
    checked = targets(cfg, {k: mean_of([r["after"]["summary"] for r in runs], k) for k in HEADLINE_METRICS}, gain)
    machine = machine_info()
    lines = header_lines("Sketch-free adaptation to a photo folder (retrieval.adapt)", command, machine)
    lines += ["", *gain_lines(cfg, befores, runs, gain), "", *forgetting_lines(cfg, forgetting_before, runs)]
    lines += ["", *target_table(checked)] if checked else []
    lines += ["", *every_run_lines(runs)]
    write_markdown(Path(cfg.report + ".md"), lines)
    data = {
        "config": asdict(cfg),
        "gain": gain,
        "forgetting_before": forgetting_before,
        "runs": [{k: v for k, v in r.items() if k != "after"} | {"after": r["after"]["summary"]} for r in runs],
        "before": [b["summary"] for b in befores],
        "targets": [t.as_dict() for t in checked],
        "machine": machine,
        "command": command,
    }
    Path(cfg.report + ".json").write_text(json.dumps(data, indent=1))
    return data


def main(argv: list[str] | None = None) -> dict:
    import sys

    cfg = parse_config(AdaptBenchConfig, argv, description=__doc__)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    folds = [int(f) for f in cfg.fold_list.split(",")] if cfg.fold_list else list(range(cfg.folds))
    plan = [(fold, seed) for seed in range(cfg.seeds) for fold in folds]
    runs = []
    for fold, seed in tqdm(plan, desc="adaptation runs"):
        done = Path(cfg.out) / f"adapted_f{fold}_s{seed}.json"
        if cfg.report_only and not done.is_file():
            continue
        before(cfg, fold)
        runs.append(run_one(cfg, fold, seed))
    command = "python -m bench.accuracy.bench_adapt " + " ".join(sys.argv[1:] if argv is None else argv)
    return report(cfg, runs, command)


if __name__ == "__main__":
    main()
