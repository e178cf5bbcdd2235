"""The drawing session: the app's per-stroke core in every mode (free, demo, study), independent of Gradio.

The browser canvas sends the events of the current trial the server has not acknowledged yet,
with a running checksum of the journal (format and validation in :mod:`retrieval.study.payload`).
:meth:`DrawingSession.apply` checks that the batch's history is what this session applied, logs
each new event exactly once, and ranks the latest state once per request, so events coalesced by
the UI (two quick strokes during one slow ranking) are each logged, and no request can cost more
than one ranking. The per-stroke ranking is an injected callable, normally
``retrieval.serving.retriever.Retriever.rank``.

Write-ahead, in a study: a request's events are durable in the log before the ranker runs (a
ranker that fails loses no stroke); the ranking follows as its own ``rank`` record. A state
change (start, trial end, next trial) happens only once its record is durable: a failed write
(``OSError``) leaves the session as it was, and the same call can be made again. Give up and
Next name the trial they act on (its token), so a repeated request changes nothing.

Study phases: ``consent`` -> per trial ``drawing`` -> ``found`` | ``not_found`` | ``gave_up`` |
``timed_out`` -> ... -> ``done``. Each trial follows its condition (:mod:`retrieval.study.trials`):
strokes are logged and ranked in every feedback mode; the ranking is shown (``SketchState.shown``)
and may end the trial as found only under ``every_stroke``; the ``rank`` record says whether it was shown.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrieval.data.sketch import Sketch
from retrieval.study.log import StudyLog, utc_now
from retrieval.study.payload import MAX_EVENTS, MAX_POINTS, CanvasEvent, StrokeBatch, apply_event, strokes_to_sketch
from retrieval.study.plan import StudyConfig, TrialPlan
from retrieval.study.sketch_state import (  # noqa: F401 - the errors and limits are part of this module's API
    MAX_CURVE,
    QuotaError,
    RankPoint,
    SketchState,
    SyncError,
    TrialClosedError,
)
from retrieval.study.trials import (  # noqa: F401 - as above
    END_PHASES,
    ENDED_GRACE_S,
    SESSION_LOG_QUOTA_BYTES,
    TRIAL_LOG_QUOTA_BYTES,
    StudyTrials,
    TrialNotEndedError,
)


class RankingError(RuntimeError):
    """The ranker failed; the request's events were logged before it ran."""


RankFn = Callable[[Sketch, "str | None"], Any]  # (sketch, target_id) -> RankResult-like


