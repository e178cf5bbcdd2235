"""Does a condition change how people draw? Per-condition figures, differences between conditions
with bootstrap intervals, and a check that the design was balanced.

Input: the per-trial table of :func:`retrieval.study.analysis.trial_table` (one row per ended
trial, with its condition and the per-trial figures of :data:`TRIAL_METRICS`).

Differences are per participant: each participant's mean of a figure in condition B minus their
mean in condition A, averaged over the participants who have both (within-subject designs), with
a percentile bootstrap interval resampling participants (the unit of a user study: trials of one
person are not independent). When no participant met both conditions (between-subject), the two
groups of per-participant means are resampled independently.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from retrieval.stats import bootstrap_mean, bootstrap_mean_difference

TOP_K = (1, 5, 10)
TRIAL_METRICS = {
    "found_pct": "found (% of trials)",
    "strokes_to_found": "strokes to found",
    "seconds_to_found": "seconds to found",
    **{f"ink_top{k}_pct": f"% of ink at first entry into the top {k}" for k in TOP_K},
    "gave_up_pct": "gave up (% of trials)",
    "timed_out_pct": "timed out (% of trials)",
}
"""Per-trial figures compared between conditions (NaN where a trial does not have one, e.g. the
strokes to found of a trial that was not found); a participant's figure is the mean over trials."""
FEW_PARTICIPANTS = 8
"""Below this many participants per comparison a percentile bootstrap interval is too narrow (it
under-covers: with 4 units there are only 35 distinct resamples), so such rows are flagged ``few``
and their ``excludes_zero`` is descriptive, not a finding."""


def condition_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per condition: trials, participants, outcome counts and each figure's median and mean."""
    rows = []
    for name, group in trials.groupby("condition", sort=True):
        found = group[group["found"]]
        row = {
            "condition": name,
            "participants": group["participant"].nunique(),
            "trials": len(group),
            "found": int(group["found"].sum()),
            "not_found": int((group["outcome"] == "not_found").sum()),
            "gave_up": int((group["outcome"] == "gave_up").sum()),
            "timed_out": int((group["outcome"] == "timed_out").sum()),
            "found_pct": 100.0 * len(found) / len(group),
            "median_strokes_to_found": found["strokes_drawn"].median(),
            "median_seconds_to_found": found["seconds"].median(),
            "mean_searches": group["searches"].mean(),
        }
        for k in TOP_K:
            column = group[f"ink_top{k}_pct"].dropna()
            row[f"ink_top{k}_pct"] = column.mean() if len(column) else float("nan")
            row[f"ink_top{k}_n"] = len(column)
        rows.append(row)
    return pd.DataFrame(rows)


def participant_means(trials: pd.DataFrame) -> pd.DataFrame:
    """Each participant's mean of every figure in every condition they met (rows: participant x condition)."""
    return trials.groupby(["participant", "condition"], sort=True)[list(TRIAL_METRICS)].mean().reset_index()


def condition_differences(
    trials: pd.DataFrame, *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """For every pair of conditions (A, B) and figure: mean of B - A with its bootstrap interval.

    Columns: ``a``, ``b``, ``metric``, ``design`` (``paired`` or ``independent``), ``n`` (participants
    compared), ``mean_a``, ``mean_b``, ``delta``, ``low``, ``high``, ``excludes_zero`` (the interval
    lies on one side of 0: a difference at the ``level``), ``few`` (``n`` < :data:`FEW_PARTICIPANTS`).
    """
    means = participant_means(trials)
    wide = means.pivot(index="participant", columns="condition")
    rows = []
    for a, b in itertools.combinations(sorted(trials["condition"].unique()), 2):
        for metric in TRIAL_METRICS:
            both = wide[metric][[a, b]].dropna()
            if len(both):
                design, n = "paired", len(both)
                result = bootstrap_mean({metric: both[b] - both[a]}, n_boot=n_boot, level=level, seed=seed)[metric]
                mean_a, mean_b = both[a].mean(), both[b].mean()
            else:
                only_a, only_b = wide[metric][a].dropna(), wide[metric][b].dropna()
                if not len(only_a) or not len(only_b):
                    continue
                design, n = "independent", len(only_a) + len(only_b)
                result = bootstrap_mean_difference(only_b, only_a, n_boot=n_boot, level=level, seed=seed)
                mean_a, mean_b = only_a.mean(), only_b.mean()
            excludes = result["low"] > 0 or result["high"] < 0
            rows.append(
                {"a": a, "b": b, "metric": metric, "design": design, "n": n, "mean_a": mean_a, "mean_b": mean_b}
                | result
                | {"excludes_zero": bool(excludes), "few": n < FEW_PARTICIPANTS}
            )
    return pd.DataFrame(rows)


def balance(trials: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Trials per condition at each position of the participants' orders, and what is unbalanced.

    Returns the table (rows: condition, columns: position, cells: trials) and a list of problems:
    a position where conditions were met unequally often, conditions with unequal numbers of
    participants (between-subject), or participants who met a condition more often than another.
    """
    table = pd.crosstab(trials["condition"], trials["condition_position"]).rename_axis(columns="position")
    problems = []
    for position in table.columns:
        if table[position].nunique() > 1:
            counts = ", ".join(f"{c} {n}" for c, n in table[position].items())
            problems.append(f"position {position}: conditions met unequally often ({counts})")
    per_participant = pd.crosstab(trials["participant"], trials["condition"])
    uneven = per_participant[per_participant.nunique(axis=1) > 1]
    if (per_participant > 0).all(axis=1).all() and len(uneven):
        problems.append(f"{len(uneven)} participant(s) met the conditions unequally often: {list(uneven.index)[:5]}")
    if not (per_participant > 0).all(axis=1).any():  # between-subject: every participant met one condition
        groups = (per_participant > 0).sum(axis=0)
        if groups.nunique() > 1:
            problems.append("participants per condition differ: " + ", ".join(f"{c} {n}" for c, n in groups.items()))
    return table, problems


def markdown_table(frame: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub markdown table (no extra dependency), floats rounded, NaN as '-'."""

    def cell(v) -> str:
        if isinstance(v, float | np.floating):
            return "-" if not np.isfinite(v) else f"{v:.{digits}f}"
        return str(v)

    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(frame[c]) else "---" for c in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])
