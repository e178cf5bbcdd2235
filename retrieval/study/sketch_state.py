"""One canvas token's sketch: what the session applied of its journal, and the records of it.

A :class:`SketchState` holds the strokes on the canvas, the last ``seq`` applied and the journal's
chain after it (and after the last :data:`CHAIN_WINDOW` events, to recognise a batch re-sent after
its answer was lost), the ranking and the rank curve. :mod:`retrieval.ui.drawing_session` decides when
events are applied, logged and ranked; this module checks a batch against what was applied and
builds the records. In a study the participant may be shown less than the latest ranking
(the trial's condition: :mod:`retrieval.study.conditions`): ``shown`` and ``shown_curve`` are what
the page may show, and the server builds its answers from them alone.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrieval.serving.rank_result import proven_rank
from retrieval.study.log import utc_now
from retrieval.study.log_rankings import RANKING_FIELDS
from retrieval.study.payload import CHAIN_START, MAX_NEW_EVENTS, CanvasEvent, CanvasPayloadError, StrokeBatch
from retrieval.study.plan import TrialPlan

MAX_CURVE = 200  # rank-curve points kept and sent to the browser per sketch
CHAIN_WINDOW = MAX_NEW_EVENTS + 4  # applied events whose chain is kept, to recognise a re-sent batch


class SyncError(CanvasPayloadError):
    """The batch does not continue what this session applied (a gap, or a different history).

    ``applied`` and ``chain`` say where the server is, so an honest canvas can re-send from there.
    """

    def __init__(self, message: str, applied: int, chain: str) -> None:
        super().__init__(message)
        self.applied, self.chain = applied, chain


class TrialClosedError(CanvasPayloadError):
    """The batch names a trial that is unknown, or ended longer ago than the grace window."""


class QuotaError(CanvasPayloadError):
    """The trial or session reached a limit on events, points or log bytes (the message says which)."""


@dataclass
class RankPoint:
    """One point of the rank-evolution curve: after ``strokes`` strokes, rank and top-1 score."""

    strokes: int
    target_rank: int | None
    top1_score: float
    server_ms: float


@dataclass
class SketchState:
    """One canvas token's sketch: what was applied, its ranking and (in studies) its trial."""

    token: str = field(default_factory=lambda: secrets.token_hex(16))
    target_id: str | None = None
    plan: TrialPlan | None = None
    phase: str = "drawing"  # drawing | found | not_found | gave_up | timed_out (| done after a study)
    seen_seq: int = 0
    chains: dict[int, str] = field(default_factory=lambda: {0: CHAIN_START})  # seq -> chain, last CHAIN_WINDOW
    strokes: list[np.ndarray] = field(default_factory=list)  # on the canvas after seen_seq
    strokes_drawn: int = 0
    points_logged: int = 0
    log_bytes: int = 0
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
    ended_mono: float | None = None

    @property
    def chain(self) -> str:
        return self.chains[self.seen_seq]

    def unseen(self, batch: StrokeBatch) -> list[CanvasEvent]:
        """The batch's events after ``seen_seq``, once its history is checked against the session's."""
        self.check_history(batch.base, batch.chain, batch.chains)
        return [e for e in batch.events if e.seq > self.seen_seq]

    def check_history(self, base: int, chain: str, chains: tuple[str, ...]) -> None:
        """Raise :class:`SyncError` unless a batch from ``base`` (journal chain ``chain`` there, then
        ``chains`` after each event) continues what was applied, without a gap."""
        applied = self.seen_seq
        if base > applied:
            raise SyncError(f"events after {applied} are missing: send from there", applied, self.chain)
        for seq, sent in [(base, chain), *zip(range(base + 1, applied + 1), chains)]:
            known = self.chains.get(seq)
            if known is None:
                raise SyncError(f"seq {seq} is too old to check: send from {applied}", applied, self.chain)
            if known != sent:
                raise SyncError(
                    f"the journal differs from what the server applied at seq {seq}: events cannot be changed "
                    "once sent",
                    applied,
                    self.chain,
                )

    def acknowledge(self, batch: StrokeBatch, count: int) -> None:
        """Record the batch's last ``count`` events as applied (their chains; the oldest ones forgotten)."""
        for event, chain in zip(batch.events[-count:], batch.chains[-count:], strict=True):
            self.chains[event.seq] = chain
        self.seen_seq = batch.events[-1].seq
        for seq in [s for s in self.chains if s <= self.seen_seq - CHAIN_WINDOW]:
            del self.chains[seq]

    def record_ranking(self, result: Any, server_ms: float) -> dict:
        """Keep a ranking of the strokes on the canvas (the curve, final and best rank); its log fields."""
        self.last, self.last_server_ms = result, server_ms
        top1 = float(result.scores[0]) if len(result.scores) else float("nan")
        self.curve.append(RankPoint(len(self.strokes), result.target_rank, top1, server_ms))
        trimmed = max(0, len(self.curve) - MAX_CURVE)
        del self.curve[:trimmed]
        self.shown_curve = max(0, self.shown_curve - trimmed)
        self.final_rank = result.target_rank
        if result.target_rank is not None:
            self.best_rank = min(result.target_rank, self.best_rank or result.target_rank)
        values = (
            result.target_rank,
            list(result.ids),
            [round(float(s), 5) for s in result.scores],
            round(server_ms, 2),
            dict(result.timings_ms),
        )
        fields = dict(zip(RANKING_FIELDS, values, strict=True))
        if result.snapshot:  # the answer's own (over the log's common field): a cluster redeployed mid-session shows
            fields["snapshot"] = result.snapshot
        if not result.rank_exact:  # a certified interval, not a rank (capped, or shards missed their deadline)
            fields |= {
                "rank_exact": False,
                "rank_bounds": None if result.rank_bounds is None else list(result.rank_bounds),
            }
        return fields

    def target_found(self, found_k: int) -> bool:
        """The latest ranking proves the target in the top ``found_k`` (an estimate never does)."""
        last = self.last
        return last is not None and proven_rank(last.target_rank, last.rank_exact, last.rank_bounds) <= found_k

    def show_latest(self) -> None:
        """Let the participant see the latest ranking and the whole curve."""
        self.shown, self.shown_curve = self.last, len(self.curve)

    def event_record(
        self,
        batch: StrokeBatch,
        event: CanvasEvent,
        on_canvas: int,
        stroke_index: int,
        ranked: bool,
        received: dict,
    ) -> dict:
        """The log record of one applied event (its trial fields are added by the session)."""
        record = {
            "type": event.type,
            "seq": event.seq,
            "phase": self.phase,
            "strokes_on_canvas": on_canvas,
            "trial_token": self.token,
            "canvas_width": batch.width,
            "canvas_height": batch.height,
            "dpr": batch.dpr,
            "client_t0_utc_ms": batch.t0_utc_ms,
            "trial_start_utc": self.start_utc,
            **received,
            "ranked": ranked,  # a rank record follows (unless the ranker failed)
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
        return record
