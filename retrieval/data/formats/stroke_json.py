"""The app's stroke JSON: strict validation of untrusted payloads into a :class:`Sketch`.

Wire format (what the browser canvas sends)::

    {"canvas": {"width": W, "height": H}, "strokes": [[[x, y, t_ms], ...], ...]}

A point may carry a 4th value (pressure), which is checked and dropped. Every check that bounds
memory (bytes, stroke and point counts) runs before any array is built, so an oversized payload is
rejected in time proportional to its stroke count, not its size.
"""

from __future__ import annotations

import contextlib
import gc
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from retrieval.data.sketch import Sketch

_NUMBER_TYPES = (int, float)  # exact types: bool is an int subclass but never a coordinate
_SEQUENCE_TYPES = (list, tuple)


@dataclass(frozen=True)
class StrokeLimits:
    """Bounds on one stroke payload; raise them only for trusted offline data."""

    max_bytes: int = 2_000_000
    """Size of the JSON text (UTF-8 bytes)."""
    max_strokes: int = 1000
    max_points: int = 50_000
    """Points over all strokes."""
    max_points_per_stroke: int = 10_000
    max_abs_coordinate: float = 1e6
    """Bound on |x|, |y| and on the canvas size, in canvas pixels."""
    max_abs_time_ms: float = 1e9
    """Bound on |t| (about 11 days): timestamps are ms since the trial started."""


class StrokePayloadError(ValueError):
    """The payload is not a valid stroke JSON within the limits; the message says what to fix."""


def _reject_constant(name: str) -> float:
    raise StrokePayloadError(f"{name} is not a valid coordinate: send finite numbers only")


