"""The partial-sketch rasteriser: blank paper, progressive ink, one-pass steps, canvas mapping."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.data.raster import render, render_steps, resize
from retrieval.data.sketch import Sketch, point_cuts


def _zigzag(n: int = 60, canvas: float = 256.0) -> Sketch:
    x = np.linspace(20, canvas - 20, n)
    y = 128 + 60 * np.sin(np.linspace(0, 6 * np.pi, n))
    pts = np.column_stack([x, y, np.arange(n) * 10.0])
    return Sketch((pts[: n // 3], pts[n // 3 : 2 * n // 3], pts[2 * n // 3 :]), canvas, 256.0)


def test_zero_points_is_blank_paper():
    s = _zigzag()
    for img in (render(s, 0), render(Sketch(())), render_steps(s, [0, 0])[1]):
        assert img.shape == (256, 256) and img.dtype == np.uint8 and (img == 255).all()


def test_ink_appears_progressively():
    s = _zigzag()
    steps = render_steps(s, point_cuts(s.num_points), size=128)
    ink = (steps < 128).sum(axis=(1, 2))
    assert ink[0] > 0
    assert np.all(np.diff(ink) >= 0) and ink[-1] > 3 * ink[0]
    # Ink only ever accumulates: every pixel inked at a step stays inked.
    assert np.all(steps[1:].astype(int) <= steps[:-1].astype(int) + 1)


def test_render_steps_equals_repeated_render():
    s = _zigzag(77)
    cuts = point_cuts(s.num_points)
    steps = render_steps(s, cuts, size=96, width=2)
    for cut, img in zip(cuts, steps):
        np.testing.assert_array_equal(img, render(s, int(cut), size=96, width=2))
    np.testing.assert_array_equal(render(s, size=96, width=2), render(s, s.num_points, size=96, width=2))


def test_canvas_maps_to_square_keeping_aspect():
    # A 512x256 canvas fills a 256 output horizontally and sits centred vertically (rows 64..192).
    dot = Sketch((np.array([[256.0, 128.0, 0.0]]),), 512, 256)
    img = render(dot, size=256, width=4)
    ys, xs = np.nonzero(img < 128)
    assert abs(xs.mean() - 128) < 1 and abs(ys.mean() - 128) < 1
    corner = render(Sketch((np.array([[4.0, 4.0, 0.0]]),), 512, 256), size=256, width=4)
    ys, xs = np.nonzero(corner < 128)
    assert abs(xs.mean() - 2) < 1.5 and abs(ys.mean() - 66) < 1.5


def test_partial_sketch_is_not_refitted():
    s = _zigzag()
    partial = render(s, s.num_points // 3)
    xs = np.nonzero((partial < 128).any(axis=0))[0]
    assert xs.max() < 256 * 0.5  # the first third stays on the left, where it was drawn


def test_single_point_stroke_draws_a_dot():
    img = render(Sketch((np.array([[100.0, 100.0, 0.0]]),)), width=5)
    assert (img < 128).sum() >= 9


def test_argument_checks():
    s = _zigzag()
    with pytest.raises(ValueError, match=">= 1"):
        render(s, width=0)
    with pytest.raises(ValueError, match="non-decreasing"):
        render_steps(s, [10, 5])


def test_resize_keeps_thin_lines():
    img = render(_zigzag(), size=256, width=1)
    small = resize(img, 64)
    assert small.shape == (64, 64) and (small < 200).any()
    assert resize(img, 256) is img
