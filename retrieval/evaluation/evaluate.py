"""On-the-fly FG-SBIR evaluation: rank of each sketch's photo after every drawing step.

For every sketch of a split, the partial sketch is rendered at each step (the 17 point-fraction
cuts of the literature, or each stroke end) and ranked against ALL photos of that split.

    python -m retrieval.evaluation --data ../shared/data/chairv2-train --split val --model runs/x --out runs/x/eval
    python -m retrieval.evaluation --data procedural:photos=200 --split test --model DIR --out DIR --steps strokes

Writes ``metrics.json`` (``A@1``, ``A@5``, ``A@10``, ``m@A``, ``m@B``, ``curve``, ``sketch_less``
(share of points drawn when the photo first entered the top 1/5/10), ``n_gallery``, ``n_sketches``,
``split``, ``model``), ``config.json``, ``curves.png`` and ``ranks.csv`` (one row
per sketch and step), and prints the headline table.

Library use: :func:`evaluate_ranks` for model selection; RL caches per-step backbone features
once (:func:`embed_steps` with ``output="features"``), applies a candidate head, and ranks with
:func:`ranks_from_embeddings`.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from retrieval.data.datasets import open_dataset
from retrieval.data.raster import render_steps
from retrieval.data.records import RetrievalDataset, SketchRecord
from retrieval.data.sketch import step_cuts
from retrieval.evaluation.metrics import format_table, summarize
from retrieval.model.encoder import Encoder
from retrieval.model.progress_head import ink_share
from retrieval.serving.gallery import model_hash
from retrieval.serving.index import set_faiss_threads, true_ranks

STEP_MODES = ("points", "strokes")
OUTPUTS = ("embeddings", "features")


class MissingSplitError(KeyError):
    """The dataset has no such split (e.g. ``test`` on the train-only Chair-V2 copy)."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0])


def check_split(dataset: RetrievalDataset, split: str) -> None:
    """Raise :class:`MissingSplitError` with a helpful message when ``split`` is absent."""
    if split not in dataset.splits():
        hint = (
            "; this copy has no test sketches: evaluate on --split val, or point --data at the full release"
            if split == "test"
            else ""
        )
        raise MissingSplitError(
            f"dataset {dataset.name!r} has no {split!r} split (available: {dataset.splits()}){hint}"
        )


def gallery_photo_ids(dataset: RetrievalDataset, split: str, gallery: str = "split") -> list[str]:
    """Sorted photo ids of the evaluation gallery: the split's own photos, or every photo of the data.

    ``gallery="all"`` ranks a split's sketches among all photos (e.g. Chair-V2 val sketches against
    all 300 train+val photos): more distractors, so numbers compare across differently sized splits.
    """
    check_split(dataset, split)
    if gallery == "split":
        return dataset.photo_ids(split)
    if gallery == "all":
        return sorted({pid for name in dataset.splits() for pid in dataset.photo_ids(name)})
    raise ValueError(f"gallery must be 'split' or 'all', got {gallery!r}")


def photo_embeddings(
    encoder: Encoder,
    dataset: RetrievalDataset,
    split: str,
    batch_size: int = 64,
    progress: bool = False,
    gallery: str = "split",
) -> tuple[list[str], np.ndarray]:
    """Ids (sorted) and ``(N, D)`` embeddings of the evaluation gallery (see :func:`gallery_photo_ids`)."""
    ids = gallery_photo_ids(dataset, split, gallery)
    chunks = [
        encoder.embed_photos([dataset.load_photo(pid) for pid in ids[i : i + batch_size]])
        for i in tqdm(range(0, len(ids), batch_size), desc=f"photos ({split})", disable=not progress)
    ]
    return ids, np.concatenate(chunks)


