"""The canvas journal: strict validation of what the browser canvas sends after every stroke.

The canvas keeps an append-only *journal* of the current trial (strokes with every point, undo,
clear), each event numbered by ``seq``, and sends it whole after every change (JSON object)::

    {"trial": "<token>", "width": 512, "height": 512, "dpr": 2, "t0_utc_ms": 1714557600000,
     "events": [{"seq": 1, "type": "stroke", "pointer": "mouse", "t_down": 812.4, "t_up": 1190.0,
                 "points": [[x, y, t_ms, pressure], ...]},
                {"seq": 2, "type": "undo", "t": 1500.2}, {"seq": 3, "type": "clear", "t": 1800}]}

``t`` values are ``performance.now()`` milliseconds since the trial (or sketch) started.

Everything here is untrusted: each field that can reach a study record is checked for type, range
and size, unknown keys are dropped, and the result is a small frozen :class:`CanvasJournal`
holding only checked values, so nothing a client invents (a 10 MB ``dpr``, nested extras) can
reach the log. Every problem raises :class:`CanvasPayloadError` (a ``ValueError``) saying what to fix.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from retrieval.data.formats.stroke_json import StrokeLimits, parse_stroke_json
from retrieval.data.sketch import Sketch

MAX_EVENTS = 2_000  # events in one trial's journal
MAX_POINTS = 50_000  # points over the whole journal (the canvas stops at 40k, see assets/ui/canvas.js)
MAX_TOKEN_CHARS = 64
MAX_DPR = 16.0
MAX_UTC_MS = 1e14  # year 5138: any real browser clock is below
MAX_CANVAS_PX = 100_000.0
EVENT_TYPES = ("stroke", "undo", "clear")
POINTER_TYPES = ("mouse", "pen", "touch")
LIMITS = StrokeLimits(max_points=MAX_POINTS)


class CanvasPayloadError(ValueError):
    """The canvas journal is malformed or over a limit; the message says what is wrong."""


@dataclass(frozen=True)
class CanvasEvent:
    """One checked journal event; ``points``/``xyt`` only for strokes, ``t`` only for undo/clear."""

    seq: int
    type: str
    t: float | None = None
    pointer: str | None = None
    t_down: float | None = None
    t_up: float | None = None
    points: list | None = None  # [[x, y, t_ms(, pressure)], ...] as sent, every value a checked number
    xyt: np.ndarray | None = None  # (n, 3) float64, for ranking


@dataclass(frozen=True)
class CanvasJournal:
    """A checked canvas payload: only the fields below survive validation."""

    trial: str | None
    width: float
    height: float
    dpr: float | None
    t0_utc_ms: float | None
    events: tuple[CanvasEvent, ...]


def _number(value: Any, where: str, low: float, high: float, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
        raise CanvasPayloadError(f"{where} must be a number in [{low:g}, {high:g}], got {_short(value)}")
    return float(value)


def _short(value: Any) -> str:
    """A bounded description of a bad value (never echo megabytes back)."""
    text = repr(value) if isinstance(value, int | float | bool | type(None)) else type(value).__name__
    return text[:40]


def decode_payload(value: Any) -> dict:
    """The payload as a dict (JSON text is decoded, bounded); anything else is an error."""
    if isinstance(value, str):
        if len(value) > LIMITS.max_bytes:
            raise CanvasPayloadError(f"canvas payload is over {LIMITS.max_bytes} characters")
        try:
            value = json.loads(value) if value.strip() else {}
        except (ValueError, RecursionError) as exc:
            raise CanvasPayloadError(f"canvas payload is not valid JSON: {str(exc)[:80]}") from exc
    if not isinstance(value, dict):
        raise CanvasPayloadError(f"canvas payload must be a JSON object, got {type(value).__name__}")
    return value


def payload_token(value: dict) -> str | None:
    """The journal's trial token (None when absent); anything but a short string is an error."""
    trial = value.get("trial")
    if trial is not None and (not isinstance(trial, str) or len(trial) > MAX_TOKEN_CHARS):
        raise CanvasPayloadError(f"trial must be a token string of at most {MAX_TOKEN_CHARS} characters")
    return trial


