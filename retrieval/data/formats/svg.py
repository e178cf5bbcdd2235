"""SVG sketches (TU-Berlin and similar): one stroke per ``<path>``, sampled at a fixed arc-length step.

Paths are parsed by svgpathtools (lines, quadratic/cubic Beziers, arcs), with every ancestor's
``transform`` applied, in document order (= drawing order for TU-Berlin). ``<line>``,
``<polyline>``, ``<polygon>`` and the other shapes svgpathtools converts are read the same way.
SVG has no timing, so ``t = 0``. A path made of several disconnected subpaths gives one stroke per
subpath, so no pen-up jump is drawn as ink.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from svgpathtools import CONVERSIONS, parse_path, parse_transform
from svgpathtools.path import Path as SvgPath
from svgpathtools.path import transform as transform_path

from retrieval.data.sketch import Sketch

_SKIPPED_CONTAINERS = {"defs", "clipPath", "mask", "symbol", "marker", "pattern", "metadata", "title", "desc"}
_LENGTH_PROBES = 17  # points per segment used to estimate its length before dense sampling
_DENSITY = 4  # dense samples per output step, so the interpolated points lie on the curve


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _number(text: str | None) -> float | None:
    match = re.match(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)", text or "")
    return float(match.group(1)) if match else None


def _canvas(root: ET.Element) -> tuple[float, float, float, float] | None:
    """``(min_x, min_y, width, height)`` of the user coordinate system, from viewBox or width/height."""
    view_box = [float(v) for v in re.split(r"[\s,]+", (root.get("viewBox") or "").strip()) if v]
    if len(view_box) == 4 and view_box[2] > 0 and view_box[3] > 0:
        return view_box[0], view_box[1], view_box[2], view_box[3]
    width, height = _number(root.get("width")), _number(root.get("height"))
    if width and height and width > 0 and height > 0:
        return 0.0, 0.0, width, height
    return None


def _collect(element: ET.Element, tf: np.ndarray, out: list[SvgPath]) -> None:
    tag = _local(element.tag)
    if tag in _SKIPPED_CONTAINERS:
        return
    tf = tf @ parse_transform(element.get("transform"))
    if tag in CONVERSIONS:
        d = CONVERSIONS[tag](element.attrib)
        if d.strip():
            out.append(transform_path(parse_path(d), tf))
    for child in element:
        _collect(child, tf, out)


def _dense_points(subpath: SvgPath, step: float) -> np.ndarray:
    chunks = []
    for seg in subpath:
        probe = seg.point(np.linspace(0.0, 1.0, _LENGTH_PROBES))
        length = float(np.abs(np.diff(probe)).sum())
        samples = max(2, math.ceil(length * _DENSITY / step) + 1)
        pts = np.asarray(seg.point(np.linspace(0.0, 1.0, samples)))
        chunks.append(pts[1:] if chunks else pts)  # a segment starts where the previous one ended
    pts = np.concatenate(chunks)
    return np.column_stack([pts.real, pts.imag])


def resample_polyline(points: np.ndarray, step: float) -> np.ndarray:
    """Points every ``step`` of arc length along a polyline, always keeping both end points.

    Args:
        points: ``(n, 2)`` vertices.
        step: arc-length spacing (> 0).

    Returns:
        ``(m, 2)``; a single point when the polyline has zero length.
    """
    if step <= 0:
        raise ValueError(f"sampling step must be positive, got {step}")
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(points, axis=0).T))])
    total = arc[-1]
    if total <= 0:
        return points[:1].copy()
    targets = np.arange(0.0, total, step)
    if total - targets[-1] > 1e-9 * max(1.0, total):
        targets = np.append(targets, total)
    return np.column_stack([np.interp(targets, arc, points[:, 0]), np.interp(targets, arc, points[:, 1])])


def parse_svg(text: str | bytes, step: float | None = None, source: str = "<svg>") -> Sketch:
    """Parse SVG text into a sketch; see :func:`read_svg`."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"{source}: not a well-formed SVG document ({exc})") from exc
    if _local(root.tag) != "svg":
        raise ValueError(f"{source}: root element is <{_local(root.tag)}>, expected <svg>")
    paths: list[SvgPath] = []
    _collect(root, np.identity(3), paths)
    canvas = _canvas(root)
    if canvas is None:  # no size given: the drawing's own extent from the origin
        xs = [p.bbox() for p in paths if len(p)]
        canvas = (0.0, 0.0, max([b[1] for b in xs], default=1.0), max([b[3] for b in xs], default=1.0))
    min_x, min_y, width, height = canvas
    if step is None:
        step = max(width, height) / 128.0  # ~2 px at the 256 px the encoder sees
    strokes = []
    for path in paths:
        for subpath in path.continuous_subpaths() if len(path) else []:
            xy = resample_polyline(_dense_points(subpath, step), step) - (min_x, min_y)
            strokes.append(np.column_stack([xy, np.zeros(len(xy))]))
    return Sketch(tuple(strokes), float(width), float(height), {"format": "svg", "source": source})


def read_svg(path: str | Path, step: float | None = None) -> Sketch:
    """Read an SVG file: one stroke per path (in document order), points every ``step`` user units.

    Args:
        path: the ``.svg`` file.
        step: arc-length spacing in the SVG's user units; default ``max(width, height) / 128``.

    Returns:
        A sketch on the viewBox (else width/height) canvas, coordinates relative to its origin, t = 0.
    """
    path = Path(path)
    return parse_svg(path.read_bytes(), step, source=str(path))


def _fmt(value: float) -> str:
    return np.format_float_positional(float(value), trim="-")  # shortest exact decimal: round-trips


def sketch_to_svg(sketch: Sketch, stroke_width: float = 2.0) -> str:
    """SVG text with one polyline ``<path>`` per stroke, in drawing order (a dot is a zero-length line)."""
    w, h = _fmt(sketch.canvas_width), _fmt(sketch.canvas_height)
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{w}" height="{h}" viewBox="0 0 {w} {h}">',
        f'<g fill="none" stroke="black" stroke-linecap="round" stroke-linejoin="round" '
        f'stroke-width="{_fmt(stroke_width)}">',
    ]
    for i, stroke in enumerate(sketch.strokes):
        xy = stroke[:, :2] if len(stroke) > 1 else np.repeat(stroke[:, :2], 2, axis=0)
        coords = [f"{_fmt(x)} {_fmt(y)}" for x, y in xy]
        lines.append(f'<path id="{i}" d="M{coords[0]} L{" ".join(coords[1:])}"/>')
    lines += ["</g>", "</svg>", ""]
    return "\n".join(lines)


def write_svg(sketch: Sketch, path: str | Path, stroke_width: float = 2.0) -> Path:
    """Write :func:`sketch_to_svg` to a file; returns the path."""
    path = Path(path)
    path.write_text(sketch_to_svg(sketch, stroke_width), encoding="utf-8")
    return path
