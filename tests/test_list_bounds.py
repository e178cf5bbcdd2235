"""IVF list bounds: every member's score inside them, for any norms, shells and query direction."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.serving.exact_rank import canonical_scores
from retrieval.serving.list_bounds import ListStats


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def list_bounds_case(rng: np.random.Generator, norms: np.ndarray, shells: int):
    """Clustered rows scaled to ``norms``, assigned to their nearest of 12 centres and split into
    ``shells`` lists by distance to it; returns the rows, their list and the stats."""
    centres = unit_rows(rng, 12, 24)
    rows = centres[rng.integers(0, 12, len(norms))] + 0.6 * unit_rows(rng, len(norms), 24)
    rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True) * norms[:, None]).astype(np.float32)
    nearest = np.argmax(rows @ centres.T, axis=1)
    centroids = np.stack([rows[nearest == c].mean(axis=0) for c in range(12)])
    distance = np.linalg.norm(rows.astype(np.float64) - centroids[nearest], axis=1)
    shell = np.minimum((distance * shells / (distance.max() + 1e-9)).astype(np.int64), shells - 1)
    labels = nearest * shells + shell
    stats = ListStats.compute(rows, labels, np.repeat(centroids, shells, axis=0))
    return rows, labels, stats


@pytest.mark.parametrize("shells", [1, 4])
@pytest.mark.parametrize("spread_of_norms", [0.0, 0.5])
def test_list_bounds_hold_every_member_and_the_cone_tightens_the_ball(shells, spread_of_norms):
    rng = np.random.default_rng(5)
    norms = 1.0 + spread_of_norms * rng.uniform(-1, 1, 4000)
    rows, labels, stats = list_bounds_case(rng, norms, shells)
    distinct_centroids = stats.centroids[::shells]
    queries = [*unit_rows(rng, 40, 24) * rng.uniform(0.1, 3.0, (40, 1)), rows[0], -rows[0]]
    queries += [distinct_centroids[0], -distinct_centroids[0]]  # exactly along / against a centroid
    for query in queries:
        lower, upper = stats.bounds(query)
        scores = canonical_scores(query, rows)
        assert np.all(scores <= upper[labels]) and np.all(scores >= lower[labels])
        centre = stats.centroids @ np.asarray(query, np.float64)
        spread = np.linalg.norm(query) * stats.radius
        assert np.all(upper <= centre + spread * (1 + 1e-6) + 1e-6)  # never looser than the ball alone
        if spread_of_norms == 0.0 and any(query is row for row in rows[:1]):
            # A photo as query, on the unit sphere: no score exceeds 1; the ball's bound of its own
            # list does (centre ~ |c| plus the radius), the cone's does not.
            assert np.max(upper) <= 1 + 1e-6 < np.max(centre + spread)