def embed_steps(
    encoder: Encoder,
    records: list[SketchRecord],
    steps: str = "points",
    output: str = "embeddings",
    sketches_per_batch: int = 16,
    progress: bool = False,
) -> np.ndarray:
    """Per-step sketch outputs ``(Q, T, X)`` float32; rows with fewer steps are NaN-padded at the end.

    Args:
        encoder: renders at its ``raster_size``/``line_width`` and embeds.
        records: the sketches.
        steps: ``"points"`` (17 cuts of the literature: ``T = 17``) or ``"strokes"`` (one step per
            stroke end: ``T = `` the most strokes of any sketch).
        output: ``"embeddings"`` (``X = D``, unit rows) or ``"features"`` (``X = F``, the frozen
            backbone feature the RL head reads).
    """
    if steps not in STEP_MODES or output not in OUTPUTS:
        raise ValueError(f"steps must be one of {STEP_MODES} and output one of {OUTPUTS}; got {steps!r}, {output!r}")
    forward = encoder.embed_sketches if output == "embeddings" else encoder.sketch_features
    size, width = encoder.meta["raster_size"], encoder.meta["line_width"]
    cuts = [step_cuts(r.sketch, steps) for r in records]
    if any(len(c) == 0 for c in cuts):
        raise ValueError("a sketch without points cannot be evaluated; drop empty sketches from the dataset")
    out: np.ndarray | None = None
    for start in tqdm(range(0, len(records), sketches_per_batch), desc=f"sketch steps ({steps})", disable=not progress):
        batch = range(start, min(start + sketches_per_batch, len(records)))
        rasters = np.concatenate([render_steps(records[i].sketch, cuts[i], size, width) for i in batch])
        values = forward(rasters)
        if out is None:
            out = np.full((len(records), max(len(c) for c in cuts), values.shape[1]), np.nan, np.float32)
        offset = 0
        for i in batch:
            out[i, : len(cuts[i])] = values[offset : offset + len(cuts[i])]
            offset += len(cuts[i])
    if out is None:
        raise ValueError("no sketches to evaluate")
    return out


def _padded(rows: list[np.ndarray]) -> np.ndarray:
    out = np.full((len(rows), max(len(r) for r in rows)), np.nan, np.float32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def step_shares(records: list[SketchRecord], steps: str = "points") -> np.ndarray:
    """``(Q, T)`` share of each sketch's points drawn at each step (NaN-padded like :func:`embed_steps`)."""
    return _padded([step_cuts(r.sketch, steps) / max(r.sketch.num_points, 1) for r in records])


def step_ink(encoder: Encoder, records: list[SketchRecord], steps: str = "points") -> np.ndarray:
    """``(Q, T)`` ink share of each step's raster (``retrieval.model.progress_head.ink_share``), NaN-padded.

    The drawing-progress signal a progress-aware sketch head reads; rendered exactly as
    :func:`embed_steps` renders the steps.
    """
    size, width = encoder.meta["raster_size"], encoder.meta["line_width"]
    return _padded([ink_share(render_steps(r.sketch, step_cuts(r.sketch, steps), size, width)) for r in records])


def ranks_from_embeddings(
    sketch_embeddings: np.ndarray, photo_embeddings: np.ndarray, true_idx: np.ndarray
) -> np.ndarray:
    """Ranks ``(Q, T)`` of each sketch's true photo at each step (ties count against).

    Args:
        sketch_embeddings: ``(Q, T, D)``, NaN rows for padded steps.
        photo_embeddings: ``(N, D)`` gallery.
        true_idx: ``(Q,)`` gallery row of each sketch's photo.

    Returns:
        int64 ``(Q, T)`` when no step is padded, else float64 with NaN at padded steps.
    """
    q, t, d = sketch_embeddings.shape
    flat = sketch_embeddings.reshape(q * t, d)
    valid = np.isfinite(flat).all(axis=1)
    ranks = np.full(q * t, np.nan)
    scores = flat[valid] @ np.asarray(photo_embeddings, np.float32).T
    ranks[valid] = true_ranks(scores, np.repeat(np.asarray(true_idx), t)[valid])
    ranks = ranks.reshape(q, t)
    return ranks.astype(np.int64) if valid.all() else ranks


def true_photo_index(records: list[SketchRecord], photo_ids: list[str]) -> np.ndarray:
    """Gallery row of each record's photo; raises when a photo is not in the gallery."""
    row_of = {pid: i for i, pid in enumerate(photo_ids)}
    missing = sorted({r.photo_id for r in records if r.photo_id not in row_of})
    if missing:
        raise ValueError(f"sketches refer to photos missing from the gallery: {missing[:5]}")
    return np.array([row_of[r.photo_id] for r in records], dtype=np.int64)


def evaluate_ranks(
    encoder: Encoder, dataset: RetrievalDataset, split: str, steps: str = "points", progress: bool = False
) -> np.ndarray:
    """Ranks ``(Q, T)`` of every sketch of ``split`` among all photos of ``split`` after each step.

    ``Q`` follows ``dataset.sketches(split)`` order; see :func:`ranks_from_embeddings` for dtype.
    """
    ids, photos = photo_embeddings(encoder, dataset, split, progress=progress)
    records = dataset.sketches(split)
    sketches = embed_steps(encoder, records, steps, progress=progress)
    return ranks_from_embeddings(sketches, photos, true_photo_index(records, ids))


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
@dataclass
class EvalConfig:
    """Settings of one evaluation run."""

    data: str  # dataset spec: a QMUL-layout folder or "procedural[:photos=...,seed=...]"
    model: Path  # encoder checkpoint folder (model.safetensors + model.json)
    out: Path  # where metrics.json, curves.png, ranks.csv and config.json go
    split: str = "val"  # "val" / "holdout" (carved from train photos) or "test" (when the data has one)
    steps: str = "points"  # "points" = 17 fraction cuts of the literature; "strokes" = each stroke end
    val_fraction: float = 0.1  # share of train photos carved out as val (must match training)
    seed: int = 0  # seed of the val split (must match training)
    threads: int = 2  # torch and faiss threads
    gallery: str = "split"  # "split": the split's own photos; "all": every photo of the dataset
    holdout_fraction: float = 0.0  # share of train photos carved out as "holdout" (must match training)


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    parser = argparse.ArgumentParser(prog="python -m retrieval.evaluation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="QMUL-layout folder or procedural[:photos=N,seed=S] spec")
    parser.add_argument("--model", required=True, type=Path, help="encoder checkpoint folder")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--split", choices=("val", "test", "train", "holdout"), default="val", help="train: overfitting check"
    )
    parser.add_argument("--steps", choices=STEP_MODES, default="points")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--gallery",
        choices=("split", "all"),
        default="split",
        help="rank among the split's photos, or among every photo of the dataset",
    )
    parser.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.0,
        help="share of train photos carved out as the 'holdout' split (must match training; 0 = none)",
    )
    args = parser.parse_args(argv)
    return EvalConfig(
        args.data,
        args.model,
        args.out,
        args.split,
        args.steps,
        args.val_fraction,
        args.seed,
        args.threads,
        args.gallery,
        args.holdout_fraction,
    )


