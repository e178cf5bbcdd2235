"""Partial-sketch rasteriser: anti-aliased polylines (OpenCV) on a square canvas.

The source canvas is mapped onto the square output keeping its aspect ratio (centred), never
re-fitted to the partial sketch's own bounding box, so early strokes keep the position and scale
they will have in the finished drawing, as the person saw them.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from retrieval.data.sketch import Sketch
from retrieval.types import GrayImage

_SHIFT = 4  # sub-pixel bits for cv2 drawing: coordinates are multiplied by 2**_SHIFT
_INK, _PAPER = 0, 255


def _canvas_transform(sketch: Sketch, size: int) -> tuple[float, float, float]:
    scale = size / max(sketch.canvas_width, sketch.canvas_height)
    off_x = (size - sketch.canvas_width * scale) / 2.0
    off_y = (size - sketch.canvas_height * scale) / 2.0
    return scale, off_x, off_y


def _fixed_point(stroke: np.ndarray, scale: float, off_x: float, off_y: float) -> np.ndarray:
    xy = stroke[:, :2] * scale + (off_x, off_y)
    return np.round(xy * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _draw(img: np.ndarray, pts: np.ndarray, width: int) -> None:
    if len(pts) == 1:  # a dot: cv2.polylines draws nothing for a single point
        cv2.circle(img, tuple(pts[0, 0]), (width << _SHIFT) // 2, _INK, -1, cv2.LINE_AA, _SHIFT)
    else:
        cv2.polylines(img, [pts], False, _INK, width, cv2.LINE_AA, _SHIFT)


def render(sketch: Sketch, n_points: int | None = None, size: int = 256, width: int = 3) -> GrayImage:
    """Render the first ``n_points`` points (all when ``None``) to a ``size x size`` uint8 image.

    White paper (255), black anti-aliased ink (0). An empty cut gives a blank canvas.
    """
    return render_steps(sketch, [sketch.num_points if n_points is None else n_points], size, width)[0]


def render_steps(sketch: Sketch, cuts: Sequence[int] | np.ndarray, size: int = 256, width: int = 3) -> np.ndarray:
    """Render the sketch at several point cuts in one pass: ``(len(cuts), size, size)`` uint8.

    Complete strokes are drawn once onto a running canvas that is copied out at each cut; a stroke
    cut part-way is drawn, as a prefix, onto that step's copy only. So every step is pixel-identical
    to ``render(sketch, cut)`` (drawing a stroke in pieces would darken the anti-aliased joints) and
    the cost stays about one pass over the points. ``cuts`` must be non-decreasing.
    """
    cuts = np.asarray(cuts, dtype=np.int64)
    if len(cuts) and np.any(np.diff(cuts) < 0):
        raise ValueError("cuts must be non-decreasing point counts")
    if width < 1:
        raise ValueError(f"line width must be >= 1 pixel, got {width}")
    scale, off_x, off_y = _canvas_transform(sketch, size)
    out = np.empty((len(cuts), size, size), dtype=np.uint8)
    img = np.full((size, size), _PAPER, dtype=np.uint8)
    fixed = [_fixed_point(s, scale, off_x, off_y) for s in sketch.strokes]
    ends = np.cumsum([len(pts) for pts in fixed], dtype=np.int64)
    done = 0  # complete strokes already on the running canvas
    for i, cut in enumerate(cuts):
        while done < len(fixed) and ends[done] <= cut:
            _draw(img, fixed[done], width)
            done += 1
        out[i] = img
        if done < len(fixed):
            take = int(cut - (ends[done - 1] if done else 0))
            if take > 0:
                _draw(out[i], fixed[done][:take], width)
    return out


def resize(image: GrayImage, size: int) -> GrayImage:
    """Area-resample a rendered sketch to ``size x size`` (keeps thin lines visible)."""
    if image.shape[0] == size:
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
