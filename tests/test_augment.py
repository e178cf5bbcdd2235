"""Stroke-aware sketch augmentation and photo augmentation keep valid, sensible outputs."""

from __future__ import annotations

import numpy as np

from retrieval.data.augment import (
    PhotoAugment,
    SketchAugment,
    augment_photo,
    augment_sketch,
    drop_strokes,
    flip_photo,
    flip_sketch,
    random_cut,
    render_augmented,
)
from retrieval.data.sketch import Sketch


def _sketch(n_strokes: int = 5) -> Sketch:
    rng = np.random.default_rng(0)
    strokes = []
    for i in range(n_strokes):
        xy = rng.uniform(40, 200, (12, 2))
        strokes.append(np.column_stack([xy, 100.0 * i + np.arange(12)]))
    return Sketch(tuple(strokes))


def test_augmented_sketches_stay_valid_and_keep_timing():
    sketch, aug = _sketch(), SketchAugment()
    for seed in range(20):
        out = augment_sketch(sketch, aug, np.random.default_rng(seed))
        assert 1 <= out.num_strokes <= sketch.num_strokes and out.num_points >= 1
        assert all(np.isfinite(s).all() for s in out.strokes)
        t = out.points()[:, 2]
        assert np.all(np.diff(t) >= 0)  # drawing order / timestamps preserved
        x0, y0, x1, y1 = out.bbox()
        assert -30 < x0 and x1 < 286 and -30 < y0 and y1 < 286  # stays near the canvas


def test_drop_strokes_never_empties_and_cut_is_a_prefix():
    sketch = _sketch(3)
    for seed in range(10):
        assert drop_strokes(sketch, 1.0, np.random.default_rng(seed)).num_strokes == 1
    cut = random_cut(sketch, 0.3, np.random.default_rng(1))
    assert 0.3 * sketch.num_points - 1 <= cut.num_points <= sketch.num_points
    np.testing.assert_array_equal(cut.points(), sketch.points()[: cut.num_points])
    partial = augment_sketch(sketch, SketchAugment(drop_stroke_prob=0), np.random.default_rng(2), partial=True)
    assert partial.num_points <= sketch.num_points


def test_render_augmented_and_flip():
    rng = np.random.default_rng(0)
    img = render_augmented(_sketch(), SketchAugment(), rng, size=64)
    assert img.shape == (64, 64) and img.dtype == np.uint8 and img.min() < 128 and img.max() == 255
    sketch = _sketch()
    np.testing.assert_allclose(flip_sketch(flip_sketch(sketch)).points(), sketch.points())


def test_photo_augment_shape_and_determinism():
    photo = np.random.default_rng(0).integers(0, 256, (90, 60, 3), dtype=np.uint8)
    a = augment_photo(photo, PhotoAugment(), np.random.default_rng(5), size=48)
    b = augment_photo(photo, PhotoAugment(), np.random.default_rng(5), size=48)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(flip_photo(flip_photo(photo)), photo)
