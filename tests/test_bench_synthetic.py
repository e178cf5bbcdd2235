"""bench/lib/synthetic.py: the exact top-k and the one recall@k every index bench reports."""

from __future__ import annotations

import numpy as np

from bench.lib.synthetic import exact_top_k, recall_at_k


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_exact_top_k_in_chunks_equals_one_full_sort():
    vectors, queries = unit_vectors(1000, 16, 0), unit_vectors(7, 16, 1)
    rows, scores = exact_top_k(queries, vectors, 10, chunk=128)
    full = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    assert np.array_equal(rows, full)
    assert np.allclose(scores, np.take_along_axis(queries @ vectors.T, full, 1))


def test_recall_counts_hits_misses_and_what_faiss_did_not_find():
    vectors, queries = unit_vectors(1000, 16, 0), unit_vectors(5, 16, 1)
    truth, _ = exact_top_k(queries, vectors, 10)
    assert recall_at_k(queries, vectors, truth, truth) == 1.0
    assert recall_at_k(queries, vectors, [t[:5] for t in truth], truth) == 0.5
    worst = np.argsort(queries @ vectors.T, axis=1)[:, :10]
    assert recall_at_k(queries, vectors, worst, truth) == 0.0
    assert recall_at_k(queries, vectors, [[-1] * 10] * 5, truth) == 0.0


def test_a_photo_tied_with_the_kth_is_a_hit_not_a_miss():
    vectors, queries = unit_vectors(1000, 16, 0), unit_vectors(1, 16, 1)
    truth, _ = exact_top_k(queries, vectors, 10)
    with_twin = np.vstack([vectors, vectors[truth[0, -1]][None]])  # row 1000 duplicates the 10th best
    returned = [[*truth[0, :9], 1000]]
    assert recall_at_k(queries, with_twin, returned, truth) == 1.0
    assert len(set(returned[0]) & set(truth[0])) / 10 == 0.9, "plain overlap would have called it a miss"
