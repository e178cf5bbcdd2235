"""retrieval.data.pseudo_sketch: edges traced into strokes, longest first, seeded, never empty."""

from __future__ import annotations

import numpy as np

from retrieval.data.procedural import generate_photo
from retrieval.data.pseudo_sketch import PseudoSketchParams, pseudo_sketch, trace_runs


def test_an_l_shaped_line_is_traced_as_one_run_in_walking_order():
    mask = np.zeros((12, 12), bool)
    mask[2, 2:9] = True  # across ...
    mask[2:10, 8] = True  # ... then down
    (run,) = trace_runs(mask)
    assert len(run) == mask.sum()
    assert np.abs(np.diff(run, axis=0)).max() == 1  # every step goes to a neighbouring pixel
    assert {tuple(run[0]), tuple(run[-1])} == {(2, 2), (9, 8)}  # from one end to the other


def test_a_closed_loop_without_end_points_is_traced_too():
    mask = np.zeros((10, 10), bool)
    mask[2, 2:8] = mask[7, 2:8] = mask[2:8, 2] = mask[2:8, 7] = True
    assert sum(len(run) for run in trace_runs(mask)) == mask.sum()


def test_a_photo_gives_strokes_on_its_canvas_longest_first_when_the_order_is_not_noisy():
    photo = generate_photo(0, 1, 256)
    sketch = pseudo_sketch(photo, np.random.default_rng(0), params=PseudoSketchParams(order_noise=0.0))
    lengths = [np.hypot(*np.diff(s[:, :2], axis=0).T).sum() for s in sketch.strokes]
    assert sketch.num_strokes >= 2 and (sketch.canvas_width, sketch.canvas_height) == (256, 256)
    assert all(a >= b - 3.0 for a, b in zip(lengths, lengths[1:]))  # resampling moves a length by < one spacing
    points = sketch.points()
    assert points[:, :2].min() >= 0 and points[:, :2].max() <= 256
    assert np.all(np.diff(points[:, 2]) >= 0)  # time runs forward through the drawing


def test_the_same_seed_gives_the_same_sketch_and_another_seed_another():
    photo = generate_photo(0, 2, 128)
    a, b, c = (pseudo_sketch(photo, np.random.default_rng(s)) for s in (5, 5, 6))
    assert np.array_equal(a.points(), b.points())
    assert not np.array_equal(a.points(), c.points())


def test_a_photo_of_one_flat_colour_still_gives_a_sketch():
    sketch = pseudo_sketch(np.full((64, 64, 3), 200, np.uint8), np.random.default_rng(0))
    assert sketch.num_points >= 1
