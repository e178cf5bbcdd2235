"""Tables and plots of RL runs: learning curves, baseline-vs-RL comparison, reward ablation."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from retrieval.cli import POSITIONAL, parse_config
from retrieval.evaluation.metrics import HEADLINE_METRICS  # noqa: E402


def plot_learning_curve(csv_path: str | Path, png_path: str | Path, title: str = "PPO sketch head") -> Path:
    """Validation m@A and m@B against env steps, the supervised head's values dashed."""
    log = pd.read_csv(csv_path)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), constrained_layout=True)
    for ax, key in zip(axes, ("m@A", "m@B")):
        ax.plot(log["timesteps"], log[key], marker="o", ms=3, label="RL head")
        ax.axhline(log[key].iloc[0], ls="--", color="gray", label="supervised head")
        best = log[log["is_best"] == 1].iloc[-1]
        ax.scatter([best["timesteps"]], [best[key]], color="red", zorder=3, label="kept (best)")
        ax.set_xlabel("env steps")
        ax.set_ylabel(f"validation {key} (%)")
    return _save_figure(fig, axes, title, png_path)


def markdown_table(rows: Mapping[str, Mapping], keys: Sequence[str] = HEADLINE_METRICS) -> str:
    """``{row name: metrics}`` as a GitHub markdown table (percent, 2 decimals), with gallery size."""
    lines = ["| model | " + " | ".join(keys) + " | gallery | sketches |", "|---|" + "---:|" * (len(keys) + 2)]
    for name, m in rows.items():
        cells = " | ".join(f"{m[k]:.2f}" for k in keys)
        lines.append(f"| {name} | {cells} | {m.get('n_gallery', '?')} | {m.get('n_sketches', '?')} |")
    return "\n".join(lines)


def ablation_table(run_dirs: Sequence[str | Path]) -> str:
    """Compare ``python -m rl.train`` runs (e.g. ``--reward rank`` vs ``rank+kendall``) from their summary.json.

    The first row is the supervised head (taken from the first run: all runs must share the
    checkpoint and data for the comparison to mean anything). On a shared machine compare runs at
    equal ``--max-timesteps`` rather than equal minutes: throughput varies with the load.
    """
    summaries = [(Path(d), json.loads((Path(d) / "summary.json").read_text())) for d in run_dirs]
    if not summaries:
        raise ValueError("give at least one run folder holding summary.json (written by python -m rl.train)")
    rows: dict[str, Mapping] = {"supervised head": summaries[0][1]["val_baseline"]}
    for folder, s in summaries:
        kendall = f"gamma_kendall {s['gamma_kendall']}, " if "kendall" in s["reward"] else ""
        rows[f"{folder.name}: reward={s['reward']} ({kendall}{s['timesteps']} steps)"] = s["val_best"]
    return markdown_table(rows)


def plot_rank_curves(curves: Mapping[str, Mapping[str, Mapping]], png_path: str | Path, title: str) -> Path:
    """Rank percentile and reciprocal rank against drawing progress (``summarize()["curve"]``).

    Args:
        curves: ``{split: {model name: curve}}``; one colour per model, one line style per split.
        png_path: where the PNG goes.
        title: figure title.
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), constrained_layout=True)
    colours: dict[str, str] = {}
    for style, (split, by_model) in zip(("-", "--", ":", "-."), curves.items()):
        for name, curve in by_model.items():
            colour = colours.setdefault(name, f"C{len(colours)}")
            for ax, key in zip(axes, ("rank_percentile", "reciprocal_rank")):
                values = [float("nan") if v is None else v for v in curve[key]]
                ax.plot(curve["progress"], values, style, color=colour, marker="o", ms=3, label=f"{name} ({split})")
    for ax, label in zip(axes, ("mean rank percentile (%)  [m@A]", "mean 1/rank (%)  [m@B]")):
        ax.set_xlabel("sketch drawn (%)")
        ax.set_ylabel(label)
    return _save_figure(fig, axes, title, png_path)


def _save_figure(fig, axes, title: str, png_path: str | Path) -> Path:
    """Grid on every panel, legend on the first, the title; write the PNG, close the figure, return its path."""
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return Path(png_path)


@dataclass
class ReportConfig:
    """Ablation table of rl.train runs."""

    runs: tuple[str, ...] = field(default=(), metadata=POSITIONAL)
    """rl.train output folders (each with summary.json)"""


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m rl.report RUN_DIR [RUN_DIR ...]`` prints the ablation table."""
    print(ablation_table(parse_config(ReportConfig, None if argv is None else list(argv)).runs))


if __name__ == "__main__":
    main()
