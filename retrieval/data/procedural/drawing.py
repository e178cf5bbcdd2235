"""Human-like sketches of a :class:`~retrieval.data.procedural.scene.Scene`.

Each part's visible outline (hidden lines removed with the scene's part-id buffer) becomes one or a
few strokes; a sampled :class:`Drawer` decides the order (silhouette first, details last), which
small parts to leave out, wobble, over-shoot, over-tracing, the whole drawing's offset, scale and
rotation, and the tempo (:mod:`retrieval.data.procedural.timing`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from retrieval.data.procedural import timing
from retrieval.data.procedural.geometry import DETAIL, LIMB, MAIN, Part
from retrieval.data.procedural.scene import Scene
from retrieval.data.sketch import Sketch

CANVAS = 256.0
MIN_PIECE_PX = 12  # visible bits of an outline shorter than this are not worth a stroke
STEP_PX = 2.0  # outline sampling step: fine enough for occlusion tests, coarse enough to be cheap


@dataclass(frozen=True)
class Drawer:
    """One person's habits; sampled per sketch so several sketches of a photo differ like drawers do."""

    speed: float  # multiplies stroke durations
    gap_scale: float  # multiplies pen-up gaps
    wobble: float  # px amplitude of the low-frequency hand tremor
    omit: float  # probability of leaving out a detail part
    overtrace: float  # probability of going over a main stroke again
    min_step: float  # px between kept points (apps drop pointer events closer than this)
    scale: float  # whole-drawing jitter versus the photo
    rotation: float  # degrees
    offset: tuple[float, float]  # px

    @staticmethod
    def sample(rng: np.random.Generator) -> Drawer:
        return Drawer(
            speed=float(np.exp(rng.normal(0.0, timing.DRAWER_LOG_SD))),
            gap_scale=float(np.exp(rng.normal(0.0, 0.25))),
            wobble=float(rng.uniform(0.4, 2.2)),
            omit=float(rng.uniform(0.1, 0.6)),
            overtrace=float(rng.uniform(0.0, 0.2)),
            min_step=float(rng.uniform(3.0, 8.0)),
            scale=float(rng.uniform(0.85, 1.08)),
            rotation=float(rng.normal(0.0, 3.0)),
            offset=(float(rng.normal(0.0, 8.0)), float(rng.normal(0.0, 8.0))),
        )

    def transform(self, xy: np.ndarray) -> np.ndarray:
        c, s = np.cos(np.radians(self.rotation)), np.sin(np.radians(self.rotation))
        centred = xy - CANVAS / 2
        rotated = centred @ np.array([[c, s], [-s, c]]) * self.scale
        return rotated + CANVAS / 2 + np.asarray(self.offset)


