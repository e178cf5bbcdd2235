"""The on-the-fly FG-SBIR protocol: the rank of each sketch's photo after every drawing step.

Every sketch of a split is rendered at each step (the 17 point-fraction cuts of the literature,
or each stroke end), embedded, and ranked against the split's photos (or all photos of the data).
One path for every caller:

- :func:`evaluate_split`: encoder + dataset split -> :class:`Evaluation` (ranks and metrics).
  ``python -m retrieval.evaluation`` and the benches call it.
- :func:`score_embeddings`: per-step sketch embeddings + gallery -> :class:`Evaluation`. The part
  of :func:`evaluate_split` after the network; training validation (cached rasters, see
  ``retrieval.train.batches.ValidationSet``), RL (a candidate head on cached backbone features,
  :func:`embed_steps` with ``output="features"``) and the re-ranking bench call it directly.

Ranks count ties against the query (``retrieval.serving.exact_rank.true_ranks``); the metrics are
``retrieval.evaluation.metrics.summarize``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from retrieval.data.dataset_protocol import RetrievalDataset, SketchRecord
from retrieval.data.raster import render_steps
from retrieval.data.sketch import step_cuts
from retrieval.evaluation.metrics import summarize
from retrieval.model.encoder import Encoder
from retrieval.model.progress_head import ink_share
from retrieval.serving.exact_rank import true_ranks
from retrieval.serving.gallery import ALL_SPLITS, dataset_photo_ids

STEP_MODES = ("points", "strokes")
OUTPUTS = ("embeddings", "features")
GALLERIES = ("split", "all")


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
    """Photo ids of the evaluation gallery: the split's own photos, or every photo of the data (sorted).

    ``gallery="all"`` ranks a split's sketches among all photos (e.g. Chair-V2 val sketches against
    all 300 train+val photos): more distractors, so numbers compare across differently sized splits.
    The ids come from ``retrieval.serving.gallery.dataset_photo_ids``, the gallery the app builds.
    """
    check_split(dataset, split)
    if gallery not in GALLERIES:
        raise ValueError(f"gallery must be 'split' or 'all', got {gallery!r}")
    return dataset_photo_ids(dataset, split if gallery == "split" else ALL_SPLITS)


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


@dataclass(frozen=True)
class Evaluation:
    """Per-step ranks of a split's sketches and their metrics.

    Attributes:
        ranks: ``(Q, T)`` rank of each sketch's true photo after each step (see
            :func:`ranks_from_embeddings` for the dtype); rows in ``dataset.sketches(split)`` order.
        summary: ``retrieval.evaluation.metrics.summarize`` of ``ranks`` (A@k, m@A, m@B, curves,
            sketch-less figure, gallery and sketch counts).
    """

    ranks: np.ndarray
    summary: dict


def score_embeddings(
    sketch_embeddings: np.ndarray,
    photo_embeddings: np.ndarray,
    true_idx: np.ndarray,
    shares: np.ndarray | None = None,
) -> Evaluation:
    """Ranks and metrics from embeddings: the one place where evaluation turns vectors into numbers.

    Args:
        sketch_embeddings: ``(Q, T, D)`` unit rows, NaN rows for padded steps.
        photo_embeddings: ``(N, D)`` gallery; ``N`` is the gallery size of the rank percentile.
        true_idx: ``(Q,)`` gallery row of each sketch's photo.
        shares: ``(Q, T)`` share of points drawn at each step (:func:`step_shares`) for the
            sketch-less figure; ``None``: step ``s`` of ``n`` counts as ``s / n``.
    """
    ranks = ranks_from_embeddings(sketch_embeddings, photo_embeddings, true_idx)
    return Evaluation(ranks, summarize(ranks, len(photo_embeddings), shares=shares))


def evaluate_split(
    encoder: Encoder,
    dataset: RetrievalDataset,
    split: str,
    *,
    gallery: str = "split",
    steps: str = "points",
    progress: bool = False,
) -> Evaluation:
    """Rank every sketch of ``split`` after each step among the gallery's photos, and summarise.

    Args:
        encoder: renders at its own raster settings, embeds sketches and photos.
        dataset: the data; ``split`` must be one of its splits (else :class:`MissingSplitError`).
        split: whose sketches are the queries.
        gallery: ``"split"`` (the split's own photos) or ``"all"`` (every photo of the data), see
            :func:`gallery_photo_ids`.
        steps: ``"points"`` (the 17 cuts of the literature) or ``"strokes"`` (each stroke end).
        progress: show tqdm bars.
    """
    check_split(dataset, split)
    records = dataset.sketches(split)
    if not records:
        raise ValueError(f"split {split!r} of {dataset.name!r} has no sketches to evaluate")
    ids, photos = photo_embeddings(encoder, dataset, split, progress=progress, gallery=gallery)
    sketches = embed_steps(encoder, records, steps, progress=progress)
    return score_embeddings(sketches, photos, true_photo_index(records, ids), shares=step_shares(records, steps))
