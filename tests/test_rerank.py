"""Re-ranking: alpha-QE and DBA on hand-made embeddings."""

from __future__ import annotations

import numpy as np

from bench.accuracy.rerank import alpha_query_expansion, database_augmentation


def unit(*rows):
    x = np.array(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_query_expansion_adds_the_weighted_top_neighbours():
    gallery = unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    query = unit([0.9, 0.3, 0.1])
    s = query @ gallery.T
    expanded = alpha_query_expansion(query, gallery, k=2, alpha=1.0)
    want = query + s[0, 0] * gallery[0] + s[0, 1] * gallery[1]  # top 2 by similarity, weights sim^1
    np.testing.assert_allclose(expanded, want / np.linalg.norm(want), atol=1e-6)
    np.testing.assert_array_equal(alpha_query_expansion(query, gallery, k=0), query)


def test_negative_similarities_add_nothing():
    gallery = unit([-1, 0], [0, 1])
    query = unit([1, 0.01])
    expanded = alpha_query_expansion(query, gallery, k=2, alpha=3.0)
    manual = query + (query @ gallery[1]) ** 3 * gallery[1]
    np.testing.assert_allclose(expanded, manual / np.linalg.norm(manual), atol=1e-6)


def test_database_augmentation_skips_each_photo_itself_and_keeps_unit_rows():
    gallery = unit([1, 0, 0], [0.8, 0.6, 0], [0, 0, 1])
    augmented = database_augmentation(gallery, k=1, alpha=1.0)
    np.testing.assert_allclose(np.linalg.norm(augmented, axis=1), 1.0, atol=1e-6)
    # photo 0's nearest other photo is photo 1 (cosine 0.8); photo 2 has no positive neighbour
    want0 = gallery[0] + 0.8 * gallery[1]
    np.testing.assert_allclose(augmented[0], want0 / np.linalg.norm(want0), atol=1e-6)
    np.testing.assert_allclose(augmented[2], gallery[2], atol=1e-6)