def _densify(poly: np.ndarray, closed: bool, step: float = STEP_PX) -> np.ndarray:
    """Resample a polyline to points ``step`` px apart along its length."""
    if closed:
        poly = np.vstack([poly, poly[:1]])
    seg = np.hypot(*np.diff(poly, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    if arc[-1] < step:
        return poly[[0, -1]]
    s = np.linspace(0.0, arc[-1], int(arc[-1] / step) + 1)
    return np.stack([np.interp(s, arc, poly[:, 0]), np.interp(s, arc, poly[:, 1])], axis=1)


def _hull(points2d: np.ndarray) -> np.ndarray:
    return cv2.convexHull(points2d.astype(np.float32)).reshape(-1, 2).astype(np.float64)


def _start_top_left(closed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate a closed outline so it starts near its top-left, where most people start a shape."""
    score = closed[:, 0] + closed[:, 1] + rng.normal(0, 15, len(closed))
    return np.roll(closed, -int(np.argmin(score)), axis=0)


def part_outlines(scene: Scene, part: Part, rng: np.random.Generator) -> list[tuple[np.ndarray, ...]]:
    """Outline polylines of a part, densified: ``[(points (n, 2), inward (n, 2) unit vectors, keep (n,))]``.

    A slab is its top face plus the rest of its silhouette (the hull minus where it runs along the
    top face, so no line is drawn twice); a rod is a centre line when thin, else a U round its sides.
    """
    if part.kind == "slab":
        hull = _start_top_left(_hull(scene.project(np.concatenate(part.rings[0]))), rng)
        top = _hull(scene.project(part.top))
        top_dense, hull_dense = _densify(top, closed=True), _densify(hull, closed=True)
        along_top = np.zeros((scene.size, scene.size), dtype=np.uint8)
        cv2.polylines(along_top, [np.round(top_dense).astype(np.int32)], True, 1, 3)
        probe = np.clip(np.round(hull_dense).astype(np.int64), 0, scene.size - 1)
        hull_keep = along_top[probe[:, 1], probe[:, 0]] == 0
        return [
            (top_dense, _unit(top.mean(axis=0) - top_dense), np.ones(len(top_dense), dtype=bool)),
            (hull_dense, _unit(hull.mean(axis=0) - hull_dense), hull_keep),
        ]
    dense = _densify(scene.project(part.path), closed=False)
    radius_px = part.radius * scene.scale
    if radius_px < 4.0 or part.order == DETAIL:  # thin parts and small details are drawn as one line
        return [(dense, np.zeros_like(dense), np.ones(len(dense), dtype=bool))]
    tangent = _tangents(dense)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    side_a, side_b = dense + normal * radius_px, dense - normal * radius_px
    cap = _densify(np.stack([side_a[-1], side_b[-1]]), closed=False)
    u_shape = np.vstack([side_a, cap, side_b[::-1]])  # down one side, across the end, back up
    inward = np.vstack([-normal, np.zeros_like(cap), normal[::-1]])
    return [(u_shape, inward, np.ones(len(u_shape), dtype=bool))]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-9)


def _visible_pieces(
    scene: Scene, part_id: int, pts: np.ndarray, inward: np.ndarray, keep: np.ndarray
) -> list[np.ndarray]:
    """Split a polyline where a nearer part covers it (probe 1.5 px inside the part's own region)."""
    probe = np.round(pts + inward * 1.5).astype(np.int64)
    inside = (probe >= 0).all(axis=1) & (probe < scene.size).all(axis=1)
    ids = np.zeros(len(pts), dtype=np.int64)
    ids[inside] = scene.id_buffer[probe[inside, 1], probe[inside, 0]]
    visible = ((ids == part_id + 1) | (ids == 0)) & keep
    # A pen goes straight through a tiny occlusion rather than lifting: fill hidden runs < MIN_PIECE_PX.
    edges = np.flatnonzero(np.diff(np.concatenate([[1], visible.astype(np.int8), [1]])))
    for a, b in zip(edges[::2], edges[1::2]):
        if (b - a) * STEP_PX < MIN_PIECE_PX and a > 0 and b < len(pts):
            visible[a:b] = True
    edges = np.flatnonzero(np.diff(np.concatenate([[0], visible.astype(np.int8), [0]])))
    return [pts[a:b] for a, b in zip(edges[::2], edges[1::2]) if (b - a) * STEP_PX >= MIN_PIECE_PX]


def _tangents(pts: np.ndarray) -> np.ndarray:
    d = np.diff(pts, axis=0)
    return _unit(np.vstack([d[:1], d[:-1] + d[1:], d[-1:]]))


def _humanise(pts: np.ndarray, drawer: Drawer, rng: np.random.Generator) -> np.ndarray:
    """Smooth corners a little, add low-frequency wobble and an over/under-shoot at the end."""
    if len(pts) >= 5:
        sigma = 1.5 / STEP_PX  # round corners over ~1.5 px
        pts = cv2.GaussianBlur(pts.reshape(-1, 1, 2), (1, 5), 0, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)
        pts = pts.reshape(-1, 2)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
    tangent = _tangents(pts)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    amplitude = rng.normal(0, drawer.wobble / 2, size=3)
    phase = 2 * np.pi * arc[:, None] / rng.uniform(25.0, 140.0, size=3) + rng.uniform(0, 2 * np.pi, size=3)
    wobble = np.sin(phase) @ amplitude
    drift = np.linspace(rng.normal(0, 1.0), rng.normal(0, 1.0), len(pts))
    pts = pts + normal * (wobble + drift)[:, None]
    shoot = float(np.clip(rng.normal(1.5, 2.0), -2.0, 6.0))
    if shoot > 0:
        pts = np.vstack([pts, pts[-1] + tangent[-1] * shoot])
    elif len(pts) > 4:
        pts = pts[: max(2, len(pts) - int(-shoot / STEP_PX))]
    return pts


def _timed(pts: np.ndarray, start_ms: float, drawer: Drawer, rng: np.random.Generator) -> np.ndarray:
    """Pointer samples ``(n, 3)`` x, y, t along the polyline with a minimum-jerk speed profile."""
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
    duration = timing.stroke_duration(arc[-1], rng, drawer.speed)
    t = timing.sample_times(duration, rng)
    s = timing.min_jerk(t / duration) * arc[-1]
    # Keep one event per min_step of path (apps drop events closer than that), plus the last one.
    bins = np.floor(s / drawer.min_step)
    keep = np.flatnonzero(np.diff(np.concatenate([[-1.0], bins])) > 0)
    if keep[-1] != len(s) - 1:
        keep = np.append(keep, len(s) - 1)
    xy = np.stack([np.interp(s[keep], arc, pts[:, 0]), np.interp(s[keep], arc, pts[:, 1])], axis=1)
    return np.column_stack([xy, start_ms + t[keep]])


def _reading_order(pts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """People draw open lines top-to-bottom and left-to-right, mostly."""
    dy, dx = pts[-1, 1] - pts[0, 1], pts[-1, 0] - pts[0, 0]
    backwards = dy < -5 or (abs(dy) <= 5 and dx < 0)
    return pts[::-1] if backwards and rng.random() < 0.85 else pts


def draw_sketch(scene: Scene, rng: np.random.Generator, meta: dict | None = None) -> Sketch:
    """One person's sketch of ``scene`` on a 256x256 canvas, strokes in drawing order with timing."""
    drawer = Drawer.sample(rng)
    parts = list(enumerate(scene.parts))
    keys = []
    for _, part in parts:
        anchor = part.path if part.kind == "rod" else part.top
        y = scene.project(anchor)[:, 1].mean() / scene.size
        keys.append(part.order + rng.normal(0, 0.35) + 0.6 * y)
    strokes: list[np.ndarray] = []
    clock = 0.0
    for idx in np.argsort(keys, kind="stable"):
        pi, part = parts[idx]
        if part.order == DETAIL and rng.random() < drawer.omit:
            continue
        if part.order == LIMB and rng.random() < drawer.omit * 0.15:
            continue
        for poly, inward, keep in part_outlines(scene, part, rng):
            for piece in _visible_pieces(scene, pi, poly, inward, keep):
                piece = drawer.transform(piece)
                if rng.random() < 0.3 and len(piece) * STEP_PX > 60:  # a long outline is sometimes two strokes
                    cut = int(rng.integers(len(piece) // 3, 2 * len(piece) // 3))
                    chunks = [piece[: cut + 1], piece[cut:]]
                else:
                    chunks = [piece]
                for chunk in chunks:
                    if part.kind == "rod":
                        chunk = _reading_order(chunk, rng)
                    passes = [chunk]
                    if part.order in (MAIN, LIMB) and rng.random() < drawer.overtrace:
                        a = int(rng.integers(0, max(1, len(chunk) // 3)))
                        passes.append(chunk[a : a + max(4, int(len(chunk) * rng.uniform(0.4, 0.9)))])
                    for line in passes:
                        if strokes:
                            clock = strokes[-1][-1, 2] + timing.pen_up_gap(rng, drawer.gap_scale)
                        strokes.append(_timed(_humanise(line, drawer, rng), clock, drawer, rng))
    if not strokes:  # a degenerate view: fall back to the seat outline so a sketch is never empty
        hull = drawer.transform(_hull(scene.project(np.concatenate(scene.parts[0].rings[0]))))
        strokes.append(_timed(_densify(hull, closed=True), 0.0, drawer, rng))
    meta = dict(meta or {})
    meta.update(source="procedural", drawer=drawer.__dict__.copy())
    return Sketch(tuple(strokes), CANVAS, CANVAS, meta)
