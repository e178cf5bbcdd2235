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

* ``sketch_less``: "sketch less for more" in numbers. Of the sketches whose complete drawing puts
  the true photo in the top ``k``, the mean share of the sketch's points drawn (percent) when it
  first entered the top ``k``: lower = found with less drawing.

A ranks array is ``(Q, T)``: one row per sketch, one column per step. Rows of different lengths
(per-stroke steps) are padded with ``NaN``; a row's steps are at progress ``s / n_valid``.

Comparisons of two models on the same sketches: :func:`paired_bootstrap` (percentile interval of
the mean per-sketch difference, resampling sketches). Which checkpoint or head a run keeps:
:func:`selection_score`.
"""

from __future__ import annotations

import numpy as np

TOP_K = (1, 5, 10)
CURVE_POINTS = 17  # the literature's 17 partial-sketch cuts
HEADLINE_METRICS = (*(f"A@{k}" for k in TOP_K), "m@A", "m@B")  # the figures every table reports, in this order
SELECTION_METRICS = ("m@A+m@B", "m@A", "m@B", *(f"A@{k}" for k in TOP_K))


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


def summarize(
    ranks: np.ndarray, n_gallery: int, curve_points: int = CURVE_POINTS, shares: np.ndarray | None = None
) -> dict:
    """Headline metrics and progress curves from per-step ranks.

    Args:
        ranks: ``(Q, T)`` 1-based ranks, NaN-padded at the end of shorter rows.
        n_gallery: number of photos ranked against (needed for the rank percentile).
        curve_points: progress points of the curves (``p = 1/P .. 1``). A row contributes to a
            point with the rank of its last step at progress ``<= p``; rows with no step yet
            are left out of that point (``curve["n"]`` counts who is in).
        shares: ``(Q, T)`` share of points drawn at each step, for :func:`sketch_less`.

    Returns:
        ``{"A@1", "A@5", "A@10", "m@A", "m@B"}`` in percent, plus ``"curve"`` (lists keyed
        ``"progress"``, ``"rank_percentile"``, ``"reciprocal_rank"``, ``"A@1"``, ``"A@5"``,
        ``"A@10"``, ``"n"``), ``"sketch_less"`` (:func:`sketch_less`), ``"n_gallery"`` and
        ``"n_sketches"``.
    """
    out: dict = {k: float(np.mean(v)) for k, v in per_sketch(ranks, n_gallery).items()}
    ranks, _, n_valid = _as_rows(ranks)
    out["curve"] = _curve(ranks, n_valid, n_gallery, curve_points)
    out["sketch_less"] = sketch_less(ranks, shares)
    out["n_gallery"] = int(n_gallery)
    out["n_sketches"] = int(len(ranks))
    return out


def per_sketch(ranks: np.ndarray, n_gallery: int) -> dict[str, np.ndarray]:
    """Each sketch's own ``A@k`` (0 or 100), ``m@A`` and ``m@B`` (percent), ``(Q,)`` arrays.

    The headline metrics are their means: within a sketch first, so long (many-stroke) sketches
    weigh the same as short ones.
    """
    ranks, valid, n_valid = _as_rows(ranks)
    if n_gallery < 1 or np.nanmax(ranks) > n_gallery:
        raise ValueError(f"n_gallery={n_gallery} is smaller than the largest rank {np.nanmax(ranks):.0f}")
    final = ranks[np.arange(len(ranks)), n_valid - 1]
    percentile = np.where(valid, _percentile(np.nan_to_num(ranks, nan=n_gallery), n_gallery), 0.0)
    reciprocal = np.where(valid, 1.0 / np.nan_to_num(ranks, nan=1.0), 0.0)
    out = {f"A@{k}": 100.0 * (final <= k) for k in TOP_K}
    out["m@A"] = 100.0 * percentile.sum(axis=1) / n_valid
    out["m@B"] = 100.0 * reciprocal.sum(axis=1) / n_valid
    return out


def sketch_less(ranks: np.ndarray, shares: np.ndarray | None = None, ks: tuple[int, ...] = TOP_K) -> dict:
    """Share of the drawing needed: ``{"1": {"share": %, "n": count}, "5": ..., "10": ...}``.

    Of the sketches whose last step ranks the true photo in the top ``k``, the mean share of points
    drawn (percent) at the first step where it entered the top ``k``; ``n`` counts those sketches
    (``share`` is None when there are none).

    Args:
        ranks: ``(Q, T)`` ranks, NaN-padded like :func:`summarize`'s.
        shares: ``(Q, T)`` share of the sketch's points drawn at each step, in (0, 1]; default
            ``s / n_valid`` (exact for the 17 point cuts up to rounding).
        ks: the top-k thresholds.
    """
    ranks, valid, n_valid = _as_rows(ranks)
    if shares is None:
        shares = (np.arange(1, ranks.shape[1] + 1)[None, :] / n_valid[:, None]).astype(np.float64)
    shares = np.asarray(shares, dtype=np.float64)
    if shares.shape != ranks.shape:
        raise ValueError(f"shares must have the ranks' shape {ranks.shape}, got {shares.shape}")
    final = ranks[np.arange(len(ranks)), n_valid - 1]
    out = {}
    for k in ks:
        hit = valid & (np.nan_to_num(ranks, nan=np.inf) <= k)
        found = final <= k
        first = hit.argmax(axis=1)  # first step in the top k (rows that end there have one)
        at = shares[np.arange(len(ranks)), first][found]
        out[str(k)] = {"share": 100.0 * float(at.mean()) if len(at) else None, "n": int(found.sum())}
    return out


def paired_bootstrap(
    ranks_a: np.ndarray,
    ranks_b: np.ndarray,
    n_gallery: int,
    *,
    keys: tuple[str, ...] = HEADLINE_METRICS,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Model A minus model B on the same sketches, with a paired bootstrap percentile interval.

    Sketches are resampled with replacement ``n_boot`` times; each resample's mean per-sketch
    difference gives the interval. Pairing (same sketches for both models in every resample)
    removes the sketch-difficulty variance both models share.

    Returns:
        ``{key: {"delta": mean A - B, "low": ..., "high": ...}}`` in metric points.
    """
    a, b = per_sketch(ranks_a, n_gallery), per_sketch(ranks_b, n_gallery)
    if len(a["m@A"]) != len(b["m@A"]):
        raise ValueError("paired_bootstrap needs the same sketches (rows) for both models")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(a["m@A"]), size=(n_boot, len(a["m@A"])))
    tail = 100.0 * (1.0 - level) / 2.0
    out = {}
    for key in keys:
        diff = a[key] - b[key]
        means = diff[rows].mean(axis=1)
        low, high = np.percentile(means, [tail, 100.0 - tail])
        out[key] = {"delta": float(diff.mean()), "low": float(low), "high": float(high)}
    return out


