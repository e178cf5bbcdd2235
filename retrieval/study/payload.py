"""The canvas's stroke batches: strict validation of what the browser sends after every change.

The canvas keeps an append-only *journal* of the current trial (strokes with every point, undo,
clear), each event numbered by ``seq``. After every change it sends only the events the server
has not acknowledged yet, each as its own JSON text, with the ``seq`` it was acknowledged up to
(``base``) and the journal's running checksum there (``chain``)::

    {"trial": "<token>", "base": 1, "chain": "9ae0daaf", "width": 512, "height": 512, "dpr": 2,
     "t0_utc_ms": 1714557600000,
     "events": ["{\"seq\":2,\"type\":\"stroke\",\"pointer\":\"mouse\",\"t_down\":812.4,\"t_up\":1190.0,
                  \"points\":[[x, y, t_ms, pressure], ...]}",
                "{\"seq\":3,\"type\":\"undo\",\"t\":1500.2}"]}

``t`` values are ``performance.now()`` milliseconds since the trial (or sketch) started. The
chain is a running CRC-32 of the journal's event texts, each followed by a newline
(:func:`chain_after`; assets/ui/canvas.js computes the same): the server keeps the chain of what
it applied, so a batch whose history differs from that (a replayed or rewritten journal) is
refused, and a batch re-sent after a lost answer is recognised event by event. It is a check of
agreement, not a secret: the server never applies an event twice and never re-reads the past.

Everything here is untrusted: each field that can reach a study record is checked for type, range
and size, unknown keys are dropped, and the result is a small frozen :class:`StrokeBatch`
holding only checked values, so nothing a client invents (a 10 MB ``dpr``, nested extras) can
reach the log. Every problem raises :class:`CanvasPayloadError` (a ``ValueError``) saying what to fix.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from retrieval.data.formats.stroke_json import StrokeLimits, parse_stroke_json
from retrieval.data.sketch import Sketch

MAX_EVENTS = 2_000  # events in one study trial's journal
MAX_POINTS = 50_000  # points one study trial logs, or on a canvas (the canvas stops at 40k, assets/ui/canvas.js)
MAX_NEW_EVENTS = 60
"""Unseen events one request may carry. Far more than a person draws between two requests: at the
fastest human pace (pen-up to pen-down p10 155 ms, ../shared/data/quickdraw-raw) 60 events take
about 10 s, and the canvas sends after every one of them."""
MAX_TOKEN_CHARS = 64
MAX_SEQ = 10**9
CHAIN_START = "00000000"  # the chain of an empty journal
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
class StrokeBatch:
    """A checked stroke batch: only the fields below survive validation.

    ``events`` count up by one from ``base + 1``; ``chains[i]`` is the journal's chain after
    ``events[i]`` (computed here from the texts as sent, starting from ``chain``).
    """

    trial: str
    base: int
    chain: str
    width: float
    height: float
    dpr: float | None
    t0_utc_ms: float | None
    events: tuple[CanvasEvent, ...]
    chains: tuple[str, ...]


def chain_after(chain: str, event_text: str) -> str:
    """The journal's running checksum after one more event: CRC-32 over its UTF-8 text and a newline,
    continued from ``chain`` (8 lowercase hex digits), as ``zlib.crc32(data, previous)`` does."""
    data = event_text.encode("utf-8", "surrogatepass") + b"\n"
    return f"{zlib.crc32(data, int(chain, 16)):08x}"


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
    if isinstance(value, bytes | bytearray):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CanvasPayloadError("canvas payload is not UTF-8 text") from exc
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


def payload_token(value: dict) -> str:
    """The batch's trial token; anything but a short string is an error."""
    trial = value.get("trial")
    if not isinstance(trial, str) or not 0 < len(trial) <= MAX_TOKEN_CHARS:
        raise CanvasPayloadError(f"trial must be a token string of at most {MAX_TOKEN_CHARS} characters")
    return trial


def _event(raw: Any, i: int, seq: int) -> CanvasEvent:
    if not isinstance(raw, dict) or raw.get("type") not in EVENT_TYPES:
        raise CanvasPayloadError(f"event {i} must be an object with type in {EVENT_TYPES}")
    if type(raw.get("seq")) is not int or raw["seq"] != seq:
        raise CanvasPayloadError(
            f"event {i} seq must be {seq} (seq counts up by one from base + 1), got {_short(raw.get('seq'))}"
        )
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


