"""3D chair geometry (slabs and rods) and a jittered camera; the same geometry feeds photos and sketches.

World axes: ``x`` right, ``y`` up (floor at 0), ``z`` towards the chair's front. A part is either a
*slab* (a closed outline extruded along a vector: seat, cushion, back panel) or a *rod* (a polyline
with a radius: legs, rails, slats, arms). Both become convex "lofts" (two rings of vertices) for
rendering, so every face is a quad or a cap polygon.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from retrieval.data.procedural.params import ChairParams

# Sketch order classes: people draw the big silhouette parts first and details last.
MAIN, LIMB, DETAIL = 0, 1, 2


@dataclass
class Part:
    """One drawable component. ``rings`` is a list of ``(ring0, ring1)`` lofts, each ring ``(n, 3)``."""

    name: str
    material: str  # "frame", "seat", "cushion", "back"
    order: int  # MAIN / LIMB / DETAIL
    kind: str  # "slab" or "rod"
    rings: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    top: np.ndarray | None = None  # slab: the visible top outline (n, 3), drawn as its own stroke
    path: np.ndarray | None = None  # rod: centre line (m, 3)
    radius: float = 0.0


def cross3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product on the last axis (np.cross spends ~20 us per call on axis juggling)."""
    return np.stack(
        [
            a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1],
            a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
            a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0],
        ],
        axis=-1,
    )


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-12)


def rod(name: str, material: str, order: int, path, radius: float, sides: int = 4, taper: float = 1.0) -> Part:
    """A rod along ``path`` (m >= 2 points); square when ``sides == 4``; ``taper`` scales the last radius."""
    path = np.asarray(path, dtype=np.float64)
    angles = np.linspace(0, 2 * np.pi, sides, endpoint=False) + np.pi / sides
    radii = radius * np.linspace(1.0, taper, len(path))
    # One reference axis for the whole rod, so the cross-section never twists along a curved path.
    chord = path[-1] - path[0]
    ref = np.array([1.0, 0.0, 0.0]) if abs(chord[0]) < 0.7 * np.linalg.norm(chord) else np.array([0.0, 0.0, 1.0])
    ahead = np.minimum(np.arange(len(path)) + 1, len(path) - 1)
    behind = np.maximum(np.arange(len(path)) - 1, 0)
    tangent = _unit(path[ahead] - path[behind])
    u = _unit(cross3(tangent, ref))
    v = cross3(tangent, u)
    ring = np.cos(angles)[None, :, None] * u[:, None, :] + np.sin(angles)[None, :, None] * v[:, None, :]
    rings = path[:, None, :] + radii[:, None, None] * ring
    lofts = [(rings[i], rings[i + 1]) for i in range(len(path) - 1)]
    return Part(name, material, order, "rod", lofts, path=path, radius=radius)


def slab(name: str, material: str, order: int, outline, offset) -> Part:
    """Extrude a closed ``outline`` (n, 3) by the vector ``offset``; ``top`` is the offset outline."""
    outline = np.asarray(outline, dtype=np.float64)
    moved = outline + np.asarray(offset, dtype=np.float64)
    top = moved if offset[1] >= 0 else outline
    return Part(name, material, order, "slab", [(outline, moved)], top=top)


def _rounded_rect(w: float, d: float, r: float, n_corner: int = 5) -> np.ndarray:
    """Closed convex outline (n, 2) in the (x, z) plane, centred on 0."""
    r = min(r, w / 2, d / 2)
    pts = []
    for k, (sx, sz) in enumerate(((1, 1), (-1, 1), (-1, -1), (1, -1))):
        a = np.radians(90.0 * k + np.linspace(0, 90, n_corner))
        pts.append(np.stack([sx * (w / 2 - r) + r * np.cos(a), sz * (d / 2 - r) + r * np.sin(a)], axis=1))
    return np.concatenate(pts)


def seat_outline(p: ChairParams) -> np.ndarray:
    """Seat outline (n, 2) in x/z."""
    w, d = p.seat_width, p.seat_depth
    if p.seat_shape == "round":
        a = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        return np.stack([w / 2 * np.cos(a), d / 2 * np.sin(a)], axis=1)
    if p.seat_shape == "rounded":
        return _rounded_rect(w, d, 0.25 * min(w, d))
    xz = _rounded_rect(w, d, 0.01, 2)
    if p.seat_shape == "trapezoid":  # wider at the front (+z)
        xz[:, 0] *= 0.85 + 0.15 * (xz[:, 1] / d + 0.5)
    return xz


def _at_height(xz: np.ndarray, y: float) -> np.ndarray:
    return np.stack([xz[:, 0], np.full(len(xz), y), xz[:, 1]], axis=1)


