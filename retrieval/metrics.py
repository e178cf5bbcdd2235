"""On-the-fly FG-SBIR metrics: the rank of the true photo after each drawing step.

Conventions (as the on-the-fly FG-SBIR papers print them, all in percent):

* ``A@k``: share of sketches whose true photo is in the top ``k`` once the sketch is complete
  (the last valid step of each row).
* ``m@A``: mean over sketches (and, within a sketch, over its steps) of the rank percentile
  ``(N - rank) / (N - 1)``: 100 when the true photo is always first, 0 when always last.
* ``m@B``: mean over sketches (and steps) of ``1 / rank`` (mean reciprocal rank over the drawing).

Ranks count ties *against* the query: ``rank = 1 + #other photos scoring >= the true one``.
Counting them in its favour lets an untrained net whose embeddings collapse to one point reach
rank 1 for every sketch.

A ranks array is ``(Q, T)``: one row per sketch, one column per step. Rows of different lengths
(per-stroke steps) are padded with ``NaN``; a row's steps are at progress ``s / n_valid``.
"""

from __future__ import annotations

import numpy as np

TOP_K = (1, 5, 10)
CURVE_POINTS = 17  # the literature's 17 partial-sketch cuts


def true_ranks(scores: np.ndarray, true_idx: np.ndarray) -> np.ndarray:
    """Rank (1-based) of each query's true item, ties counted against the query.

    Args:
        scores: ``(Q, N)`` similarity of each query to each gallery item (higher = closer).
        true_idx: ``(Q,)`` column of each query's true item.

    Returns:
        ``(Q,)`` int64 ranks in ``1..N``.
    """
    scores = np.asarray(scores)
    true_idx = np.asarray(true_idx, dtype=np.int64)
    if scores.ndim != 2 or true_idx.shape != (scores.shape[0],):
        raise ValueError(f"expected scores (Q, N) and true_idx (Q,), got {scores.shape} and {true_idx.shape}")
    if len(true_idx) and (true_idx.min() < 0 or true_idx.max() >= scores.shape[1]):
        raise ValueError(f"true_idx must index the {scores.shape[1]} gallery columns")
    true_scores = scores[np.arange(len(true_idx)), true_idx][:, None]
    # ">=" counts the true item itself once: that is the "1 +" of the definition.
    return (scores >= true_scores).sum(axis=1).astype(np.int64)


def _as_rows(ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float ranks (Q, T), validity mask, and number of valid steps per row."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.ndim == 1:
        ranks = ranks[:, None]
    if ranks.ndim != 2:
        raise ValueError(f"ranks must be (Q, T), got shape {ranks.shape}")
    valid = np.isfinite(ranks)
    n_valid = valid.sum(axis=1)
    if np.any(n_valid == 0):
        raise ValueError("every sketch needs at least one ranked step; drop empty sketches before summarising")
    # Padding must be trailing: step s of a row is at progress s / n_valid.
    if np.any(valid != (np.arange(ranks.shape[1])[None, :] < n_valid[:, None])):
        raise ValueError("NaN padding must come after a row's valid steps")
    if np.any(ranks[valid] < 1):
        raise ValueError("ranks are 1-based; got a rank < 1")
    return ranks, valid, n_valid


def _percentile(ranks: np.ndarray, n_gallery: int) -> np.ndarray:
    if n_gallery <= 1:
        return np.ones_like(ranks)
    return (n_gallery - ranks) / (n_gallery - 1)


def summarize(ranks: np.ndarray, n_gallery: int, curve_points: int = CURVE_POINTS) -> dict:
    """Headline metrics and progress curves from per-step ranks.

    Args:
        ranks: ``(Q, T)`` 1-based ranks, NaN-padded at the end of shorter rows.
        n_gallery: number of photos ranked against (needed for the rank percentile).
        curve_points: progress points of the curves (``p = 1/P .. 1``). A row contributes to a
            point with the rank of its last step at progress ``<= p``; rows with no step yet
            are left out of that point (``curve["n"]`` counts who is in).

    Returns:
        ``{"A@1", "A@5", "A@10", "m@A", "m@B"}`` in percent, plus ``"curve"`` (lists keyed
        ``"progress"``, ``"rank_percentile"``, ``"reciprocal_rank"``, ``"A@1"``, ``"A@5"``,
        ``"A@10"``, ``"n"``), ``"n_gallery"`` and ``"n_sketches"``.
    """
    ranks, valid, n_valid = _as_rows(ranks)
    if n_gallery < 1 or np.nanmax(ranks) > n_gallery:
        raise ValueError(f"n_gallery={n_gallery} is smaller than the largest rank {np.nanmax(ranks):.0f}")
    q = len(ranks)
    final = ranks[np.arange(q), n_valid - 1]
    percentile = np.where(valid, _percentile(np.nan_to_num(ranks, nan=n_gallery), n_gallery), 0.0)
    reciprocal = np.where(valid, 1.0 / np.nan_to_num(ranks, nan=1.0), 0.0)
    out: dict = {f"A@{k}": 100.0 * float(np.mean(final <= k)) for k in TOP_K}
    # Mean within each sketch first so long (many-stroke) sketches weigh the same as short ones.
    out["m@A"] = 100.0 * float(np.mean(percentile.sum(axis=1) / n_valid))
    out["m@B"] = 100.0 * float(np.mean(reciprocal.sum(axis=1) / n_valid))
    out["curve"] = _curve(ranks, n_valid, n_gallery, curve_points)
    out["n_gallery"] = int(n_gallery)
    out["n_sketches"] = int(q)
    return out


def _curve(ranks: np.ndarray, n_valid: np.ndarray, n_gallery: int, points: int) -> dict:
    progress = np.arange(1, points + 1) / points
    curve: dict[str, list] = {"progress": [], "rank_percentile": [], "reciprocal_rank": [], "n": []}
    curve.update({f"A@{k}": [] for k in TOP_K})
    for p in progress:
        # Last step whose progress s / n_valid <= p (small epsilon: 17/17 must reach step 17).
        steps_done = np.floor(p * n_valid + 1e-9).astype(np.int64)
        have = steps_done >= 1
        at_p = ranks[np.nonzero(have)[0], steps_done[have] - 1]
        curve["progress"].append(100.0 * float(p))
        curve["n"].append(int(have.sum()))
        if len(at_p) == 0:
            for key in ("rank_percentile", "reciprocal_rank", *(f"A@{k}" for k in TOP_K)):
                curve[key].append(None)
            continue
        curve["rank_percentile"].append(100.0 * float(np.mean(_percentile(at_p, n_gallery))))
        curve["reciprocal_rank"].append(100.0 * float(np.mean(1.0 / at_p)))
        for k in TOP_K:
            curve[f"A@{k}"].append(100.0 * float(np.mean(at_p <= k)))
    return curve


def format_table(metrics: dict) -> str:
    """Headline metrics as a one-row plain-text table (for logs and the CLI)."""
    keys = [f"A@{k}" for k in TOP_K] + ["m@A", "m@B"]
    head = " | ".join(f"{k:>6}" for k in keys) + " | gallery | sketches"
    row = " | ".join(f"{metrics[k]:6.2f}" for k in keys) + f" | {metrics['n_gallery']:7d} | {metrics['n_sketches']:8d}"
    return f"{head}\n{'-' * len(head)}\n{row}"
