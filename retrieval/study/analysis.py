"""Summaries and plots of user-study logs: ``python -m retrieval.study.analysis LOGDIR``.

Prints one line per participant (trials, found rate, median strokes and seconds to retrieval,
median server ms per stroke), and writes into ``--out`` (default ``LOGDIR/analysis``):

- ``records.csv``: every record of every session (the study log's CSV export);
- ``strokes.csv``: one row per stroke (participant, session, trial, stroke index, seconds since
  the trial started, target rank, server ms);
- ``trials.csv``: one row per trial summary;
- ``rank_vs_stroke.png`` and ``rank_vs_time.png``: target rank after each stroke (log scale,
  one thin line per trial, the median per stroke index in bold).

Every CSV escapes strings a spreadsheet would run as formulas, as the log's export does
(:func:`retrieval.study.log.csv_cell`): ids are typed by participants.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display needed

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from retrieval.study.log import csv_cell, export_csv, iter_records  # noqa: E402
from retrieval.study.log_rankings import with_rankings  # noqa: E402


@dataclass
class AnalysisConfig:
    """Arguments of the analysis entry point."""

    log_dir: Path
    """Folder of ``*.jsonl`` session logs written by the app in study mode."""
    out: Path | None = None
    """Output folder for CSV files and plots (default ``LOG_DIR/analysis``)."""


def stroke_table(records: list[dict]) -> pd.DataFrame:
    """One row per logged stroke, with seconds since its trial started (client clock)."""
    rows = [
        {
            "participant": r.get("participant"),
            "session": r.get("session"),
            "trial": r.get("trial"),
            "condition": r.get("condition"),
            "target_id": r.get("target_id"),
            "stroke_index": r.get("stroke_index"),
            "seconds": (r.get("t_up") or 0.0) / 1000.0,
            "target_rank": r.get("target_rank"),
            "server_ms": r.get("server_ms"),
            "num_points": len(r.get("points") or []),
            "pointer": r.get("pointer"),
        }
        for r in records
        if r.get("type") == "stroke"
    ]
    columns = [
        "participant",
        "session",
        "trial",
        "condition",
        "target_id",
        "stroke_index",
        "seconds",
        "target_rank",
        "server_ms",
        "num_points",
        "pointer",
    ]
    return pd.DataFrame(rows, columns=columns)


def trial_table(records: list[dict]) -> pd.DataFrame:
    """One row per ended trial (``trial_end`` records)."""
    keep = [
        "participant",
        "session",
        "trial",
        "condition",
        "target_id",
        "outcome",
        "found",
        "strokes_drawn",
        "seconds",
        "final_rank",
        "best_rank",
    ]
    rows = [{k: r.get(k) for k in keep} for r in records if r.get("type") == "trial_end"]
    return pd.DataFrame(rows, columns=keep)


def participant_summary(strokes: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Per participant: trials, found %, median strokes/seconds to retrieval, median server ms."""
    out = []
    for pid, group in trials.groupby("participant", sort=True):
        found = group[group["found"] == True]  # noqa: E712 - pandas element-wise comparison
        mine = strokes[strokes["participant"] == pid]
        out.append(
            {
                "participant": pid,
                "sessions": group["session"].nunique(),
                "trials": len(group),
                "found_pct": 100.0 * len(found) / max(len(group), 1),
                "median_strokes_to_find": found["strokes_drawn"].median() if len(found) else float("nan"),
                "median_seconds_to_find": found["seconds"].median() if len(found) else float("nan"),
                "strokes_logged": len(mine),
                "median_server_ms": mine["server_ms"].median() if len(mine) else float("nan"),
            }
        )
    return pd.DataFrame(out)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """``frame.to_csv`` with text cells escaped by :func:`csv_cell` (numbers stay numbers)."""
    safe = frame.copy()
    for column in frame.select_dtypes(include=["object", "string"]).columns:
        safe[column] = frame[column].map(csv_cell)
    safe.to_csv(path, index=False)


def _plot(strokes: pd.DataFrame, x: str, xlabel: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ranked = strokes.dropna(subset=["target_rank"])
    for _, trial in ranked.groupby(["participant", "session", "trial"]):
        ax.plot(trial[x] + (1 if x == "stroke_index" else 0), trial["target_rank"], color="#2563eb", alpha=0.25, lw=1)
    if x == "stroke_index" and len(ranked):
        median = ranked.groupby("stroke_index")["target_rank"].median()
        ax.plot(median.index + 1, median.values, color="#1e3a8a", lw=2.5, label="median")
        ax.legend()
    ax.set_yscale("log")
    ax.invert_yaxis()  # rank 1 at the top: up is better
    ax.set_xlabel(xlabel)
    ax.set_ylabel("target rank (log, 1 = top)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def analyse(config: AnalysisConfig) -> pd.DataFrame:
    """Write CSVs and plots, print and return the per-participant summary."""
    records = with_rankings(list(iter_records(config.log_dir)))
    if not records:
        raise FileNotFoundError(f"no study records in {config.log_dir}: expected <participant>__<session>.jsonl files")
    out = config.out or Path(config.log_dir) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    export_csv(records, out / "records.csv")
    strokes, trials = stroke_table(records), trial_table(records)
    write_csv(strokes, out / "strokes.csv")
    write_csv(trials, out / "trials.csv")
    _plot(strokes, "stroke_index", "stroke number", out / "rank_vs_stroke.png")
    _plot(strokes, "seconds", "seconds since the trial started", out / "rank_vs_time.png")
    summary = participant_summary(strokes, trials)
    write_csv(summary, out / "participants.csv")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"wrote {out}/records.csv, strokes.csv, trials.csv, participants.csv, rank_vs_stroke.png, rank_vs_time.png")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log_dir", type=Path, help="folder of study session logs (*.jsonl)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default LOG_DIR/analysis)")
    args = parser.parse_args(argv)
    analyse(AnalysisConfig(args.log_dir, args.out))


if __name__ == "__main__":
    main()
