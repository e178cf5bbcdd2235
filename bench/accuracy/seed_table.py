"""Mean and spread over seeds of side-by-side runs named ``<arm>__s<seed>`` (issue 12's checks).

Reads a ``bench/accuracy/bench_ablation.py`` result json (best checkpoint of each run, val sketches against
the val photos and against all train photos) and, optionally, the runs' ``log.csv`` files (val
metrics at the LAST step, no checkpoint selection). Prints Markdown tables: one row per arm and
gallery (mean ± sd over seeds), per-run rows, and with ``--base ARM`` the paired change of every
other arm against ARM seed by seed (same seed = same batches until the arms part); ``--out`` also writes
them through the results writer (machine, date, commit):

    .venv/bin/python -m bench.accuracy.seed_table docs/results/chair-v2_recall_at_k/ablation_2500steps.json \\
        --runs runs/r12/dev2/r --base infonce [--out docs/results/chair-v2_recall_at_k/seeds]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.lib.common import command_line, header_lines, machine_info, markdown_table, write_results
from retrieval.cli import POSITIONAL, parse_config
from retrieval.evaluation.metrics import HEADLINE_METRICS


def split_name(run: str) -> tuple[str, int]:
    arm, seed = run.rsplit("__s", 1)
    return arm, int(seed)


def cell(values: pd.Series) -> str:
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}" if len(values) > 1 else f"{values.mean():.1f}"


def table(frame: pd.DataFrame, title: str) -> list[str]:
    rows = [
        (f"`{arm}`, {gallery} photos", len(part), *(cell(part[m]) for m in HEADLINE_METRICS))
        for (gallery, arm), part in frame.groupby(["gallery", "arm"], sort=False)
    ]
    return markdown_table((title, "runs", *HEADLINE_METRICS), rows)


def paired(frame: pd.DataFrame, base: str) -> list[str]:
    """Per gallery and arm: the change against ``base`` of the same seed, each seed and the mean."""
    keyed = frame.set_index(["gallery", "arm", "seed"])
    rows = []
    for (gallery, arm), part in frame.groupby(["gallery", "arm"], sort=False):
        if arm == base:
            continue
        cells = []
        for m in HEADLINE_METRICS:
            deltas = [row[m] - keyed.loc[(gallery, base, row["seed"]), m] for _, row in part.iterrows()]
            cells.append(f"{sum(deltas) / len(deltas):+.1f} ({', '.join(f'{d:+.1f}' for d in deltas)})")
        rows.append((f"`{arm}`, {gallery} photos", *cells))
    return markdown_table((f"arm − `{base}`, gallery", *HEADLINE_METRICS), rows)


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
    out: Path | None = None
    """also write the tables as <out>.md + <out>.json through the results writer (machine, date, commit)"""


def tables(args: Config, rows: pd.DataFrame) -> tuple[list[str], dict]:
    """The Markdown tables and their data: per arm, paired against the base arm, last step, per run."""
    lines = table(rows, "best checkpoint (by val m@B), gallery")
    data = {"best_checkpoint": rows.to_dict("records")}
    if args.base:
        lines += ["", *paired(rows, args.base)]
    if args.runs:
        last = last_step_rows(args.runs)
        lines += ["", *table(last, "last step, gallery"), "", f"steps per run: {sorted(set(last['steps']))}"]
        data["last_step"] = last.to_dict("records")
    largest = rows[rows["gallery"] == rows["gallery"].max()]
    per_run = [(row["model"], *(f"{row[m]:.1f}" for m in HEADLINE_METRICS)) for _, row in largest.iterrows()]
    return [*lines, "", *markdown_table(("run, best checkpoint, all photos", *HEADLINE_METRICS), per_run)], data


def main(argv: list[str] | None = None) -> None:
    args = parse_config(Config, argv, description=__doc__.split("\n\n")[0])
    machine = machine_info()
    rows = pd.DataFrame(json.loads(args.ablation_json.read_text())["data"]["rows"])
    rows = rows[rows["model"].str.contains("__s")].copy()
    rows[["arm", "seed"]] = [split_name(m) for m in rows["model"]]
    rows = rows.sort_values(["gallery", "arm", "seed"], kind="stable")
    lines, data = tables(args, rows)
    print("\n".join(lines))
    if args.out:
        title = f"Mean and spread over seeds: {args.ablation_json}"
        head = header_lines(title, command_line(__file__, argv), machine)
        write_results(args.out.name, [*head, "", *lines], [], data, machine, args.out.parent)


if __name__ == "__main__":
    main()