@dataclass
class DrawingSession(StudyTrials):
    """Per-tab state: the current sketch, the trials that just ended, and the study (its trial
    state machine: :class:`~retrieval.study.trials.StudyTrials`).

    Every method that changes the session holds ``lock`` (re-entrant), so the events of one
    session apply in order, exactly once, whichever request (stroke, Give up, Next) runs them
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
    resume_code: str | None = None  # shown to the participant; the log holds only its hash
    model_fields: dict[str, dict] = field(default_factory=dict)  # condition model key -> its hash, snapshot
    log_bytes: int = 0  # bytes of the session's log file, checked against SESSION_LOG_QUOTA_BYTES
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, lock=threading.RLock())

    # --- the current sketch, as the UI reads it -------------------------------------------------
    token = property(lambda self: self.sketch.token)
    target_id = property(lambda self: self.sketch.target_id)
    last = property(lambda self: self.sketch.last)
    shown = property(lambda self: self.sketch.shown)  # what the page may show: the answers are built from it
    last_server_ms = property(lambda self: self.sketch.last_server_ms)
    strokes_drawn = property(lambda self: self.sketch.strokes_drawn)
    curve = property(lambda self: self.sketch.curve)

    @property
    def shown_curve(self) -> list[RankPoint]:
        """The rank-curve points the participant has been shown."""
        return self.sketch.curve[: self.sketch.shown_curve]

    @property
    def phase(self) -> str:
        """``consent`` and ``done`` around a study, else the current sketch's phase."""
        return self.status if self.mode == "study" and self.status != "running" else self.sketch.phase

    def acknowledged(self, token: str) -> tuple[int, str] | None:
        """What the session applied of the sketch ``token`` names: its last ``seq`` and chain."""
        sketch = next((s for s in (self.sketch, *self.ended) if s.token == token), None)
        return (sketch.seen_seq, sketch.chain) if sketch is not None else None

    def check_history(self, token: str, base: int, chain: str, chains: tuple[str, ...]) -> None:
        """Raise :class:`SyncError` when a batch for ``token`` does not continue what was applied
        (checked again by :meth:`apply`; here it lets a replay be refused before its events are parsed).
        An unknown token passes: :meth:`apply` says why it is refused."""
        with self.lock:
            sketch = next((s for s in (self.sketch, *self.ended) if s.token == token), None)
            if sketch is not None:
                sketch.check_history(base, chain, chains)

    def owns(self, token: str) -> bool:
        """Whether ``token`` is this session's current sketch or one of its recently ended trials."""
        return any(token == sketch.token for sketch in (self.sketch, *self.ended))

    def new_sketch(self, target_id: str | None = None) -> None:
        """Forget the sketch (new canvas token) and set the target, keeping the study progress."""
        with self.lock:
            self.sketch = SketchState(target_id=target_id)

    # --- per request ----------------------------------------------------------------------------
    def apply(self, batch: StrokeBatch, rank: RankFn) -> bool:
        """Take a stroke batch: check it continues what was applied, log each new event once,
        then rank the latest state once.

        Returns True when the current sketch changed (the UI should re-render). Cost is bounded
        per request whatever the batch: one ``rank`` call, one record per new event, at most
        ``MAX_NEW_EVENTS`` new events. A batch of a trial that ended less than
        :data:`ENDED_GRACE_S` ago (a stroke racing Give up, the clock or Next) is logged under that
        trial, with its ``phase``, and not ranked. Events the session already applied (a batch
        re-sent after its answer was lost) are recognised by their chain and skipped.

        Raises:
            SyncError: the batch skips events, or its history differs from what was applied.
            TrialClosedError: the trial is unknown, or ended longer ago than the grace window.
            QuotaError: the trial's events, points or log bytes would pass their limit.
            OSError: the log refused the write: nothing was applied (the canvas sends the events again).
            RankingError: the ranker failed; the events are logged and applied.
        """
        received_mono, received_utc = time.monotonic(), utc_now()
        with self.lock:
            sketch = self._sketch_for(batch.trial)
            new = sketch.unseen(batch)
            if sketch is self.sketch and self.mode == "study":
                self.check_time()  # a stroke that arrives after the limit does not count as found
            if not new:
                return False
            if sketch.ended_mono is not None and received_mono - sketch.ended_mono > ENDED_GRACE_S:
                raise TrialClosedError("this trial has ended: its canvas takes no more strokes")
            strokes, drawn, points = list(sketch.strokes), sketch.strokes_drawn, sketch.points_logged
            applied = []  # (event, strokes on canvas after it, stroke index)
            for event in new:
                apply_event(strokes, event)
                drawn += event.type == "stroke"
                points += len(event.points) if event.points is not None else 0
                applied.append((event, len(strokes), drawn - 1))
            self._check_limits(new[-1].seq, points, strokes)
            to_rank = sketch is self.sketch and sketch.phase == "drawing" and bool(strokes)
            received = {"server_received_utc": received_utc, "server_received_s": received_mono - sketch.start_mono}
            self._log_events(sketch, batch, applied, to_rank, received)
            # Durable (or no study): apply. A failed write raised above, and the canvas re-sends.
            sketch.strokes, sketch.strokes_drawn, sketch.points_logged = strokes, drawn, points
            sketch.acknowledge(batch, len(new))
            if sketch is not self.sketch or sketch.phase != "drawing":
                return False
            if not strokes:
                sketch.last = None
                if self._shows_every_stroke():
                    sketch.shown = None
                return True
            self._rank(sketch, batch, new[-1], rank)
            condition = self.condition
            if condition is not None and condition.feedback == "every_stroke" and new[-1].type == "stroke":
                if sketch.target_found(condition.found_k):
                    self.end_trial("found")
            return True

    def _log_events(
        self, sketch: SketchState, batch: StrokeBatch, applied: list, to_rank: bool, received: dict
    ) -> None:
        """Write the records of applied ``(event, strokes on canvas, stroke index)``; the last is
        marked ``ranked`` when a ranking will follow."""
        received = {**received, "server_received_s": round(received["server_received_s"], 4)}
        last = applied[-1][0]
        records = [
            sketch.event_record(batch, event, on_canvas, index, to_rank and event is last, received)
            for event, on_canvas, index in applied
        ]
        self._log(sketch, *records)

    def _sketch_for(self, token: str) -> SketchState:
        for sketch in (self.sketch, *reversed(self.ended)):
            if token == sketch.token:
                return sketch
        raise TrialClosedError("this canvas belongs to a trial that is over: reload the page")

    def _check_limits(self, last_seq: int, points: int, strokes: list[np.ndarray]) -> None:
        if self.mode == "study":
            if last_seq > MAX_EVENTS:
                raise QuotaError(f"a trial holds at most {MAX_EVENTS} events (strokes, undos, clears)")
            if points > MAX_POINTS:
                raise QuotaError(f"a trial holds at most {MAX_POINTS} points: drawing limit reached for this trial")
        elif sum(len(s) for s in strokes) > MAX_POINTS:
            raise QuotaError(f"a canvas holds at most {MAX_POINTS} points: clear it to go on")

    def _rank(self, sketch: SketchState, batch: StrokeBatch, event: CanvasEvent, rank: RankFn) -> None:
        """Rank the sketch's strokes; in a study the ranking is logged as a ``rank`` record."""
        strokes = sketch.strokes
        start = time.perf_counter()
        try:
            result = rank(strokes_to_sketch(strokes, batch.width, batch.height), sketch.target_id)
        except Exception as exc:  # any ranker (in process, or a cluster that is down): the strokes are safe
            self._log(sketch, {"type": "rank", "seq": event.seq, "trial_token": sketch.token, "error": repr(exc)[:200]})
            raise RankingError(f"ranking failed ({type(exc).__name__}); the strokes are saved") from exc
        ranking = sketch.record_ranking(result, (time.perf_counter() - start) * 1000.0)
        shown = self._shows_every_stroke()
        record = {"type": "rank", "seq": event.seq, "trial_token": sketch.token, "phase": sketch.phase}
        self._log(sketch, {**record, "strokes_on_canvas": len(strokes), **ranking, "shown": shown})
        if shown:
            sketch.show_latest()

    def _shows_every_stroke(self) -> bool:
        """Whether each ranking is shown as it arrives (free drawing, or an ``every_stroke`` trial)."""
        condition = self.condition
        return condition is None or condition.feedback == "every_stroke"
