"""Mean and spread over seeds of side-by-side runs named ``<arm>__s<seed>`` (issue 12's checks).

Reads a ``bench/accuracy/bench_ablation.py`` result json (best checkpoint of each run, val sketches against
the val photos and against all train photos) and, optionally, the runs' ``log.csv`` files (val
metrics at the LAST step, no checkpoint selection). Prints Markdown tables: one row per arm and
gallery (mean ± sd over seeds), per-run rows, and with ``--base ARM`` the paired change of every
other arm against ARM seed by seed (same seed = same batches until the arms part):

    .venv/bin/python -m bench.accuracy.seed_table docs/results/chair-v2_recall_at_k/ablation_2500steps.json \\
        --runs runs/r12/dev2/r --base infonce
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from retrieval.cli import POSITIONAL, parse_config
from retrieval.evaluation.metrics import HEADLINE_METRICS


def split_name(run: str) -> tuple[str, int]:
    arm, seed = run.rsplit("__s", 1)
    return arm, int(seed)


def cell(values: pd.Series) -> str:
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}" if len(values) > 1 else f"{values.mean():.1f}"


def table(frame: pd.DataFrame, title: str) -> list[str]:
    lines = [
        f"| {title} | runs | " + " | ".join(HEADLINE_METRICS) + " |",
        "|---|---:|" + "---:|" * len(HEADLINE_METRICS),
    ]
    for (gallery, arm), part in frame.groupby(["gallery", "arm"], sort=False):
        lines.append(
            f"| `{arm}`, {gallery} photos | {len(part)} | " + " | ".join(cell(part[m]) for m in HEADLINE_METRICS) + " |"
        )
    return lines


def paired(frame: pd.DataFrame, base: str) -> list[str]:
    """Per gallery and arm: the change against ``base`` of the same seed, each seed and the mean."""
    lines = [
        "| arm − `" + base + "`, gallery | " + " | ".join(HEADLINE_METRICS) + " |",
        "|---|" + "---:|" * len(HEADLINE_METRICS),
    ]
    keyed = frame.set_index(["gallery", "arm", "seed"])
    for (gallery, arm), part in frame.groupby(["gallery", "arm"], sort=False):
        if arm == base:
            continue
        cells = []
        for m in HEADLINE_METRICS:
            deltas = [row[m] - keyed.loc[(gallery, base, row["seed"]), m] for _, row in part.iterrows()]
            cells.append(f"{sum(deltas) / len(deltas):+.1f} ({', '.join(f'{d:+.1f}' for d in deltas)})")
        lines.append(f"| `{arm}`, {gallery} photos | " + " | ".join(cells) + " |")
    return lines


def last_step_rows(runs_dir: Path) -> pd.DataFrame:
    last = []
    for log_path in sorted(runs_dir.glob("*__s*/log.csv")):
        final = pd.read_csv(log_path).dropna(subset=["val_m@B"]).iloc[-1]
        arm, seed = split_name(log_path.parent.name)
        last.append(
            {"arm": arm, "seed": seed, "gallery": int(final["val_gallery"]), "steps": int(final["stage_step"])}
            | {m: final[f"val_{m}"] for m in HEADLINE_METRICS}
        )
    return pd.DataFrame(last).sort_values(["arm", "seed"], kind="stable")


@dataclass
class Config:
    """Per-seed tables of an ablation."""

    ablation_json: Path | None = field(default=None, metadata=POSITIONAL)
    """bench/accuracy/bench_ablation.py result json"""
    runs: Path | None = None
    """folder of the <arm>__s<seed>/log.csv run folders"""
    base: str = ""
    """arm the others are compared with, seed by seed"""


def main(argv: list[str] | None = None) -> None:
    args = parse_config(Config, argv, description=__doc__.split("\n\n")[0])
    rows = pd.DataFrame(json.loads(args.ablation_json.read_text())["data"]["rows"])
    rows = rows[rows["model"].str.contains("__s")].copy()
    rows[["arm", "seed"]] = [split_name(m) for m in rows["model"]]
    rows = rows.sort_values(["gallery", "arm", "seed"], kind="stable")
    print("\n".join(table(rows, "best checkpoint (by val m@B), gallery")))
    if args.base:
        print("\n" + "\n".join(paired(rows, args.base)))
    if args.runs:
        last = last_step_rows(args.runs)
        print("\n" + "\n".join(table(last, "last step, gallery")))
        print(f"\nsteps per run: {sorted(set(last['steps']))}")
    print("\n| run, best checkpoint, all photos | " + " | ".join(HEADLINE_METRICS) + " |")
    print("|---|" + "---:|" * len(HEADLINE_METRICS))
    for _, row in rows[rows["gallery"] == rows["gallery"].max()].iterrows():
        print(f"| {row['model']} | " + " | ".join(f"{row[m]:.1f}" for m in HEADLINE_METRICS) + " |")


if __name__ == "__main__":
    main()