def _decode(payload: str | bytes | bytearray | dict, limits: StrokeLimits) -> Any:
    if isinstance(payload, dict):
        return payload
    if not isinstance(payload, (str, bytes, bytearray)):
        raise StrokePayloadError(f"payload must be JSON text (str/bytes) or a dict, got {type(payload).__name__}")
    # A str has at least as many bytes as characters: reject huge ones before encoding them.
    size = len(payload)
    if isinstance(payload, str) and size <= limits.max_bytes:
        size = len(payload.encode("utf-8", errors="surrogatepass"))
    if size > limits.max_bytes:
        raise StrokePayloadError(
            f"payload is {size} bytes, over the limit of {limits.max_bytes}; send fewer points "
            "(or raise StrokeLimits.max_bytes for trusted data)"
        )
    # orjson parses well-formed payloads ~4x faster than json (the largest allowed one was 1.2x a
    # stroke's budget, bench/results/stroke_parse.md) and rejects NaN / Infinity like parse_constant.
    # Anything it refuses is parsed again by json, whose rules and messages say what to fix.
    with contextlib.suppress(orjson.JSONDecodeError):
        return orjson.loads(payload)
    try:
        return json.loads(payload, parse_constant=_reject_constant)
    except StrokePayloadError:
        raise
    except json.JSONDecodeError as exc:
        raise StrokePayloadError(
            f"invalid or truncated JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except RecursionError as exc:
        raise StrokePayloadError("JSON is nested too deeply; strokes are lists of [x, y, t] points") from exc
    except UnicodeDecodeError as exc:
        raise StrokePayloadError(f"invalid JSON: not UTF-8 text ({exc})") from exc
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise StrokePayloadError(f"invalid JSON: {exc}") from exc


def _positive_number(value: Any, what: str, limits: StrokeLimits) -> float:
    if type(value) not in _NUMBER_TYPES:
        raise StrokePayloadError(f"{what} must be a number, got {type(value).__name__} {value!r:.40}")
    number = float(value) if abs(value) <= limits.max_abs_coordinate else float("inf")
    if not 0 < number <= limits.max_abs_coordinate:
        raise StrokePayloadError(f"{what} must be in (0, {limits.max_abs_coordinate:g}], got {value!r:.40}")
    return number


def _canvas(canvas: Any, limits: StrokeLimits) -> tuple[float, float]:
    if not isinstance(canvas, dict):
        raise StrokePayloadError('missing or invalid "canvas": send {"canvas": {"width": W, "height": H}, ...}')
    return (
        _positive_number(canvas.get("width"), "canvas.width", limits),
        _positive_number(canvas.get("height"), "canvas.height", limits),
    )


def _check_counts(strokes: Any, limits: StrokeLimits) -> None:
    if not isinstance(strokes, _SEQUENCE_TYPES):
        raise StrokePayloadError(f'"strokes" must be a list of strokes, got {type(strokes).__name__}')
    if not strokes:
        raise StrokePayloadError('"strokes" is empty: draw at least one stroke before sending')
    if len(strokes) > limits.max_strokes:
        raise StrokePayloadError(f"{len(strokes)} strokes, over the limit of {limits.max_strokes}")
    total = 0
    for i, stroke in enumerate(strokes):
        if not isinstance(stroke, _SEQUENCE_TYPES):
            raise StrokePayloadError(f"stroke {i} must be a list of [x, y, t] points, got {type(stroke).__name__}")
        if not stroke:
            raise StrokePayloadError(f"stroke {i} is empty: a stroke needs at least one [x, y, t] point")
        if len(stroke) > limits.max_points_per_stroke:
            raise StrokePayloadError(
                f"stroke {i} has {len(stroke)} points, over the limit of {limits.max_points_per_stroke} per stroke"
            )
        total += len(stroke)
        if total > limits.max_points:
            raise StrokePayloadError(f"more than {limits.max_points} points in total, over the limit")


def _point_error(stroke: Any, i: int) -> StrokePayloadError:
    """The message for the first malformed point of a stroke already known to hold one."""
    for j, point in enumerate(stroke):
        where = f"stroke {i} point {j}"
        if not isinstance(point, _SEQUENCE_TYPES) or len(point) not in (3, 4):
            return StrokePayloadError(f"{where} must be [x, y, t] or [x, y, t, pressure], got {point!r:.60}")
        for value in point:
            if type(value) not in _NUMBER_TYPES:
                return StrokePayloadError(f"{where} holds {value!r:.40} ({type(value).__name__}); send numbers only")
    return StrokePayloadError(f"stroke {i} is malformed")


def _stroke_array(stroke: Any, i: int, limits: StrokeLimits) -> np.ndarray:
    # Tight set comprehensions do the per-point type checks fast; the slow path only names the culprit.
    if {type(p) for p in stroke} - set(_SEQUENCE_TYPES):
        raise _point_error(stroke, i)
    lengths = {len(p) for p in stroke}
    if lengths - {3, 4} or {type(v) for p in stroke for v in p} - set(_NUMBER_TYPES):
        raise _point_error(stroke, i)
    try:
        rows = stroke if len(lengths) == 1 else [[*p, 0.0] if len(p) == 3 else p for p in stroke]  # pad pressure
        arr = np.array(rows, dtype=np.float64)
    except OverflowError as exc:  # an integer beyond float range
        raise StrokePayloadError(f"stroke {i} holds a number too large for a coordinate") from exc
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise StrokePayloadError(f"stroke {i} point {int(np.argmax(bad))} is NaN or infinite; send finite numbers")
    arr = arr[:, :3]
    for col, what, bound in (
        (0, "x", limits.max_abs_coordinate),
        (1, "y", limits.max_abs_coordinate),
        (2, "t", limits.max_abs_time_ms),
    ):
        too_big = np.abs(arr[:, col]) > bound
        if too_big.any():
            j = int(np.argmax(too_big))
            raise StrokePayloadError(f"stroke {i} point {j}: |{what}| = {abs(arr[j, col]):g} exceeds {bound:g}")
    return arr


@contextlib.contextmanager
def _cyclic_collector_paused():
    """JSON decodes to trees (no reference cycles), so reference counting frees all of it; but its
    ~200k lists and floats trigger the cyclic collector over and over, which took two thirds of the
    largest allowed payload's parse (bench/results/stroke_parse.md). Process-wide, and only turned
    back on if it was on: concurrent parses at worst collect as before, never leave it off."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_stroke_json(payload: str | bytes | bytearray | dict, limits: StrokeLimits = StrokeLimits()) -> Sketch:
    """Validate a stroke payload and build the sketch.

    Args:
        payload: JSON text or the already-decoded object.
        limits: size bounds checked before any array is allocated.

    Returns:
        The sketch; ``meta = {"format": "stroke-json"}``.

    Raises:
        StrokePayloadError: invalid or truncated JSON, wrong types or shapes, NaN/Infinity, empty
            strokes, a non-positive canvas, or any limit exceeded.
    """
    with _cyclic_collector_paused():
        return _parse(payload, limits)


def _parse(payload: str | bytes | bytearray | dict, limits: StrokeLimits) -> Sketch:
    data = _decode(payload, limits)
    if not isinstance(data, dict):
        raise StrokePayloadError(
            f'payload must be a JSON object with "canvas" and "strokes", got {type(data).__name__}'
        )
    width, height = _canvas(data.get("canvas"), limits)
    strokes = data.get("strokes")
    _check_counts(strokes, limits)
    arrays = tuple(_stroke_array(stroke, i, limits) for i, stroke in enumerate(strokes))
    return Sketch(arrays, width, height, {"format": "stroke-json"})


def to_stroke_json(sketch: Sketch) -> dict:
    """The wire form of a sketch (``json.dumps`` of it round-trips through :func:`parse_stroke_json`)."""
    return {
        "canvas": {"width": float(sketch.canvas_width), "height": float(sketch.canvas_height)},
        "strokes": [stroke.tolist() for stroke in sketch.strokes],
    }
