"""``python -m retrieval.evaluation``: score a checkpoint on a dataset split and write the report.

For every sketch of a split, the partial sketch is rendered at each step (the 17 point-fraction
cuts of the literature, or each stroke end) and ranked against ALL photos of that split
(``retrieval.evaluation.protocol.evaluate_split``, the path training validation, RL and the
benches share).

    python -m retrieval.evaluation --split val --model runs/x/best --out runs/x/eval   # the card's data and carve
    python -m retrieval.evaluation --data procedural:photos=200 --split test --model DIR --out DIR --steps strokes

The split flags (``--data``, ``--val-fraction``, ``--holdout-*``, ``--split-seed``) default to the split
the model card records; a flag given overrides it, and val or holdout carved otherwise on the card's
data is refused (it could hold the model's training photos).

Writes ``metrics.json`` (``A@1``, ``A@5``, ``A@10``, ``m@A``, ``m@B``, ``curve``, ``sketch_less``
(share of points drawn when the photo first entered the top 1/5/10), ``n_gallery``, ``n_sketches``,
``split``, ``model``), ``config.json``, ``curves.png`` and ``ranks.csv`` (one row
per sketch and step), and prints the headline table.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from retrieval.cli import parse_config
from retrieval.data.dataset_protocol import SketchRecord
from retrieval.data.splits import CardSplitFlags, DataSplit, SplitMismatchError
from retrieval.evaluation.metrics import format_table
from retrieval.evaluation.protocol import GALLERIES, STEP_MODES, MissingSplitError, check_split, evaluate_split
from retrieval.model.encoder import Encoder
from retrieval.runtime import set_threads
from retrieval.serving.gallery import model_hash


# --- reports -------------------------------------------------------------------------------------
def write_ranks_csv(path: Path, records: list[SketchRecord], ranks: np.ndarray) -> None:
    """Long format: one row per sketch and step (``key, photo_id, step, progress, rank``)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "photo_id", "step", "n_steps", "progress", "rank"])
        for record, row in zip(records, ranks):
            valid = row[np.isfinite(row)].astype(np.int64)
            for step, rank in enumerate(valid, start=1):
                writer.writerow([record.key, record.photo_id, step, len(valid), f"{step / len(valid):.4f}", int(rank)])


def plot_curves(path: Path, metrics: dict, title: str) -> None:
    """Rank percentile / reciprocal rank and A@k against drawing progress, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = metrics["curve"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, keys in ((left, ("rank_percentile", "reciprocal_rank")), (right, ("A@1", "A@5", "A@10"))):
        for key in keys:
            values = [np.nan if v is None else v for v in curve[key]]
            ax.plot(curve["progress"], values, marker="o", markersize=3, label=key)
        ax.set_xlabel("sketch completed (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend()
    left.set_ylabel("%")
    left.set_title(f"m@A {metrics['m@A']:.1f}  m@B {metrics['m@B']:.1f}")
    right.set_title(f"A@1 {metrics['A@1']:.1f}  A@10 {metrics['A@10']:.1f} (complete)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- command line --------------------------------------------------------------------------------
JUDGED_SPLITS = ("val", "holdout")  # splits whose photos depend on the carve (train and test photos do not only)


@dataclass
class EvalConfig(CardSplitFlags):
    """Settings of one evaluation run: the split flags default to the model card's split."""

    model: str = ""
    """encoder checkpoint folder: model.safetensors + model.json (required)"""
    out: str = ""
    """output folder for metrics.json, curves.png, ranks.csv and config.json (required)"""
    split: str = "val"
    """whose sketches are ranked: val, holdout (carved from train photos), test (when the data has one), or train (overfitting check)"""
    steps: Literal["points", "strokes"] = "points"
    """points: the 17 fraction cuts of the literature; strokes: each stroke end"""
    threads: int = 2
    """torch and faiss threads"""
    gallery: Literal["split", "all"] = "split"
    """split: rank among the split's own photos; all: among every photo of the dataset"""

    def data_split(self, recorded: DataSplit | None) -> DataSplit:
        """The carve to evaluate on: the split ``recorded`` in the model card (so a checkpoint is judged
        on the photos it was selected and held out on), each flag given overriding it; other data starts
        from ``DataSplit``'s defaults. Judging val or holdout on the card's data carved otherwise is
        refused: those photos may be ones the model trained on."""
        split = self.split_over(recorded)
        if recorded is not None and split.data == recorded.data and self.split in JUDGED_SPLITS:
            split.check_against(recorded, f"model (judged on {self.split})")
        return split

    def __post_init__(self) -> None:
        missing = [f"--{name}" for name in ("model", "out") if not str(getattr(self, name))]
        if missing:
            raise ValueError(f"the following arguments are required: {', '.join(missing)}")
        if self.steps not in STEP_MODES or self.gallery not in GALLERIES:
            raise ValueError(
                f"--steps must be one of {STEP_MODES} and --gallery one of {GALLERIES}; got {self.steps!r}, {self.gallery!r}"
            )


def run(cfg: EvalConfig) -> dict:
    """Evaluate, write the report files into ``cfg.out`` and return the metrics dict."""
    set_threads(cfg.threads)
    started = time.perf_counter()
    out = Path(cfg.out)
    encoder = Encoder.load(cfg.model)
    split = cfg.data_split(encoder.card.split)
    dataset = split.open()
    check_split(dataset, cfg.split)
    result = evaluate_split(encoder, dataset, cfg.split, gallery=cfg.gallery, steps=cfg.steps, progress=True)
    metrics = {**result.summary, "split": cfg.split, "model": str(cfg.model)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    config = {
        **asdict(cfg),
        "data_split": asdict(split),  # the carve evaluated on, the card's defaults filled in
        "model_hash": model_hash(encoder),
        "dataset": dataset.name,
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    records = dataset.sketches(cfg.split)  # the rows of result.ranks, in order
    write_ranks_csv(out / "ranks.csv", records, np.asarray(result.ranks, dtype=np.float64))
    plot_curves(
        out / "curves.png",
        metrics,
        f"{dataset.name} {cfg.split}: {len(records)} sketches vs {metrics['n_gallery']} photos, steps={cfg.steps}",
    )
    print(format_table(metrics))
    print(f"wrote {out}/metrics.json, curves.png, ranks.csv")
    return metrics


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(EvalConfig, argv, description=__doc__)  # a missing or invalid flag: usage error, exit 2
    try:
        run(cfg)
    except (MissingSplitError, SplitMismatchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
