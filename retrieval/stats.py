"""Statistics shared by the two layers that judge: evaluation (models on replayed sketches) and the
study analysis (people drawing). Pure numpy, so it lives below both (tests/test_architecture.py).

* :func:`bootstrap_mean`: mean of paired differences with a percentile bootstrap interval,
  resampling units (sketches, participants) with replacement; every key shares the resample.
* :func:`bootstrap_mean_difference`: the same for two independent groups (between-subject designs).
* :func:`first_entry_share`: "sketch less" per sketch: the share of the drawing done when the true
  photo first entered the top ``k``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

N_BOOT = 10_000


def _interval(means: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_mean(
    values: Mapping[str, npt.ArrayLike], *, n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, float]]:
    """``{key: {"delta", "low", "high"}}``: each array's mean and its percentile interval.

    The arrays are one value per unit (e.g. a per-sketch or per-participant difference A - B), all
    the same length; units are resampled with replacement ``n_boot`` times, the same draw for
    every key.

    Raises:
        ValueError: the arrays differ in length or are empty.
    """
    arrays = {key: np.asarray(v, dtype=np.float64) for key, v in values.items()}
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"bootstrap_mean needs non-empty arrays of one length, got lengths {sorted(lengths)}")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, lengths.pop(), size=(n_boot, len(next(iter(arrays.values())))))
    out = {}
    for key, a in arrays.items():
        low, high = _interval(a[rows].mean(axis=1), level)
        out[key] = {"delta": float(a.mean()), "low": low, "high": high}
    return out


def bootstrap_mean_difference(
    a: npt.ArrayLike, b: npt.ArrayLike, *, n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """``{"delta", "low", "high"}``: mean(a) - mean(b) for independent groups, each resampled on its own."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not len(a) or not len(b):
        raise ValueError("bootstrap_mean_difference needs at least one value in each group")
    rng = np.random.default_rng(seed)
    means_a = a[rng.integers(0, len(a), size=(n_boot, len(a)))].mean(axis=1)
    means_b = b[rng.integers(0, len(b), size=(n_boot, len(b)))].mean(axis=1)
    low, high = _interval(means_a - means_b, level)
    return {"delta": float(a.mean() - b.mean()), "low": low, "high": high}


def first_entry_share(ranks: npt.ArrayLike, shares: npt.ArrayLike, k: int) -> np.ndarray:
    """Per row, the share drawn (0-1) at the first step the rank was <= ``k``; NaN if the last step's was not.

    Args:
        ranks: ``(Q, T)`` rank after each step; rows shorter than ``T`` are NaN-padded at the end.
        shares: ``(Q, T)`` share of the sketch drawn at each step.
        k: the top-k threshold.

    Only rows whose last valid step ranks within ``k`` count (the convention of the on-the-fly
    papers: a sketch that ends outside the top ``k`` did not find its photo there).
    """
    ranks, shares = np.asarray(ranks, dtype=np.float64), np.asarray(shares, dtype=np.float64)
    if ranks.ndim != 2 or shares.shape != ranks.shape:
        raise ValueError(f"ranks and shares must be (Q, T) of one shape, got {ranks.shape} and {shares.shape}")
    valid = np.isfinite(ranks)
    n_valid = valid.sum(axis=1)
    rows = np.arange(len(ranks))
    final = np.where(n_valid > 0, ranks[rows, np.maximum(n_valid - 1, 0)], np.inf)
    hit = valid & (np.nan_to_num(ranks, nan=np.inf) <= k)
    at = shares[rows, hit.argmax(axis=1)]  # first step in the top k (rows that end there have one)
    return np.where(final <= k, at, np.nan)
