"""The one vector-sketch data model every reader, the rasteriser, training and the app share."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from retrieval.types import Stroke


@dataclass(frozen=True)
class Sketch:
    """Strokes in drawing order on a ``canvas_width x canvas_height`` canvas.

    Each stroke is a float64 ``(n, 3)`` array of ``x, y, t_ms``. Strokes are never empty.
    Timestamps may be all zero when the source has no timing (QMUL, simplified Quick Draw).
    """

    strokes: tuple[Stroke, ...]
    canvas_width: float = 256.0
    canvas_height: float = 256.0
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        cleaned = []
        for i, stroke in enumerate(self.strokes):
            arr = np.asarray(stroke, dtype=np.float64)
            if arr.ndim != 2 or arr.shape[1] != 3 or len(arr) == 0:
                raise ValueError(f"stroke {i} must be a non-empty (n, 3) array of x, y, t; got {arr.shape}")
            cleaned.append(arr)
        object.__setattr__(self, "strokes", tuple(cleaned))
        if not (self.canvas_width > 0 and self.canvas_height > 0):
            raise ValueError(f"canvas size must be positive, got {self.canvas_width}x{self.canvas_height}")

    # --- sizes -----------------------------------------------------------------------------
    @property
    def num_strokes(self) -> int:
        return len(self.strokes)

    @property
    def num_points(self) -> int:
        return int(sum(len(s) for s in self.strokes))

    def points(self) -> np.ndarray:
        """All points ``(N, 3)`` concatenated in drawing order."""
        if not self.strokes:
            return np.zeros((0, 3))
        return np.concatenate(self.strokes, axis=0)

    def stroke_ends(self) -> np.ndarray:
        """Cumulative point count at the end of each stroke, e.g. ``[12, 30, 41]``."""
        return np.cumsum([len(s) for s in self.strokes]).astype(np.int64)

    def bbox(self) -> tuple[float, float, float, float]:
        """``(x_min, y_min, x_max, y_max)`` of all points; raises on an empty sketch."""
        pts = self.points()
        if len(pts) == 0:
            raise ValueError("empty sketch has no bounding box")
        return (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))

    # --- cuts ------------------------------------------------------------------------------
    def first_points(self, n: int) -> Sketch:
        """The sketch as it was after its first ``n`` points were drawn (last stroke may be partial)."""
        n = max(0, int(n))
        kept, left = [], n
        for stroke in self.strokes:
            if left <= 0:
                break
            kept.append(stroke[:left])
            left -= len(stroke)
        return Sketch(tuple(kept), self.canvas_width, self.canvas_height, self.meta)

    def first_strokes(self, k: int) -> Sketch:
        """The first ``k`` complete strokes."""
        return Sketch(self.strokes[: max(0, int(k))], self.canvas_width, self.canvas_height, self.meta)

    def first_fraction(self, p: float) -> Sketch:
        """The first ``round(p * N)`` points, ``0 <= p <= 1``."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {p}")
        return self.first_points(round(p * self.num_points))

    # --- geometry --------------------------------------------------------------------------
    def normalized(self, size: float = 256.0, margin: float = 0.05) -> Sketch:
        """Fit the bounding box into a ``size x size`` canvas, centred, keeping aspect ratio."""
        x0, y0, x1, y1 = self.bbox()
        extent = max(x1 - x0, y1 - y0, 1e-6)
        scale = size * (1.0 - 2.0 * margin) / extent
        cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        out = []
        for s in self.strokes:
            t = s.copy()
            t[:, 0] = (s[:, 0] - cx) * scale + size / 2.0
            t[:, 1] = (s[:, 1] - cy) * scale + size / 2.0
            out.append(t)
        return Sketch(tuple(out), float(size), float(size), self.meta)

    def with_canvas(self, width: float, height: float) -> Sketch:
        return Sketch(self.strokes, float(width), float(height), self.meta)


def point_cuts(num_points: int, num_steps: int = 17) -> np.ndarray:
    """Point counts at which the on-the-fly protocol renders partial sketches.

    The literature renders 17 partial sketches cut at ``round(linspace(0, N, 18))[1:]``.
    Cuts are clipped to at least 1 point so no step is an empty canvas.
    """
    cuts = np.round(np.linspace(0, num_points, num_steps + 1))[1:].astype(np.int64)
    return np.maximum(cuts, 1)


def step_cuts(sketch: Sketch, mode: str = "points", num_steps: int = 17) -> np.ndarray:
    """Point counts for each step: ``"points"`` (17 fraction cuts) or ``"strokes"`` (stroke ends)."""
    if mode == "points":
        return point_cuts(sketch.num_points, num_steps)
    if mode == "strokes":
        return sketch.stroke_ends()
    raise ValueError(f"step mode must be 'points' or 'strokes', got {mode!r}")
