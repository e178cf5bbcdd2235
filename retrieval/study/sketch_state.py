"""One sketch's state (a free drawing or one study trial) and the log record of each canvas event.

:class:`retrieval.study.session.DrawingSession` owns these; they hold no lock of their own.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from retrieval.study.log import utc_now
from retrieval.study.payload import CanvasEvent, CanvasJournal
from retrieval.study.plan import TrialPlan


@dataclass
class RankPoint:
    """One point of the rank-evolution curve: after ``strokes`` strokes, rank and top-1 score."""

    strokes: int
    target_rank: int | None
    top1_score: float
    server_ms: float


@dataclass
class SketchState:
    """One canvas token's sketch: how far its journal was applied, its ranking and (in studies) its trial."""

    token: str = field(default_factory=lambda: secrets.token_hex(6))
    target_id: str | None = None
    plan: TrialPlan | None = None
    phase: str = "drawing"  # drawing | found | not_found | gave_up | timed_out
    seen_seq: int = 0
    strokes_drawn: int = 0
    curve: list[RankPoint] = field(default_factory=list)  # the last MAX_CURVE rankings
    final_rank: int | None = None
    best_rank: int | None = None
    last: Any = None  # the latest RankResult, or None for an empty canvas
    shown: Any = None  # the RankResult the participant sees (``last``, unless the condition hides it)
    shown_curve: int = 0  # how many points of ``curve`` the participant sees
    searches: int = 0  # Search presses (``on_request``)
    last_server_ms: float = 0.0
    start_mono: float = field(default_factory=time.monotonic)
    start_utc: str = field(default_factory=utc_now)


def event_record(
    sketch: SketchState,
    journal: CanvasJournal,
    event: CanvasEvent,
    on_canvas: int,
    stroke_index: int,
    ranked: bool,
    received: dict,
) -> dict:
    """The log record of one canvas event of ``sketch`` (with the ranking when ``ranked``: the request's last event)."""
    record = {
        "type": event.type,
        "seq": event.seq,
        "phase": sketch.phase,
        "strokes_on_canvas": on_canvas,
        "trial_token": sketch.token,
        "canvas_width": journal.width,
        "canvas_height": journal.height,
        "dpr": journal.dpr,
        "client_t0_utc_ms": journal.t0_utc_ms,
        "trial_start_utc": sketch.start_utc,
        **received,
        "ranked": ranked and sketch.last is not None,
        "shown": ranked and sketch.last is not None and sketch.shown is sketch.last,
    }
    if event.type == "stroke":
        record.update(
            stroke_index=stroke_index,
            points=event.points,
            pointer=event.pointer,
            t_down=event.t_down,
            t_up=event.t_up,
        )
    else:
        record["t"] = event.t
    if record["ranked"]:
        last = sketch.last
        record.update(
            target_rank=last.target_rank,
            top_ids=list(last.ids),
            top_scores=[round(float(s), 5) for s in last.scores],
            server_ms=round(sketch.last_server_ms, 2),
            timings_ms=dict(last.timings_ms),
        )
    return record
