"""Randomised photo edge maps: deterministic per seed, sparse dark ink on white paper."""

from __future__ import annotations

import cv2
import numpy as np

from retrieval.data.edges import EdgeParams, edge_map, edge_maps


def _object_photo() -> np.ndarray:
    """A catalogue-like photo: a dark chair-ish shape with a lighter seat on white."""
    img = np.full((200, 160, 3), 255, np.uint8)
    cv2.rectangle(img, (40, 60), (120, 90), (90, 60, 40), -1)
    for x in (45, 110):
        cv2.rectangle(img, (x, 90), (x + 6, 180), (30, 30, 30), -1)
    cv2.rectangle(img, (40, 10), (50, 60), (120, 80, 50), -1)
    return img


def test_same_seed_same_map_other_seed_differs():
    photo = _object_photo()
    a = edge_map(photo, np.random.default_rng(3), size=64)
    b = edge_map(photo, np.random.default_rng(3), size=64)
    np.testing.assert_array_equal(a, b)
    others = edge_maps(photo, np.random.default_rng(4), count=4, size=64)
    assert others.shape == (4, 64, 64)
    assert any(not np.array_equal(a, o) for o in others)


def test_maps_look_like_sparse_ink_on_paper():
    maps = edge_maps(_object_photo(), np.random.default_rng(0), count=6, size=96)
    assert maps.dtype == np.uint8
    for m in maps:
        ink = m < 128
        assert m.max() == 255 and (m[0] == 255).all()  # white paper, border untouched
        assert 0.005 < ink.mean() < 0.25, ink.mean()  # sparse but present


def test_blank_photo_gives_blank_paper_and_params_apply():
    blank = edge_map(np.full((50, 50, 3), 200, np.uint8), np.random.default_rng(0), size=32)
    assert (blank == 255).all()
    thick = EdgeParams(width=(6, 6), thin_prob=0.0, fragment_dropout=(0.0, 0.0))
    thin = EdgeParams(width=(1, 1), thin_prob=1.0, fragment_dropout=(0.0, 0.0))
    photo = _object_photo()
    ink_thick = (edge_map(photo, np.random.default_rng(1), 128, params=thick) < 200).mean()
    ink_thin = (edge_map(photo, np.random.default_rng(1), 128, params=thin) < 200).mean()
    assert ink_thick > 2 * ink_thin


def test_letterbox_padding_draws_no_frame():
    wide = np.full((60, 200, 3), 150, np.uint8)  # grey background, wider than tall -> padded top/bottom
    cv2.circle(wide, (100, 30), 20, (20, 20, 20), -1)
    for seed in range(3):
        m = edge_map(wide, np.random.default_rng(seed), size=128, params=EdgeParams(fragment_dropout=(0.0, 0.0)))
        rows_with_ink = np.nonzero((m < 200).any(axis=1))[0]
        assert len(rows_with_ink) > 0
        # the circle spans rows ~44-84 of 128; the padding boundary rows (~49 and ~79) must not be full lines
        assert (m < 200).sum(axis=1).max() < 0.5 * 128