def _leg_tops(p: ChairParams) -> np.ndarray:
    """Leg attachment points (k, 2) in x/z under the seat."""
    hw, hd = p.seat_width / 2 - p.leg_inset - p.leg_thickness, p.seat_depth / 2 - p.leg_inset - p.leg_thickness
    if p.seat_shape == "round" or p.leg_count != 4:
        a = np.radians(90 + np.arange(p.leg_count) * 360 / p.leg_count + (45 if p.leg_count == 4 else 0))
        return np.stack([hw * np.cos(a), hd * np.sin(a)], axis=1)
    return np.array([[-hw, hd], [hw, hd], [hw, -hd], [-hw, -hd]])  # front-left, front-right, back-right, back-left


def build_chair(p: ChairParams) -> list[Part]:
    """All parts of one instance, in no particular order."""
    parts: list[Part] = []
    h, t = p.seat_height, p.seat_thickness
    outline = seat_outline(p)
    parts.append(slab("seat", "seat", MAIN, _at_height(outline, h - t), (0, t, 0)))
    top_y = h
    if p.cushion:
        shrink = 0.94 if p.seat_shape != "round" else 0.9
        parts.append(slab("cushion", "cushion", MAIN, _at_height(outline * shrink, h), (0, p.cushion_thickness, 0)))
        top_y += p.cushion_thickness
    r = p.leg_thickness / 2
    sides = 4 if p.leg_style == "square" else 8
    taper = 0.55 if p.leg_style == "tapered" else 1.0
    tops = _leg_tops(p)
    if p.leg_style == "pedestal":
        parts.append(rod("column", "frame", LIMB, [(0, h - t, 0), (0, 0.08, 0)], max(r * 1.6, 0.025), 8))
        for i, (x, z) in enumerate(tops):
            foot = np.array([x, 0.0, z]) * 1.3 / max(np.hypot(x, z), 1e-6) * 0.32
            parts.append(rod(f"foot{i}", "frame", LIMB, [(0, 0.08, 0), (foot[0], 0.015, foot[2])], 0.016, 4))
    else:
        feet = []
        for i, (x, z) in enumerate(tops):
            n = np.hypot(x, z) + 1e-9
            fx, fz = x + p.leg_splay * x / n, z + p.leg_splay * z / n
            feet.append((fx, fz))
            parts.append(rod(f"leg{i}", "frame", LIMB, [(x, h - t, z), (fx, 0.0, fz)], r, sides, taper))
        _add_stretchers(p, parts, tops, feet, r)
    if p.family == "chair":
        _add_back(p, parts, top_y, r)
        if p.arms != "none":
            _add_arms(p, parts, top_y)
    return parts


def _add_stretchers(p: ChairParams, parts: list[Part], tops, feet, r: float) -> None:
    if p.stretchers == "none":
        return
    f = p.stretcher_height  # fraction of the way up from the floor along each leg

    def on_leg(i: int) -> np.ndarray:
        (x, z), (fx, fz) = tops[i], feet[i]
        return np.array([fx + (x - fx) * f, p.seat_height * f, fz + (z - fz) * f])

    k = len(tops)
    pairs = {
        "box": [(i, (i + 1) % k) for i in range(k)],
        "h": [(0, 3), (1, 2), (None, None)] if k == 4 else [(i, (i + 1) % k) for i in range(k)],
        "front": [(0, 1)] if k == 4 else [(0, 1)],
    }[p.stretchers]
    for j, (a, b) in enumerate(pairs):
        if a is None:  # the middle bar of an H joins the two side stretchers
            mid_l, mid_r = (on_leg(0) + on_leg(3)) / 2, (on_leg(1) + on_leg(2)) / 2
            parts.append(rod(f"stretcher{j}", "frame", DETAIL, [mid_l, mid_r], r * 0.6, 4))
        else:
            parts.append(rod(f"stretcher{j}", "frame", DETAIL, [on_leg(a), on_leg(b)], r * 0.6, 4))


