"""The benchmarks' plots: a figure saved beside its result files, p50/p95 bars of a result's rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.lib.common import RESULTS


def save_plot(fig, name: str, out_dir: Path = RESULTS) -> Path:
    """Save a matplotlib figure as ``<name>.png`` next to the results and close it."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_percentile_rows(name: str, rows: Sequence[dict[str, Any]], out_dir: Path = RESULTS) -> Path | None:
    """Bars of each row's p50 (and p95) from a result's ``data["rows"]`` (keys starting ``p50`` / ``p95``),
    labelled by the row's text and integer fields; None when the rows carry no p50."""
    p50 = next((k for k in (rows[0] if rows else {}) if k.startswith("p50")), None)
    if p50 is None:
        return None
    p95 = next((k for k in rows[0] if k.startswith("p95")), None)
    labels = [
        " ".join(str(v) for v in r.values() if isinstance(v, str | int) and not isinstance(v, bool))[:48] for r in rows
    ]
    use_agg()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.22 * len(rows) + 1)))
    y = range(len(rows))
    ax.barh([v + 0.2 for v in y], [r[p50] for r in rows], height=0.4, label=p50)
    if p95 is not None:
        ax.barh([v - 0.2 for v in y], [r[p95] for r in rows], height=0.4, label=p95)
    ax.set_yticks(list(y), labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set(title=f"{name}: {p50}" + (f" / {p95}" if p95 is not None else ""))
    ax.legend(fontsize=7)
    return save_plot(fig, name, out_dir)


def use_agg() -> None:
    """Headless matplotlib backend (call before pyplot is imported)."""
    import matplotlib

    matplotlib.use("Agg")
