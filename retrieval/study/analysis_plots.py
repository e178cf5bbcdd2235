"""The study analysis's plots (PNG): rank curves and strokes to found, one colour per condition."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display needed

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

COLOURS = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2")


def plot_rank_curves(strokes: pd.DataFrame, x: str, xlabel: str, path: Path) -> None:
    """Target rank after each stroke: one thin line per trial, bold median per stroke index, per condition."""
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ranked = strokes.dropna(subset=["target_rank"])
    offset = 1 if x == "stroke_index" else 0  # stroke 1 is index 0
    for i, (condition, group) in enumerate(ranked.groupby(ranked["condition"].fillna("-"), sort=True)):
        colour = COLOURS[i % len(COLOURS)]
        for _, trial in group.groupby(["participant", "session", "trial"]):
            ax.plot(trial[x] + offset, trial["target_rank"], color=colour, alpha=0.2, lw=1)
        if x == "stroke_index":
            median = group.groupby("stroke_index")["target_rank"].median()
            ax.plot(median.index + 1, median.values, color=colour, lw=2.5, label=f"{condition} (median)")
    if x == "stroke_index" and len(ranked):
        ax.legend()
    ax.set_yscale("log")
    ax.invert_yaxis()  # rank 1 at the top: up is better
    ax.set_xlabel(xlabel)
    ax.set_ylabel("target rank (log, 1 = top)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_strokes_to_found(trials: pd.DataFrame, path: Path) -> None:
    """Strokes to found per condition: a box per condition with every found trial as a dot."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    groups = [(c, g["strokes_to_found"].dropna()) for c, g in trials.groupby("condition", sort=True)]
    groups = [(c, v) for c, v in groups if len(v)]
    if groups:
        ax.boxplot([v.to_numpy() for _, v in groups], showfliers=False)
        for i, (_, values) in enumerate(groups, start=1):
            ax.scatter([i] * len(values), values, color=COLOURS[(i - 1) % len(COLOURS)], alpha=0.6, s=14, zorder=3)
        ax.set_xticks(range(1, len(groups) + 1), [f"{c}\n(n={len(v)})" for c, v in groups])
    ax.set_ylabel("strokes to found (found trials)")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
