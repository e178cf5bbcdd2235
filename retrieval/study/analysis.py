"""Summaries, condition comparisons and plots of user-study logs: ``python -m retrieval.study.analysis LOGDIR``
(``make analyse LOGDIR=...``).

Prints one line per participant and one per condition, the differences between conditions with
their bootstrap intervals and the balance check, and writes into ``--out`` (default ``LOGDIR/analysis``):

- ``records.csv``: every record of every session (the study log's CSV export);
- ``strokes.csv``: one row per stroke (participant, session, trial, condition, stroke index,
  seconds since the trial started, target rank, whether the participant was shown it, server ms);
- ``trials.csv``: one row per ended trial, with the figures compared between conditions;
- ``participants.csv``, ``conditions.csv``: per participant, per condition;
- ``differences.csv``: per pair of conditions and figure, B - A with its interval
  (:mod:`retrieval.study.condition_effects`); ``balance.csv``: trials per condition and position;
- ``report.md``: all of the above as markdown tables;
- ``rank_vs_stroke.png`` and ``rank_vs_time.png`` (target rank after each stroke, one thin line
  per trial, the median per stroke index in bold, one colour per condition) and
  ``strokes_to_found.png`` (per condition).

Every CSV escapes strings a spreadsheet would run as formulas, as the log's export does
(:func:`retrieval.study.log.csv_cell`): ids are typed by participants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from retrieval.cli import POSITIONAL, parse_config
from retrieval.serving.rank_result import proven_rank
from retrieval.stats import first_entry_share
from retrieval.study.analysis_plots import plot_rank_curves, plot_strokes_to_found
from retrieval.study.condition_effects import (
    FEW_PARTICIPANTS,
    TOP_K,
    balance,
    condition_differences,
    condition_summary,
    markdown_table,
)
from retrieval.study.log import csv_cell, export_csv, iter_records
from retrieval.study.log_rankings import with_rankings

TRIAL_KEY = ["participant", "session", "trial"]
LOGGED_EVENTS = ("stroke", "undo", "clear")


@dataclass
class AnalysisConfig:
    """Arguments of the analysis entry point."""

    log_dir: Path | None = field(default=None, metadata=POSITIONAL)
    """folder of ``*.jsonl`` session logs written by the app in study mode"""
    out: Path | None = None
    """output folder for CSV files and plots (default ``LOG_DIR/analysis``)"""
    level: float = 0.95
    """coverage of the bootstrap intervals"""
    n_boot: int = 10_000
    """bootstrap resamples"""
    seed: int = 0
    """seed of the bootstrap (the same log gives the same intervals)"""


def stroke_table(records: list[dict]) -> pd.DataFrame:
    """One row per logged stroke, with seconds since its trial started (client clock)."""
    columns = {
        "participant": None,
        "session": None,
        "trial": None,
        "condition": None,
        "target_id": None,
        "stroke_index": None,
        "seconds": None,
        "target_rank": None,
        "rank_exact": None,
        "rank_upper": None,
        "shown": None,
        "server_ms": None,
        "num_points": None,
        "pointer": None,
    }
    rows = [
        {key: r.get(key) for key in columns}
        | {"seconds": (r.get("t_up") or 0.0) / 1000.0, "num_points": len(r.get("points") or [])}
        | {"rank_exact": r.get("rank_exact", True), "rank_upper": certain_rank(r)}
        for r in records
        if r.get("type") == "stroke"
    ]
    return pd.DataFrame(rows, columns=list(columns))


def certain_rank(record: dict) -> float:
    """:func:`~retrieval.serving.rank_result.proven_rank` of a logged ranking (``rank_exact`` and
    ``rank_bounds`` are written only for estimates)."""
    exact = record.get("rank_exact", True)
    return proven_rank(record.get("target_rank"), exact is not False, record.get("rank_bounds"))


def ink_at_first_entry(records: list[dict]) -> pd.DataFrame:
    """Per trial, the % of its ink (points drawn while it ran) at the first entry into the top 1/5/10.

    Only events of the running trial count (``phase`` "drawing"); ranks are those after each
    ranked event (stroke, undo or clear), an estimated rank counted at its certified upper bound
    (:func:`certain_rank`); NaN where the trial's last ranking was outside the top k
    (:func:`retrieval.stats.first_entry_share`).
    """
    events = [r for r in records if r.get("type") in LOGGED_EVENTS and r.get("phase") == "drawing"]
    rows = []
    for key, group in pd.DataFrame(events).groupby(TRIAL_KEY, sort=False) if events else []:
        group = group.sort_values("seq")
        ink = group["points"].map(lambda p: len(p) if isinstance(p, list) else 0).cumsum().to_numpy(float)
        ranked = group["ranked"].fillna(False).astype(bool).to_numpy() & group["target_rank"].notna().to_numpy()
        row = dict(zip(TRIAL_KEY, key))
        if ranked.any() and ink[-1] > 0:
            certain = np.array([certain_rank(r) for r in group.to_dict("records")])
            ranks, shares = certain[ranked][None, :], (ink[ranked] / ink[-1])[None, :]
            row.update({f"ink_top{k}_pct": 100.0 * first_entry_share(ranks, shares, k)[0] for k in TOP_K})
        rows.append(row)
    return pd.DataFrame(rows, columns=[*TRIAL_KEY, *(f"ink_top{k}_pct" for k in TOP_K)])


def trial_table(records: list[dict]) -> pd.DataFrame:
    """One row per ended trial (``trial_end`` records), with its condition and per-trial figures."""
    keep = [
        "participant",
        "session",
        "trial",
        "condition",
        "condition_position",
        "latin_row",
        "model_hash",
        "target_id",
        "outcome",
        "found",
        "strokes_drawn",
        "seconds",
        "final_rank",
        "best_rank",
        "searches",
    ]
    ends = [{k: r.get(k) for k in keep} for r in records if r.get("type") == "trial_end"]
    trials = pd.DataFrame(ends, columns=keep)
    trials["found"] = trials["found"].fillna(False).astype(bool)
    trials["searches"] = pd.to_numeric(trials["searches"]).fillna(0)
    trials["condition_position"] = pd.to_numeric(trials["condition_position"]).fillna(0).astype(int)
    trials["strokes_to_found"] = np.where(trials["found"], trials["strokes_drawn"], np.nan)
    trials["seconds_to_found"] = np.where(trials["found"], trials["seconds"], np.nan)
    trials["found_pct"] = 100.0 * trials["found"]
    trials["gave_up_pct"] = 100.0 * (trials["outcome"] == "gave_up")
    trials["timed_out_pct"] = 100.0 * (trials["outcome"] == "timed_out")
    if trials.empty:
        return trials.assign(**{f"ink_top{k}_pct": pd.Series(dtype=float) for k in TOP_K})
    return trials.merge(ink_at_first_entry(records), on=TRIAL_KEY, how="left")


def participant_summary(strokes: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Per participant: trials, found %, median strokes/seconds to retrieval, median server ms."""
    out = []
    for pid, group in trials.groupby("participant", sort=True):
        found = group[group["found"]]
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


