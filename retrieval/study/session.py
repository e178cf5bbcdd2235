"""Drawing sessions and the user-study trial state machine, independent of any UI.

The browser canvas sends its whole journal of the current trial after every change (format and
validation in :mod:`retrieval.study.payload`). :meth:`DrawingSession.update` logs each event it
has not seen exactly once and ranks the latest state once per request, so events coalesced by the
UI (two quick strokes during one slow ranking) are each logged, and no payload can cost more than
one ranking. The per-stroke ranking is an injected callable, normally
``retrieval.serving.retriever.Retriever.rank``.

Study phases: ``consent`` -> per trial ``drawing`` -> ``found`` | ``gave_up`` | ``timed_out`` ->
... -> ``done``.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrieval.data.sketch import Sketch
from retrieval.study.log import StudyLog, utc_now
from retrieval.study.payload import (
    CanvasEvent,
    CanvasJournal,
    CanvasPayloadError,
    apply_event,
    decode_payload,
    parse_canvas_payload,
    payload_token,
    replay,
    strokes_to_sketch,
)
from retrieval.study.plan import StudyConfig, TrialPlan, plan_trials

END_PHASES = ("found", "gave_up", "timed_out")
MAX_NEW_EVENTS = 60
"""Unseen events one request may carry. Far more than a person draws between two requests: at the
fastest human pace (pen-up to pen-down p10 155 ms, ../shared/data/quickdraw-raw) 60 events take
about 10 s, and the canvas sends after every one of them."""
MAX_CURVE = 200  # rank-curve points kept and sent to the browser per sketch
ENDED_TRIALS_KEPT = 2  # ended trials whose late strokes are still logged under them


# --- drawing sessions ------------------------------------------------------------------------------
RankFn = Callable[[Sketch, "str | None"], Any]  # (sketch, target_id) -> RankResult-like


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
    phase: str = "drawing"  # drawing | found | gave_up | timed_out
    seen_seq: int = 0
    strokes_drawn: int = 0
    curve: list[RankPoint] = field(default_factory=list)  # the last MAX_CURVE rankings
    final_rank: int | None = None
    best_rank: int | None = None
    last: Any = None  # the latest RankResult, or None for an empty canvas
    last_server_ms: float = 0.0
    start_mono: float = field(default_factory=time.monotonic)
    start_utc: str = field(default_factory=utc_now)


@dataclass
class DrawingSession:
    """Per-browser-tab state: the current sketch, the trials that just ended, and the study.

    Every method that changes the session holds ``lock`` (re-entrant), so the events of one
    session apply in order, exactly once, whichever UI event (stroke, Give up, Next) runs them
    and whichever thread runs it; callers that render a view hold it too for a consistent read.
    Plain data otherwise (no open files): ``copy.deepcopy`` gives a new lock.
    """

    mode: str = "free"
    sketch: SketchState = field(default_factory=SketchState)
    ended: list[SketchState] = field(default_factory=list)  # last trials: strokes racing Next land there
    # study-only state
    config: StudyConfig | None = None
    log: StudyLog | None = None
    plan: list[TrialPlan] = field(default_factory=list)
    trial: int = -1
    status: str = "consent"  # consent | running | done (study mode)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, lock=threading.RLock())

    # --- the current sketch, as the UI reads it -------------------------------------------------
    token = property(lambda self: self.sketch.token)
    target_id = property(lambda self: self.sketch.target_id)
    last = property(lambda self: self.sketch.last)
    last_server_ms = property(lambda self: self.sketch.last_server_ms)
    strokes_drawn = property(lambda self: self.sketch.strokes_drawn)
    curve = property(lambda self: self.sketch.curve)

    @property
    def phase(self) -> str:
        """``consent`` and ``done`` around a study, else the current sketch's phase."""
        return self.status if self.mode == "study" and self.status != "running" else self.sketch.phase

    @property
    def current(self) -> TrialPlan | None:
        return self.plan[self.trial] if 0 <= self.trial < len(self.plan) else None

    # --- trials ---------------------------------------------------------------------------------
    def new_sketch(self, target_id: str | None = None) -> None:
        """Forget the sketch (new canvas token) and set the target, keeping the study progress."""
        with self.lock:
            self.sketch = SketchState(target_id=target_id)

    def begin_study(self, config: StudyConfig, log: StudyLog, gallery_ids: list[str], extra: dict) -> None:
        """Plan the session's trials and write ``session_start`` (``extra``: e.g. gallery size)."""
        with self.lock:
            self.mode, self.config, self.log = "study", config, log
            self.plan = plan_trials(config, gallery_ids, log.participant)
            log.append({"type": "session_start", "study": config.name, "config": config.__dict__, **extra})
            self.trial, self.status = -1, "running"
            self.next_trial()

    def next_trial(self) -> TrialPlan | None:
        """Start the next trial (``trial_start``) or finish the session (``session_end``).

        The trial that ends stays reachable by its token for a while, so a stroke drawn in it that
        reaches the server after this call is still logged under it (``phase`` says it ended).
        """
        with self.lock:
            if self.sketch.plan is not None:
                self.ended = [*self.ended, self.sketch][-ENDED_TRIALS_KEPT:]
            self.trial += 1
            plan = self.current
            if plan is None:
                self.status = "done"
                self.sketch = SketchState(phase="done")
                self.log.append({"type": "session_end", "trials": len(self.plan)})
                return None
            self.sketch = SketchState(target_id=plan.target_id, plan=plan)
            self._log(
                self.sketch,
                {"type": "trial_start", "trial_start_utc": self.sketch.start_utc, "trial_token": self.sketch.token},
            )
            return plan

    def elapsed_s(self) -> float:
        return time.monotonic() - self.sketch.start_mono

    def end_trial(self, outcome: str) -> None:
        """End the current trial as ``found``, ``gave_up`` or ``timed_out`` (``trial_end`` summary)."""
        with self.lock:
            sketch = self.sketch
            if sketch.phase != "drawing" or sketch.plan is None:
                return
            sketch.phase = outcome
            self._log(
                sketch,
                {
                    "type": "trial_end",
                    "outcome": outcome,
                    "found": outcome == "found",
                    "strokes_drawn": sketch.strokes_drawn,
                    "seconds": round(self.elapsed_s(), 3),
                    "final_rank": sketch.final_rank,
                    "best_rank": sketch.best_rank,
                },
            )

    def check_time(self) -> bool:
        """End the trial as timed out when its limit passed; True if it did."""
        limit = self.config.time_limit_s if self.config else 0
        with self.lock:
            if self.sketch.phase == "drawing" and limit and self.elapsed_s() >= limit:
                self.end_trial("timed_out")
                return True
        return False

    def _log(self, sketch: SketchState, *records: dict) -> None:
        """Write records of ``sketch``'s trial (one write and one fsync for all of them)."""
        plan = sketch.plan
        if self.log is not None and plan is not None and records:
            trial = {"trial": plan.index, "condition": plan.condition, "target_id": plan.target_id}
            self.log.append_many([{**trial, **record} for record in records])

    # --- per request ----------------------------------------------------------------------------
    def update(self, payload: Any, rank: RankFn) -> bool:
        """Take the canvas journal: log each unseen event once, rank the latest state once.

        Returns True when the current sketch changed (the UI should re-render). Cost is bounded
        per request whatever the payload: one ``rank`` call, one record per new event, at most
        ``MAX_NEW_EVENTS`` new events (more is an error: no person draws that between two
        requests). A journal of a trial that just ended (a stroke racing Give up, the clock or
        Next) is still logged under that trial; other unknown tokens are ignored.

        Raises:
            CanvasPayloadError: the journal is malformed or over a limit (nothing is logged).
        """
        received_mono, received_utc = time.monotonic(), utc_now()
        payload = decode_payload(payload)
        with self.lock:
            sketch = self._sketch_for(payload_token(payload))
            if sketch is None:
                return False
            journal = parse_canvas_payload(payload, after_seq=sketch.seen_seq, max_new=MAX_NEW_EVENTS)
            if sketch is self.sketch and self.mode == "study":
                self.check_time()  # a stroke that arrives after the limit does not count as found
            new = [e for e in journal.events if e.seq > sketch.seen_seq]
            if not new:
                return False
            self._check_new(journal)
            strokes = replay([e for e in journal.events if e.seq <= sketch.seen_seq])
            applied, drawn = [], sketch.strokes_drawn  # (event, strokes on canvas after it, stroke index)
            for event in new:
                apply_event(strokes, event)
                drawn += event.type == "stroke"
                applied.append((event, len(strokes), drawn - 1))
            self._rank(sketch, strokes, journal, rank)
            if self.mode == "study":
                received = {
                    "server_received_utc": received_utc,
                    "server_received_s": round(received_mono - sketch.start_mono, 4),
                }
                self._log(
                    sketch,
                    *(
                        self._event_record(sketch, journal, event, on_canvas, stroke_index, event is new[-1], received)
                        for event, on_canvas, stroke_index in applied
                    ),
                )
            # Only once the records are on disk: if the write failed, the resent journal logs them again.
            sketch.seen_seq, sketch.strokes_drawn = new[-1].seq, drawn
            if self.mode == "study":
                last = sketch.last
                if new[-1].type == "stroke" and last is not None and last.target_rank is not None:
                    if sketch is self.sketch and last.target_rank <= self.config.found_k:
                        self.end_trial("found")  # no-op when the trial already ended
            return sketch is self.sketch

    def _sketch_for(self, token: str | None) -> SketchState | None:
        for sketch in (self.sketch, *reversed(self.ended)):
            if token is not None and token == sketch.token:
                return sketch
        return None

    def _check_new(self, journal: CanvasJournal) -> None:
        if self.mode == "study" and journal.events[0].seq != 1:
            raise CanvasPayloadError("a study trial's journal must start at seq 1 (events were dropped)")

    def _rank(self, sketch: SketchState, strokes: list[np.ndarray], journal: CanvasJournal, rank: RankFn) -> None:
        if not strokes:
            sketch.last = None
            return
        start = time.perf_counter()
        sketch.last = result = rank(strokes_to_sketch(strokes, journal.width, journal.height), sketch.target_id)
        sketch.last_server_ms = server_ms = (time.perf_counter() - start) * 1000.0
        top1 = float(result.scores[0]) if len(result.scores) else float("nan")
        sketch.curve.append(RankPoint(len(strokes), result.target_rank, top1, server_ms))
        del sketch.curve[:-MAX_CURVE]
        sketch.final_rank = result.target_rank
        if result.target_rank is not None:
            sketch.best_rank = min(result.target_rank, sketch.best_rank or result.target_rank)

    def _event_record(
        self,
        sketch: SketchState,
        journal: CanvasJournal,
        event: CanvasEvent,
        on_canvas: int,
        stroke_index: int,
        ranked: bool,
        received: dict,
    ) -> dict:
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