def _chain(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 8 or any(c not in "0123456789abcdef" for c in value):
        raise CanvasPayloadError("chain must be 8 lowercase hex digits (the journal's CRC-32 at base)")
    return value


HistoryCheck = Callable[[str, int, str, tuple[str, ...]], None]
"""``(trial, base, chain, chains)`` -> None, or raises: the receiver's check of a batch's history."""


def parse_stroke_batch(value: Any, check_history: HistoryCheck | None = None) -> StrokeBatch:
    """Validate a stroke batch (dict, JSON text or bytes) into a :class:`StrokeBatch`.

    At most :data:`MAX_NEW_EVENTS` events, refused before any is parsed (a flood costs little to
    turn away). ``check_history`` sees the batch's chain after each event, computed from the
    texts alone, before any event is parsed: a replayed or rewritten journal is refused for the
    price of a CRC, not of parsing thousands of points. Points are checked by
    :func:`retrieval.data.formats.stroke_json.parse_stroke_json` (types, NaN, bounds, counts: each
    point 3 or 4 finite numbers), so the raw ``points`` can be logged as sent.

    Raises:
        CanvasPayloadError: what is wrong, e.g. ``dpr must be a number in [0, 16]``; whatever
            ``check_history`` raises.
    """
    value = decode_payload(value)
    trial = payload_token(value)
    base = value.get("base", 0)
    if type(base) is not int or not 0 <= base <= MAX_SEQ:
        raise CanvasPayloadError(f"base must be an integer in [0, {MAX_SEQ}], got {_short(base)}")
    chain = _chain(value.get("chain", CHAIN_START))
    width = _number(value.get("width", 256), "width", 1e-3, MAX_CANVAS_PX)
    height = _number(value.get("height", 256), "height", 1e-3, MAX_CANVAS_PX)
    dpr = _number(value.get("dpr"), "dpr", 1e-3, MAX_DPR, optional=True)
    t0_utc_ms = _number(value.get("t0_utc_ms"), "t0_utc_ms", 0, MAX_UTC_MS, optional=True)
    texts = value.get("events", [])
    if not isinstance(texts, list) or len(texts) > MAX_NEW_EVENTS:
        raise CanvasPayloadError(
            f"'events' must be a list of at most {MAX_NEW_EVENTS} event texts: the canvas sends each stroke as it is drawn"
        )
    if base + len(texts) > MAX_SEQ:
        raise CanvasPayloadError(f"seq must stay at most {MAX_SEQ}")
    chains: list[str] = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise CanvasPayloadError(f"event {i} must be the event's JSON text")
        chains.append(chain_after(chains[-1] if chains else chain, text))
    if check_history is not None:
        check_history(trial, base, chain, tuple(chains))
    events: list[CanvasEvent] = []
    for i, text in enumerate(texts):
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise CanvasPayloadError(f"event {i} is not valid JSON: {str(exc)[:80]}") from exc
        events.append(_event(raw, i, base + 1 + i))
    strokes = [e for e in events if e.type == "stroke"]
    if strokes:
        wire = {"canvas": {"width": width, "height": height}, "strokes": [e.points for e in strokes]}
        arrays = iter(parse_stroke_json(wire, LIMITS).strokes)
        events = [replace(e, xyt=next(arrays)) if e.type == "stroke" else e for e in events]
    return StrokeBatch(trial, base, chain, width, height, dpr, t0_utc_ms, tuple(events), tuple(chains))


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


class JournalWriter:
    """The canvas's side of the format, in Python: numbers events, keeps their chains and builds
    batches of what the server has not acknowledged (assets/ui/canvas.js does the same; the
    benchmarks and tests drive sessions with this).

    >>> writer = JournalWriter("token")
    >>> writer.add({"type": "undo", "t": 5.0})
    1
    >>> batch = writer.batch()  # {"trial": "token", "base": 0, "chain": "00000000", "events": [...]}
    >>> writer.acknowledge(1)
    """

    def __init__(self, trial: str, width: float = 256, height: float = 256, dpr: float = 1.0) -> None:
        self.trial, self.width, self.height, self.dpr = trial, width, height, dpr
        self.t0_utc_ms = 1.7e12
        self.texts: dict[int, str] = {}
        self.chains: dict[int, str] = {0: CHAIN_START}
        self.seq = self.acked = 0

    def add(self, event: dict) -> int:
        """Append an event (its ``seq`` is set here, whatever ``event`` says); returns its seq."""
        self.seq += 1
        text = json.dumps({"seq": self.seq, **{k: v for k, v in event.items() if k != "seq"}}, separators=(",", ":"))
        self.texts[self.seq], self.chains[self.seq] = text, chain_after(self.chains[self.seq - 1], text)
        return self.seq

    def batch(self, base: int | None = None) -> dict:
        """The events after ``base`` (default: the last acknowledged seq), as the canvas sends them."""
        base = self.acked if base is None else base
        events = [self.texts[s] for s in range(base + 1, self.seq + 1)][:MAX_NEW_EVENTS]
        return {
            "trial": self.trial,
            "base": base,
            "chain": self.chains[base],
            "width": self.width,
            "height": self.height,
            "dpr": self.dpr,
            "t0_utc_ms": self.t0_utc_ms,
            "events": events,
        }

    def acknowledge(self, applied: int) -> None:
        self.acked = max(self.acked, applied)
