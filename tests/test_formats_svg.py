"""SVG sketches: svgpathtools parsing with transforms, fixed-step resampling, writer round trip, TU-Berlin."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.data.formats import parse_svg, read_svg, resample_polyline, sketch_to_svg, write_svg
from retrieval.data.sketch import Sketch
from tests.sketch_compare import assert_same_sketch

SVG = """<?xml version="1.0"?>
<svg viewBox="10 20 400 300" width="800px" height="600px" xmlns="http://www.w3.org/2000/svg">
<defs><path d="M0 0 L999 999"/></defs>
<g transform="translate(10,20)">
  <path id="a" d="M0 0 L100 0"/>
  <g transform="scale(2)"><path id="b" d="M10 10 C10 30 30 30 30 10"/></g>
  <path id="c" d="M50 50 L50 50"/>
  <polyline points="0,100 0,130"/>
  <path id="d" d="M200 0 L210 0 M300 0 L300 10"/>
</g>
</svg>"""


def test_resample_polyline_fixed_step():
    pts = resample_polyline(np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 5.0]]), 2.0)
    np.testing.assert_allclose(pts[:6], [[0, 0], [2, 0], [4, 0], [6, 0], [8, 0], [10, 0]])
    np.testing.assert_allclose(pts[-1], [10, 5])
    assert len(pts) == 9  # 0..14 every 2, plus the end at 15
    np.testing.assert_array_equal(resample_polyline(np.array([[3.0, 4.0], [3.0, 4.0]]), 1.0), [[3, 4]])
    with pytest.raises(ValueError, match="positive"):
        resample_polyline(pts, 0.0)


def test_parse_svg_document_order_transforms_and_viewbox():
    sketch = parse_svg(SVG, step=1.0)
    assert (sketch.canvas_width, sketch.canvas_height) == (400.0, 300.0)  # viewBox wins over width/height
    # a, b, c, polyline, d (two subpaths -> two strokes); the path inside <defs> is not drawn.
    assert sketch.num_strokes == 6
    line = sketch.strokes[0]
    # translate(10,20), then the viewBox origin (10,20) is subtracted: canvas coordinates start at 0.
    np.testing.assert_allclose(line[[0, -1], :2], [[0, 0], [100, 0]])
    assert len(line) == 101 and np.allclose(np.diff(line[:, 0]), 1.0)
    curve = sketch.strokes[1]  # scaled by 2 inside the translated group
    np.testing.assert_allclose(curve[[0, -1], :2], [[20, 20], [60, 20]], atol=1e-9)
    assert curve[:, 1].max() == pytest.approx(20 + 2 * 15, abs=0.05)  # the cubic bulges 3/4 of its 20 handles
    steps = np.hypot(*np.diff(curve[:, :2], axis=0).T)
    assert np.allclose(steps[:-1], 1.0, atol=0.02) and steps[-1] <= 1.0 + 1e-6
    np.testing.assert_allclose(sketch.strokes[2], [[50, 50, 0]])  # a dot stays one point
    np.testing.assert_allclose(sketch.strokes[3][[0, -1], :2], [[0, 100], [0, 130]])
    np.testing.assert_allclose(sketch.strokes[4][[0, -1], :2], [[200, 0], [210, 0]])
    np.testing.assert_allclose(sketch.strokes[5][[0, -1], :2], [[300, 0], [300, 10]])
    assert not sketch.points()[:, 2].any()


def test_canvas_from_width_height_and_default_step():
    sketch = parse_svg('<svg xmlns="http://www.w3.org/2000/svg" width="256" height="128"><path d="M0 0 L256 0"/></svg>')
    assert (sketch.canvas_width, sketch.canvas_height) == (256.0, 128.0)
    assert len(sketch.strokes[0]) == 129  # default step = 256 / 128 = 2


@pytest.mark.parametrize("text, message", [("<svg", "well-formed"), ("<html/>", "expected <svg>")])
def test_bad_documents(text, message):
    with pytest.raises(ValueError, match=message):
        parse_svg(text)


def test_writer_round_trips(tmp_path):
    # Points already spaced by the step come back exactly; a single-point stroke survives as a dot.
    strokes = (
        np.array([[10.0, 10, 0], [12, 10, 0], [14, 10, 0], [14, 12, 0]]),
        np.array([[100.25, 50.5, 0]]),
        np.array([[20.0, 80, 0], [20, 78, 0]]),
    )
    sketch = Sketch(strokes, 320.0, 200.0)
    path = write_svg(sketch, tmp_path / "s.svg")
    assert_same_sketch(read_svg(path, step=2.0), sketch, atol=1e-9)


def test_writer_round_trip_is_geometric_for_any_step(tmp_path):
    rng = np.random.default_rng(0)
    pts = np.column_stack([np.cumsum(rng.uniform(0.5, 3, 30)), 100 + rng.normal(0, 5, 30), np.zeros(30)])
    sketch = Sketch((pts,), 256.0, 256.0)
    back = read_svg(write_svg(sketch, tmp_path / "r.svg"), step=0.5)
    np.testing.assert_allclose(back.strokes[0][[0, -1]], pts[[0, -1]], atol=1e-9)
    # Every resampled point lies on the original polyline.
    a, b = pts[:-1, :2], pts[1:, :2]
    for p in back.strokes[0][:, :2]:
        t = np.clip(((p - a) * (b - a)).sum(1) / ((b - a) ** 2).sum(1), 0, 1)
        assert np.min(np.hypot(*(a + t[:, None] * (b - a) - p).T)) < 1e-6
    assert 'viewBox="0 0 256 256"' in sketch_to_svg(sketch)


def test_real_tuberlin_sample(shared_data, tmp_path):
    root = shared_data("tuberlin-sample")
    files = sorted(root.glob("*/*.svg"))
    assert len(files) == 15 and any(f.parent.name == "alarm clock" for f in files)
    for file in files:
        sketch = read_svg(file)
        assert sketch.num_strokes == file.read_text().count("<path")  # one continuous stroke per path
        assert (sketch.canvas_width, sketch.canvas_height) == (800.0, 800.0)
        x0, y0, x1, y1 = sketch.bbox()
        assert 0 <= x0 < x1 <= 800 and 0 <= y0 < y1 <= 800  # group transforms applied
        again = read_svg(write_svg(sketch, tmp_path / "again.svg"), step=800 / 128)
        assert again.num_strokes == sketch.num_strokes
        np.testing.assert_allclose(again.strokes[0][0], sketch.strokes[0][0], atol=1e-9)
    clock = read_svg(root / "alarm clock" / "82.svg")
    assert clock.num_strokes == 23