def selection_score(summary: dict, metric: str = "m@A+m@B") -> float:
    """The validation number that picks the best checkpoint (supervised training) or head (RL).

    Higher is better. ``metric`` is one of :data:`SELECTION_METRICS`: a headline metric of
    :func:`summarize`, or ``"m@A+m@B"``, their plain sum. m@A rewards keeping the true photo high
    in the list all along the drawing, m@B rewards having it at the very top early; the sum asks
    for both, since a model can trade one for the other (the RL heads of issue 13 moved m@A up while
    m@B went down). Supervised training selects on ``m@B`` by default, RL and its control on the sum.
    """
    if metric not in SELECTION_METRICS:
        raise ValueError(f"select metric {metric!r} must be one of {SELECTION_METRICS}")
    return sum(summary[key] for key in metric.split("+"))


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
    """Headline metrics as a one-row plain-text table (for logs and the CLI), with the sketch-less line."""
    keys = [f"A@{k}" for k in TOP_K] + ["m@A", "m@B"]
    head = " | ".join(f"{k:>6}" for k in keys) + " | gallery | sketches"
    row = " | ".join(f"{metrics[k]:6.2f}" for k in keys) + f" | {metrics['n_gallery']:7d} | {metrics['n_sketches']:8d}"
    table = f"{head}\n{'-' * len(head)}\n{row}"
    if "sketch_less" in metrics:
        table += "\n" + format_sketch_less(metrics["sketch_less"])
    return table


def format_sketch_less(figure: dict) -> str:
    """``sketch less: top-1 52.3% of points (n=40), top-5 ...`` from :func:`sketch_less`'s dict."""
    parts = [
        f"top-{k} {'-' if v['share'] is None else format(v['share'], '.1f') + '%'} (n={v['n']})"
        for k, v in figure.items()
    ]
    return "share of points drawn when the photo first entered the top k: " + ", ".join(parts)
