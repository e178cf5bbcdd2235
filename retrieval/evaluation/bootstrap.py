"""Intervals for "is model A better than model B?" that account for every source of noise we can resample.

A difference measured on one training run and one set of sketches mixes three kinds of luck: which
sketches were drawn, which *photos* they show (sketches of one photo are alike, so they are not
independent draws), and which training seed the run had. :func:`hierarchical_bootstrap` resamples
the last two levels: runs (seeds, or folds of a cross-validation, each with its own seed) with
replacement, then photos within each run, carrying all of a photo's sketches. The paired design
(A and B scored on the same sketches of the same run) removes what both share.

:func:`minimal_detectable_effect` turns the bootstrap standard error into the smallest true
difference a benchmark of that size finds with 80 % power at the 5 % level: a lever whose claimed
effect is below it cannot be told apart from noise by that benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

N_BOOT = 10_000


@dataclass(frozen=True)
class PairedRun:
    """One run's paired per-sketch differences (A minus B) for each metric, and each sketch's photo.

    Args:
        diffs: ``{metric: (Q,) array}`` of per-sketch differences in metric points
            (``retrieval.evaluation.metrics.per_sketch`` of A minus that of B, same sketch order).
        photo_ids: ``(Q,)`` the photo each sketch shows (the resampling cluster).
    """

    diffs: dict[str, np.ndarray]
    photo_ids: Sequence[str]

    def __post_init__(self) -> None:
        for key, values in self.diffs.items():
            if len(values) != len(self.photo_ids):
                raise ValueError(f"{key}: {len(values)} differences for {len(self.photo_ids)} sketches")


def paired_runs(metrics_a: Sequence[dict], metrics_b: Sequence[dict], photo_ids: Sequence[Sequence[str]]) -> list:
    """``PairedRun`` per run from per-sketch metric dicts of A and B (one dict per run, same sketches)."""
    if not len(metrics_a) == len(metrics_b) == len(photo_ids):
        raise ValueError(f"{len(metrics_a)} runs of A, {len(metrics_b)} of B, {len(photo_ids)} photo lists")
    return [
        PairedRun({k: np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64) for k in a}, list(p))
        for a, b, p in zip(metrics_a, metrics_b, photo_ids)
    ]


def hierarchical_bootstrap(
    runs: Sequence[PairedRun], keys: Sequence[str], *, n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Mean paired difference and its percentile interval, resampling runs, then photos within runs.

    The estimate is the mean over all sketches of all runs. Each resample draws runs with
    replacement (with a single run this level is fixed, and the interval covers photos and
    sketches only), then, for each run, that run's photos with replacement; a photo brings all its
    sketches. A run drawn twice in one resample reuses that resample's photo draw (a simplification:
    its photos' weight doubles instead of being drawn twice).

    Returns:
        ``{key: {"delta", "low", "high", "se", "n_runs", "n_photos", "n_sketches"}}``; ``se`` is
        the bootstrap standard deviation of the mean difference.
    """
    if not runs:
        raise ValueError("hierarchical_bootstrap needs at least one run")
    rng = np.random.default_rng(seed)
    n_runs = len(runs)
    run_weight = rng.multinomial(n_runs, np.full(n_runs, 1.0 / n_runs), size=n_boot)  # (B, runs) draws per run
    photo_weights = []  # per run: (B, photos) how often each photo was drawn
    groups = []  # per run: each sketch's photo index
    drawn_sketches = []  # per run: (B,) sketches drawn, the same for every metric
    for r, run in enumerate(runs):
        _, inverse = np.unique(np.asarray(run.photo_ids, dtype=str), return_inverse=True)
        n_photos = int(inverse.max()) + 1
        weights = rng.multinomial(n_photos, np.full(n_photos, 1.0 / n_photos), size=n_boot).astype(float)
        photo_weights.append(weights)
        groups.append(inverse)
        drawn_sketches.append(run_weight[:, r] * (weights @ np.bincount(inverse).astype(np.float64)))
    counts = np.sum(drawn_sketches, axis=0)
    tail = 100.0 * (1.0 - level) / 2.0
    out = {}
    for key in keys:
        totals = np.zeros(n_boot)
        for r, (run, inverse, weights) in enumerate(zip(runs, groups, photo_weights)):
            totals += run_weight[:, r] * (weights @ np.bincount(inverse, weights=run.diffs[key]))
        means = totals / counts
        low, high = np.percentile(means, [tail, 100.0 - tail])
        all_diffs = np.concatenate([run.diffs[key] for run in runs])
        out[key] = {
            "delta": float(all_diffs.mean()),
            "low": float(low),
            "high": float(high),
            "se": float(means.std(ddof=1)),
            "n_runs": n_runs,
            "n_photos": int(sum(int(g.max()) + 1 for g in groups)),
            "n_sketches": int(len(all_diffs)),
        }
    return out


def minimal_detectable_effect(se: float, level: float = 0.95, power: float = 0.8) -> float:
    """Smallest true difference a two-sided test at ``level`` detects with ``power``: ``(z_a/2 + z_power) * se``."""
    z = NormalDist().inv_cdf
    return float((z(0.5 + level / 2.0) + z(power)) * se)
