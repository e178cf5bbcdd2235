"""Stroke-level comparison of sketches (``Sketch.__eq__`` cannot compare tuples of arrays)."""

from __future__ import annotations

import numpy as np

from retrieval.data.sketch import Sketch


def assert_same_sketch(actual: Sketch, expected: Sketch, atol: float = 0.0, check_time: bool = True) -> None:
    """Raise ``AssertionError`` unless two sketches have the same canvas and strokes (within ``atol``).

    Used by round-trip tests of every reader/writer pair.
    """
    assert (actual.canvas_width, actual.canvas_height) == (expected.canvas_width, expected.canvas_height), (
        f"canvas {actual.canvas_width}x{actual.canvas_height} != {expected.canvas_width}x{expected.canvas_height}"
    )
    assert actual.num_strokes == expected.num_strokes, f"{actual.num_strokes} strokes != {expected.num_strokes}"
    cols = 3 if check_time else 2
    for i, (a, b) in enumerate(zip(actual.strokes, expected.strokes)):
        assert a.shape == b.shape, f"stroke {i}: shape {a.shape} != {b.shape}"
        np.testing.assert_allclose(a[:, :cols], b[:, :cols], rtol=0, atol=atol, err_msg=f"stroke {i}")
