"""Mean and spread over seeds of the Recall@k side-by-side runs (issue 12, lever 2).

Reads the ``bench/bench_ablation.py`` result json (best checkpoint of each run, val sketches against
the 30 val photos and all 300 train photos) and each run's ``log.csv`` (val metrics at the LAST
step, no checkpoint selection), and prints Markdown tables with one row per loss:

    .venv/bin/python docs/results/chair-v2_recall_at_k/summarise.py \\
        docs/results/chair-v2_recall_at_k/ablation.json runs/r12/dev
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

METRICS = ("A@1", "A@5", "A@10", "m@A", "m@B")


def loss_of(run: str) -> str:
    return run.split("__s")[0].replace("_", "+")


def table(frame: pd.DataFrame, title: str) -> list[str]:
    lines = [f"| {title} | runs | " + " | ".join(METRICS) + " |", "|---|---:|" + "---:|" * len(METRICS)]
    for key, part in frame.groupby(["gallery", "loss"], sort=False):
        cells = [
            f"{part[m].mean():.1f} ± {part[m].std(ddof=1):.1f}" if len(part) > 1 else f"{part[m].mean():.1f}"
            for m in METRICS
        ]
        lines.append(f"| {key[1]}, {key[0]} photos | {len(part)} | " + " | ".join(cells) + " |")
    return lines


def main(ablation_json: str, runs_dir: str) -> None:
    rows = pd.DataFrame(json.loads(Path(ablation_json).read_text())["data"]["rows"])
    rows = rows[rows["model"].str.contains("__s")].copy()
    rows["loss"] = rows["model"].map(loss_of)
    rows = rows.sort_values(["gallery", "loss"], kind="stable")
    print("\n".join(table(rows, "best checkpoint (by val m@B), gallery")))
    last = []
    for log_path in sorted(Path(runs_dir).glob("*__s*/log.csv")):
        log = pd.read_csv(log_path).dropna(subset=["val_m@B"])
        final = log.iloc[-1]
        last.append(
            {
                "loss": loss_of(log_path.parent.name),
                "gallery": int(final["val_gallery"]),
                "steps": int(final["stage_step"]),
            }
            | {m: final[f"val_{m}"] for m in METRICS}
        )
    last = pd.DataFrame(last).sort_values("loss", kind="stable")
    print()
    print("\n".join(table(last, "last step, gallery")))
    print(f"\nsteps per run: {sorted(set(last['steps']))}")
    print()
    print("| run | " + " | ".join(METRICS) + " |  (per run, best checkpoint, 300 photos)")
    print("|---|" + "---:|" * len(METRICS))
    for _, row in rows[rows["gallery"] == rows["gallery"].max()].iterrows():
        print(f"| {row['model']} | " + " | ".join(f"{row[m]:.1f}" for m in METRICS) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:])
