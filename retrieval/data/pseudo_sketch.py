"""Photo -> pseudo-sketch: a randomised edge map traced into ordered, timed strokes.

An edge map (``retrieval.data.edges``) is a complete drawing: it has no drawing order, so cutting
it teaches nothing about a sketch in progress. Here its one-pixel edges are walked into polylines
(one stroke per unbranched run of pixels), and the strokes are put in the order people tend to
draw: long, salient contours first, details last (coarse to fine), with noise so the order varies.
Partial views of such a sketch (``retrieval.data.augment.random_cut``) then look like an outline
that fills in, the way a real drawing grows, and sketch-free adaptation can train the on-the-fly
part, not only complete drawings.

Everything random comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from skimage.morphology import thin

from retrieval.data.edges import EdgeParams, edge_pixels
from retrieval.data.sketch import Sketch
from retrieval.types import RGBImage

# 8-neighbour offsets, 4-neighbours first: a walk prefers straight steps over diagonal ones
_NEIGHBOURS = ((0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1))


@dataclass(frozen=True)
class PseudoSketchParams:
    """How edges become strokes (uniform ranges unless stated)."""

    edges: EdgeParams = EdgeParams(thin_prob=1.0)  # always thinned: strokes are traced along 1-px edges
    min_stroke_px: int = 10  # traced runs shorter than this are noise, not strokes
    max_strokes: tuple[int, int] = (8, 30)  # keep this many of the longest strokes (people leave out details)
    order_noise: float = 0.6  # Gumbel noise on log length: 0 = strictly longest first
    point_spacing_px: float = 3.0  # resample strokes to about this spacing (work_size pixels)
    speed_px_per_ms: tuple[float, float] = (0.3, 0.8)  # pen speed, for human-like timestamps
    gap_ms: tuple[float, float] = (150.0, 1100.0)  # pen-up pause between strokes (Quick Draw p10-p90)


def pseudo_sketch(
    photo: RGBImage,
    rng: np.random.Generator,
    work_size: int = 256,
    params: PseudoSketchParams = PseudoSketchParams(),
) -> Sketch:
    """A pseudo-sketch of ``photo`` on a ``work_size`` square canvas, strokes in drawing order.

    Never empty: with only specks the longest run stays whatever its length, and a photo without
    any edge (one flat colour) gives a dot in the middle.
    """
    mask = thin(edge_pixels(photo, rng, work_size, replace(params.edges, thin_prob=1.0)))
    runs = trace_runs(mask)
    runs = (
        [run for run in runs if len(run) >= params.min_stroke_px]
        or sorted(runs, key=len)[-1:]
        or [np.array([[work_size // 2, work_size // 2]])]
    )
    runs = ordered_coarse_to_fine(runs, rng, params)
    return Sketch(timed_strokes(runs, rng, params), float(work_size), float(work_size), {"source": "pseudo_sketch"})


def trace_runs(mask: np.ndarray) -> list[np.ndarray]:
    """Walk a one-pixel-wide bool mask into runs: ``(n, 2)`` int arrays of ``(row, col)`` in walking order.

    A walk starts at an end point (one neighbour) when there is one left, else anywhere (closed
    loops), and follows unvisited neighbours, preferring the one that keeps its direction; at a
    junction the other branches become runs of their own.
    """
    height, width = mask.shape
    visited = ~mask.copy()
    padded = np.pad(mask, 1).astype(np.int8)
    degree = sum(np.roll(np.roll(padded, dr, 0), dc, 1) for dr, dc in _NEIGHBOURS)[1:-1, 1:-1] * mask
    starts = [tuple(p) for p in np.argwhere(degree == 1)] + [tuple(p) for p in np.argwhere(mask)]
    runs = []
    for start in starts:
        if visited[start]:
            continue
        path, (r, c), direction = [start], start, (0, 0)
        visited[start] = True
        while True:
            options = [
                (dr, dc)
                for dr, dc in _NEIGHBOURS
                if 0 <= r + dr < height and 0 <= c + dc < width and not visited[r + dr, c + dc]
            ]
            if not options:
                break
            dr, dc = max(options, key=lambda o: o[0] * direction[0] + o[1] * direction[1])
            r, c, direction = r + dr, c + dc, (dr, dc)
            visited[r, c] = True
            path.append((r, c))
        runs.append(np.asarray(path, dtype=np.int64))
    return runs


def ordered_coarse_to_fine(
    runs: list[np.ndarray], rng: np.random.Generator, params: PseudoSketchParams
) -> list[np.ndarray]:
    """The longest ``max_strokes`` runs, longest first with noise, each drawn in a random direction."""
    lengths = np.array([len(run) for run in runs], dtype=np.float64)
    keep = int(rng.integers(params.max_strokes[0], params.max_strokes[1] + 1))
    longest = np.argsort(-lengths)[:keep]
    noisy = np.log(lengths[longest]) + params.order_noise * rng.gumbel(size=len(longest))
    order = longest[np.argsort(-noisy)]
    return [runs[i][::-1] if rng.random() < 0.5 else runs[i] for i in order]


def timed_strokes(runs: list[np.ndarray], rng: np.random.Generator, params: PseudoSketchParams) -> list[np.ndarray]:
    """Runs of ``(row, col)`` pixels -> strokes of ``(x, y, t_ms)``, resampled, with pen speed and pauses."""
    strokes, clock = [], 0.0
    speed = rng.uniform(*params.speed_px_per_ms)
    step = max(1, round(params.point_spacing_px))
    for run in runs:
        keep = np.unique(np.r_[np.arange(0, len(run), step), len(run) - 1])
        xy = run[keep][:, ::-1].astype(np.float64) + 0.5  # pixel centres, (x, y)
        arc = np.r_[0.0, np.cumsum(np.hypot(*np.diff(xy, axis=0).T))]
        strokes.append(np.column_stack([xy, clock + arc / speed]))
        clock += arc[-1] / speed + rng.uniform(*params.gap_ms)
    return strokes