def run(cfg: EvalConfig) -> dict:
    """Evaluate, write the report files into ``cfg.out`` and return the metrics dict."""
    torch.set_num_threads(cfg.threads)
    set_faiss_threads(cfg.threads)
    started = time.perf_counter()
    dataset = open_dataset(
        cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed, holdout_fraction=cfg.holdout_fraction
    )
    check_split(dataset, cfg.split)  # fail before loading the model
    encoder = Encoder.load(cfg.model)
    records = dataset.sketches(cfg.split)
    if not records:
        raise ValueError(f"split {cfg.split!r} of {dataset.name!r} has no sketches to evaluate")
    ids, photos = photo_embeddings(encoder, dataset, cfg.split, progress=True, gallery=cfg.gallery)
    ranks = ranks_from_embeddings(
        embed_steps(encoder, records, cfg.steps, progress=True), photos, true_photo_index(records, ids)
    )
    summary = summarize(ranks, len(ids), shares=step_shares(records, cfg.steps))
    metrics = {**summary, "split": cfg.split, "model": str(cfg.model)}
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    config = {
        **asdict(cfg),
        "model_hash": model_hash(encoder),
        "dataset": dataset.name,
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    (cfg.out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    write_ranks_csv(cfg.out / "ranks.csv", records, np.asarray(ranks, dtype=np.float64))
    plot_curves(
        cfg.out / "curves.png",
        metrics,
        f"{dataset.name} {cfg.split}: {len(records)} sketches vs {len(ids)} photos, steps={cfg.steps}",
    )
    print(format_table(metrics))
    print(f"wrote {cfg.out}/metrics.json, curves.png, ranks.csv")
    return metrics


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        run(cfg)
    except MissingSplitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