def _add_back(p: ChairParams, parts: list[Part], base_y: float, r: float) -> None:
    tilt = np.radians(p.back_tilt)
    hw = p.seat_width * p.back_width / 2
    z0 = -p.seat_depth / 2 + max(r, 0.015)
    bh = p.back_height

    def at(x: float, up: float) -> np.ndarray:  # a point of the (tilted) back plane
        return np.array([x, base_y + up * np.cos(tilt), z0 - up * np.sin(tilt)])

    top_hw = hw * (0.7 if p.back_shape == "tapered" else 1.0)
    post_r = max(r * 0.9, 0.012)
    if p.back_fill == "panel":
        n = 9
        up = np.linspace(0, 1, n)
        left = [at(-hw + (hw - top_hw) * u, bh * u) for u in up]
        right = [at(hw - (hw - top_hw) * u, bh * u) for u in up[::-1]]
        if p.back_shape == "rounded":
            a = np.linspace(np.pi, 0, 9)[1:-1]
            arc = [at(top_hw * np.cos(c), bh + 0.35 * top_hw * np.sin(c)) for c in a]
            outline = np.array(left + arc + right)
        else:
            outline = np.array(left + right)
        thick = 0.025 + 0.3 * p.seat_thickness
        normal = np.array([0.0, np.sin(tilt), np.cos(tilt)])
        parts.append(slab("back", "back", MAIN, outline - normal * thick, normal * thick))
        return
    # Open backs: two posts plus a top rail, filled with slats.
    rise = 0.25 * top_hw if p.back_shape == "rounded" else 0.0
    for side, name in ((-1, "post_l"), (1, "post_r")):
        parts.append(
            rod(
                name,
                "frame",
                MAIN,
                [at(side * hw, -0.02), at(side * top_hw, bh)],
                post_r,
                4 if p.leg_style == "square" else 8,
            )
        )
    rail_h = 0.06 + 0.08 * (p.slat_count % 3) / 2
    a = np.linspace(np.pi, 0, 9)
    rail = [at(top_hw * np.cos(c), bh - rail_h / 2 + rise * np.sin(c)) for c in a]
    parts.append(rod("top_rail", "back", MAIN, rail, rail_h / 2, 4))
    if p.back_fill == "ladder":
        for i, u in enumerate(np.linspace(0.25, 0.8, p.slat_count - 1)):
            w = hw - (hw - top_hw) * u
            parts.append(rod(f"slat{i}", "back", DETAIL, [at(-w, bh * u), at(w, bh * u)], 0.018, 4))
    elif p.back_fill == "spindle":
        for i, s in enumerate(np.linspace(-1, 1, p.slat_count + 2)[1:-1]):
            parts.append(rod(f"slat{i}", "back", DETAIL, [at(s * hw, 0.0), at(s * top_hw, bh - rail_h)], 0.011, 4))


def _add_arms(p: ChairParams, parts: list[Part], base_y: float) -> None:
    y = base_y + p.arm_height
    hw, hd = p.seat_width / 2 + 0.01, p.seat_depth / 2
    for side, name in ((-1, "arm_l"), (1, "arm_r")):
        x = side * hw
        if p.arms == "straight":
            path = [(x, y, -hd + 0.02), (x, y, hd + 0.02)]
        else:  # curved: the rest sweeps down into the front support
            a = np.linspace(0, np.pi / 2, 6)
            path = [(x, y, -hd + 0.02)] + [(x, y - 0.12 * (1 - np.cos(c)), hd - 0.12 + 0.12 * np.sin(c)) for c in a]
        parts.append(rod(name, "frame", LIMB, path, 0.018, 4))
        parts.append(
            rod(name + "_support", "frame", DETAIL, [(x, base_y - 0.02, hd - 0.06), (x, y, hd - 0.06)], 0.012, 4)
        )


@dataclass(frozen=True)
class Camera:
    """Orbit camera: ``yaw`` around y, ``pitch`` down, weak perspective, then an image-plane fit."""

    yaw: float  # degrees; positive shows the chair's left side
    pitch: float  # degrees looking down
    roll: float  # degrees in the image plane
    fill: float  # fraction of the image the chair's larger extent spans
    shift: tuple[float, float]  # centre offset as a fraction of the image size
    focal: float = 4.0  # camera distance in metres (weak perspective)

    @staticmethod
    def sample(rng: np.random.Generator) -> Camera:
        side = 1 if rng.random() < 0.5 else -1
        return Camera(
            yaw=float(side * rng.uniform(15, 45)),
            pitch=float(rng.uniform(10, 28)),
            roll=float(rng.normal(0, 1.0)),
            fill=float(rng.uniform(0.68, 0.84)),
            shift=(float(rng.normal(0, 0.02)), float(rng.normal(0, 0.02))),
        )

    def rotation(self) -> np.ndarray:
        return self._rotation

    @cached_property
    def _rotation(self) -> np.ndarray:
        y, x = np.radians(self.yaw), np.radians(self.pitch)
        ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
        rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
        return rx @ ry

    def view(self, pts: np.ndarray) -> np.ndarray:
        """Camera-space ``(..., 3)``: x right, y up, z towards the viewer (larger = nearer)."""
        return pts @ self.rotation().T

    def fit(self, all_pts: np.ndarray, size: int) -> tuple[float, np.ndarray]:
        """Scale and offset mapping projected metres to pixels so the chair fills ``fill`` of the image."""
        xy = self._project_raw(all_pts)
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        scale = self.fill * size / max(hi - lo)
        centre = (lo + hi) / 2
        offset = np.array([size / 2, size / 2]) + np.array(self.shift) * size - centre * scale
        return scale, offset

    def _project_raw(self, pts: np.ndarray) -> np.ndarray:
        v = self.view(pts)
        persp = self.focal / (self.focal - v[..., 2:3])
        xy = v[..., :2] * persp * np.array([1.0, -1.0])  # image y grows downwards
        return xy @ self._roll

    @cached_property
    def _roll(self) -> np.ndarray:
        c, s = np.cos(np.radians(self.roll)), np.sin(np.radians(self.roll))
        return np.array([[c, s], [-s, c]])

    def project(self, pts: np.ndarray, scale: float, offset: np.ndarray) -> np.ndarray:
        return self._project_raw(pts) * scale + offset