def _event(raw: Any, i: int, seq_before: int | None) -> CanvasEvent:
    if not isinstance(raw, dict) or raw.get("type") not in EVENT_TYPES:
        raise CanvasPayloadError(f"event {i} must be an object with type in {EVENT_TYPES}")
    seq = raw.get("seq")
    if type(seq) is not int or not 1 <= seq <= 10**9:
        raise CanvasPayloadError(f"event {i} seq must be an integer in [1, 1e9], got {_short(seq)}")
    if seq_before is not None and seq != seq_before + 1:
        raise CanvasPayloadError(f"event {i} seq {seq} does not follow {seq_before}: seq must count up by one")
    bound = LIMITS.max_abs_time_ms
    if raw["type"] != "stroke":
        return CanvasEvent(seq, raw["type"], t=_number(raw.get("t"), f"event {i} t", -bound, bound, optional=True))
    pointer = raw.get("pointer")
    if pointer is not None and pointer not in POINTER_TYPES:
        raise CanvasPayloadError(f"event {i} pointer must be one of {POINTER_TYPES}, got {_short(pointer)}")
    return CanvasEvent(
        seq,
        "stroke",
        pointer=pointer,
        t_down=_number(raw.get("t_down"), f"event {i} t_down", -bound, bound, optional=True),
        t_up=_number(raw.get("t_up"), f"event {i} t_up", -bound, bound, optional=True),
        points=raw.get("points"),
    )


def parse_canvas_payload(value: Any, *, after_seq: int = 0, max_new: int | None = None) -> CanvasJournal:
    """Validate the canvas journal (dict or JSON string) into a :class:`CanvasJournal`.

    Points are checked by :func:`retrieval.data.formats.stroke_json.parse_stroke_json` (types, NaN,
    bounds, counts: each point 3 or 4 finite numbers), so the raw ``points`` can be logged as sent.
    ``seq`` must count up by one through the journal. With ``max_new``, more than that many events
    after ``after_seq`` is refused before any point is read (a flood costs little to turn away).

    Raises:
        CanvasPayloadError: what is wrong, e.g. ``dpr must be a number in [0, 16]``.
    """
    value = decode_payload(value)
    trial = payload_token(value)
    width = _number(value.get("width", 256), "width", 1e-3, MAX_CANVAS_PX)
    height = _number(value.get("height", 256), "height", 1e-3, MAX_CANVAS_PX)
    dpr = _number(value.get("dpr"), "dpr", 1e-3, MAX_DPR, optional=True)
    t0_utc_ms = _number(value.get("t0_utc_ms"), "t0_utc_ms", 0, MAX_UTC_MS, optional=True)
    raw_events = value.get("events", [])
    if not isinstance(raw_events, list) or len(raw_events) > MAX_EVENTS:
        raise CanvasPayloadError(f"'events' must be a list of at most {MAX_EVENTS} events")
    events: list[CanvasEvent] = []
    for i, raw in enumerate(raw_events):
        events.append(_event(raw, i, events[-1].seq if events else None))
    new = sum(e.seq > after_seq for e in events)
    if max_new is not None and new > max_new:
        raise CanvasPayloadError(
            f"{new} new events in one request, over the limit of {max_new}: the canvas sends each stroke as it is drawn"
        )
    strokes = [e for e in events if e.type == "stroke"]
    if strokes:
        wire = {"canvas": {"width": width, "height": height}, "strokes": [e.points for e in strokes]}
        arrays = iter(parse_stroke_json(wire, LIMITS).strokes)
        events = [replace(e, xyt=next(arrays)) if e.type == "stroke" else e for e in events]
    return CanvasJournal(trial, width, height, dpr, t0_utc_ms, tuple(events))


def replay(events: tuple[CanvasEvent, ...] | list[CanvasEvent]) -> list[np.ndarray]:
    """The strokes on the canvas after the events (stroke adds, undo removes the last, clear empties)."""
    strokes: list[np.ndarray] = []
    for event in events:
        apply_event(strokes, event)
    return strokes


def apply_event(strokes: list[np.ndarray], event: CanvasEvent) -> None:
    """Update the strokes on the canvas in place for one event."""
    if event.type == "stroke":
        strokes.append(event.xyt)
    elif event.type == "undo" and strokes:
        strokes.pop()
    elif event.type == "clear":
        strokes.clear()


def strokes_to_sketch(strokes: list[np.ndarray], width: float, height: float) -> Sketch:
    """A :class:`Sketch` of the canvas strokes, times rebased to the sketch's first point."""
    t0 = strokes[0][0, 2] if strokes else 0.0
    xyt = []
    for s in strokes:
        a = s[:, :3].copy()
        a[:, 2] -= t0
        xyt.append(a)
    return Sketch(tuple(xyt), width, height)