def report(sections: dict[str, pd.DataFrame], problems: list[str], config: AnalysisConfig) -> str:
    """The markdown report: one table per section, then the balance verdict."""
    parts = [f"# Study analysis of `{config.log_dir}`\n"]
    for title, frame in sections.items():
        parts += [f"## {title}\n", markdown_table(frame) if len(frame) else "(none)", ""]
    verdict = "balanced" if not problems else "NOT balanced:\n" + "\n".join(f"- {p}" for p in problems)
    parts += [f"Balance check: {verdict}", ""]
    level = f"{100 * config.level:g} %"
    parts.append(
        f"Differences are B - A per participant, {level} percentile bootstrap intervals over participants "
        f"({config.n_boot} resamples, seed {config.seed}); `excludes_zero` marks a difference at that level. "
        f"Rows marked `few` compare fewer than {FEW_PARTICIPANTS} participants: their intervals are too narrow "
        "to read as findings."
    )
    return "\n".join(parts) + "\n"


def analyse(config: AnalysisConfig) -> dict[str, pd.DataFrame]:
    """Write CSVs, plots and ``report.md``; print and return the tables by name."""
    records = with_rankings(list(iter_records(config.log_dir)))
    if not records:
        raise FileNotFoundError(f"no study records in {config.log_dir}: expected <participant>__<session>.jsonl files")
    out = config.out or Path(config.log_dir) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    export_csv(records, out / "records.csv")
    strokes, trials = stroke_table(records), trial_table(records)
    boot = {"n_boot": config.n_boot, "level": config.level, "seed": config.seed}
    balance_table, problems = balance(trials)
    tables = {
        "participants": participant_summary(strokes, trials),
        "conditions": condition_summary(trials),
        "differences": condition_differences(trials, **boot),
        "balance": balance_table.reset_index(),
    }
    for name, frame in {"strokes": strokes, "trials": trials, **tables}.items():
        write_csv(frame, out / f"{name}.csv")
    plot_rank_curves(strokes, "stroke_index", "stroke number", out / "rank_vs_stroke.png")
    plot_rank_curves(strokes, "seconds", "seconds since the trial started", out / "rank_vs_time.png")
    plot_strokes_to_found(trials, out / "strokes_to_found.png")
    text = report({name.capitalize(): frame for name, frame in tables.items()}, problems, config)
    (out / "report.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {out}: report.md, CSV tables and rank_vs_stroke.png, rank_vs_time.png, strokes_to_found.png")
    return tables


def main(argv: list[str] | None = None) -> None:
    analyse(parse_config(AnalysisConfig, argv, __doc__.split("\n\n")[0]))


if __name__ == "__main__":
    main()
