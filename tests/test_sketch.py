"""The Sketch model's helpers: sizes, cuts, geometry and the on-the-fly step cuts."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.data.sketch import Sketch, point_cuts, step_cuts


def _sketch() -> Sketch:
    a = np.array([[10.0, 10.0, 0.0], [20.0, 10.0, 10.0], [30.0, 20.0, 20.0]])
    b = np.array([[40.0, 50.0, 400.0], [60.0, 90.0, 450.0]])
    c = np.array([[100.0, 100.0, 900.0], [110.0, 120.0, 950.0], [120.0, 110.0, 990.0], [130.0, 140.0, 1000.0]])
    return Sketch((a, b, c), 256, 256, {"id": "x"})


def test_sizes_points_and_stroke_ends():
    s = _sketch()
    assert (s.num_strokes, s.num_points) == (3, 9)
    assert s.points().shape == (9, 3)
    assert s.stroke_ends().tolist() == [3, 5, 9]
    assert Sketch(()).points().shape == (0, 3)


def test_rejects_bad_strokes_and_canvas():
    with pytest.raises(ValueError, match="non-empty"):
        Sketch((np.zeros((0, 3)),))
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        Sketch((np.zeros((4, 2)),))
    with pytest.raises(ValueError, match="canvas"):
        Sketch((np.zeros((1, 3)),), 0, 256)


def test_first_points_cuts_inside_a_stroke():
    s = _sketch()
    cut = s.first_points(4)
    assert cut.num_points == 4 and cut.num_strokes == 2
    np.testing.assert_array_equal(cut.strokes[1], s.strokes[1][:1])
    assert s.first_points(0).num_points == 0 and s.first_points(-3).num_points == 0
    assert s.first_points(100).num_points == 9
    assert cut.meta == s.meta and cut.canvas_width == 256


def test_first_strokes_and_fraction():
    s = _sketch()
    assert s.first_strokes(2).num_points == 5
    assert s.first_strokes(0).num_strokes == 0
    assert s.first_fraction(1.0).num_points == 9
    assert s.first_fraction(0.5).num_points == round(4.5)
    assert s.first_fraction(0.0).num_points == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        s.first_fraction(1.5)


def test_bbox_and_normalized_keep_aspect_and_centre():
    s = _sketch()
    assert s.bbox() == (10.0, 10.0, 130.0, 140.0)
    n = s.normalized(size=100, margin=0.1)
    x0, y0, x1, y1 = n.bbox()
    assert max(x1 - x0, y1 - y0) == pytest.approx(80.0)  # the longer side fills size * (1 - 2 margin)
    assert (x1 - x0) / (y1 - y0) == pytest.approx(120 / 130)
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx((50.0, 50.0))
    np.testing.assert_array_equal(n.points()[:, 2], s.points()[:, 2])  # timing untouched
    assert (n.canvas_width, n.canvas_height) == (100, 100)
    with pytest.raises(ValueError, match="empty"):
        Sketch(()).bbox()


def test_with_canvas():
    s = _sketch().with_canvas(512, 300)
    assert (s.canvas_width, s.canvas_height, s.num_points) == (512, 300, 9)


def test_point_cuts_follow_the_17_step_protocol():
    cuts = point_cuts(170)
    assert len(cuts) == 17 and cuts[-1] == 170
    np.testing.assert_array_equal(cuts, np.round(np.linspace(0, 170, 18))[1:])
    assert np.all(np.diff(cuts) >= 0)
    assert point_cuts(5).min() == 1  # never an empty step, even for tiny sketches
    assert len(point_cuts(40, num_steps=4)) == 4


def test_step_cuts_modes():
    s = _sketch()
    assert step_cuts(s, "strokes").tolist() == [3, 5, 9]
    assert step_cuts(s, "points")[-1] == 9 and len(step_cuts(s, "points")) == 17
    with pytest.raises(ValueError, match="points"):
        step_cuts(s, "time")
