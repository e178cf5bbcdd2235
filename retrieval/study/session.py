"""Drawing sessions and the user-study trial state machine, independent of any UI.

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
from retrieval.study.log import RANKING_FIELDS, StudyLog, utc_now
from retrieval.study.payload import (
    CHAIN_START,
    MAX_EVENTS,
    MAX_NEW_EVENTS,
    MAX_POINTS,
    CanvasEvent,
    CanvasPayloadError,
    StrokeBatch,
    apply_event,
    strokes_to_sketch,
)
from retrieval.study.plan import StudyConfig, TrialPlan, plan_trials
from retrieval.study.resume import ResumePoint, code_record

END_PHASES = ("found", "gave_up", "timed_out")
MAX_CURVE = 200  # rank-curve points kept and sent to the browser per sketch
ENDED_TRIALS_KEPT = 2  # ended trials whose late strokes are still logged under them...
ENDED_GRACE_S = 5.0
"""... for this long after they ended: a stroke drawn before Give up, the clock or Next reaches the
server within a second or two; past this a trial is closed and refuses events."""
CHAIN_WINDOW = MAX_NEW_EVENTS + 4  # applied events whose chain is kept, to recognise a re-sent batch
TRIAL_LOG_QUOTA_BYTES = 8_000_000
"""Log bytes one trial may write. The largest honest trial (the canvas's 40,000 points, 2,000
events each with its ranking) writes about 3 MB."""
SESSION_LOG_QUOTA_BYTES = 64_000_000  # log bytes one session file may hold (resumes included)


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


class RankingError(RuntimeError):
    """The ranker failed; the request's events were logged before it ran."""


class TrialNotEndedError(RuntimeError):
    """Next was asked while the trial is still being drawn."""


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
    """One canvas token's sketch: what was applied, its ranking and (in studies) its trial."""

    token: str = field(default_factory=lambda: secrets.token_hex(16))
    target_id: str | None = None
    plan: TrialPlan | None = None
    phase: str = "drawing"  # drawing | found | gave_up | timed_out (| done after a study)
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
    last_server_ms: float = 0.0
    start_mono: float = field(default_factory=time.monotonic)
    start_utc: str = field(default_factory=utc_now)
    ended_mono: float | None = None

    @property
    def chain(self) -> str:
        return self.chains[self.seen_seq]


@dataclass
class DrawingSession:
    """Per-tab state: the current sketch, the trials that just ended, and the study.

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

    def acknowledged(self, token: str) -> tuple[int, str] | None:
        """What the session applied of the sketch ``token`` names: its last ``seq`` and chain."""
        sketch = next((s for s in (self.sketch, *self.ended) if s.token == token), None)
        return (sketch.seen_seq, sketch.chain) if sketch is not None else None

    def owns(self, token: str) -> bool:
        """Whether ``token`` is this session's current sketch or one of its recently ended trials."""
        return any(token == sketch.token for sketch in (self.sketch, *self.ended))

    # --- trials ---------------------------------------------------------------------------------
    def new_sketch(self, target_id: str | None = None) -> None:
        """Forget the sketch (new canvas token) and set the target, keeping the study progress."""
        with self.lock:
            self.sketch = SketchState(target_id=target_id)

    def begin_study(self, config: StudyConfig, log: StudyLog, gallery_ids: list[str], extra: dict, code: str) -> None:
        """Plan the session's trials; write ``session_start`` (with the hash of the resume ``code``)
        and the first ``trial_start`` in one durable write, then start the first trial.

        ``extra``: fields for ``session_start``, e.g. the gallery size.

        Raises:
            OSError: the log refused the write; the session is unchanged.
        """
        with self.lock:
            plan = plan_trials(config, gallery_ids, log.participant)
            start = {
                "type": "session_start",
                "study": config.name,
                "config": config.__dict__,
                "resume_code": code_record(code),
                **extra,
            }
            self._start_study(config, log, plan, [start], 0, resumed=False)
            self.resume_code = code

    def resume_study(self, config: StudyConfig, log: StudyLog, gallery_ids: list[str], where: ResumePoint) -> None:
        """Go on with a session at its first trial without a ``trial_end`` (``session_resume``, then
        that trial's ``trial_start``, in one durable write); a session with every trial ended is done.

        Raises:
            OSError: the log refused the write; the session is unchanged.
        """
        with self.lock:
            plan = plan_trials(config, gallery_ids, log.participant)
            first = next((t.index for t in plan if t.index not in where.ended_trials), len(plan))
            self.log_bytes = log.size()
            resumed = {"type": "session_resume", "resume_at_trial": first}
            self._start_study(config, log, plan, [resumed], first, resumed=True, session_ended=where.session_ended)

    def _start_study(
        self,
        config: StudyConfig,
        log: StudyLog,
        plan: list[TrialPlan],
        records: list[dict],
        first: int,
        *,
        resumed: bool,
        session_ended: bool = False,
    ) -> None:
        if first < len(plan):
            sketch = SketchState(target_id=plan[first].target_id, plan=plan[first])
            records.append(self._trial_record(sketch, self._trial_start(sketch, resumed)))
        elif not session_ended:
            sketch = SketchState(phase="done")
            records.append({"type": "session_end", "trials": len(plan)})
        else:
            sketch = SketchState(phase="done")
        self._write(log, records)  # durable first: a failure leaves the session on its consent screen
        self.mode, self.config, self.log, self.plan = "study", config, log, plan
        self.trial, self.sketch = first, sketch
        self.status = "running" if first < len(plan) else "done"

    @staticmethod
    def _trial_start(sketch: SketchState, resumed: bool) -> dict:
        record = {"type": "trial_start", "trial_start_utc": sketch.start_utc, "trial_token": sketch.token}
        return {**record, "resumed": True} if resumed else record

    def advance(self, token: str) -> TrialPlan | None:
        """Next trial, asked from the trial ``token``: starts the next one (``trial_start``) or ends
        the session (``session_end``). Asked again from the same token (a double click, a retry
        after its answer was lost), it changes nothing and returns the current trial.

        The trial that ends stays reachable by its token for :data:`ENDED_GRACE_S`, so a stroke
        drawn in it that reaches the server after this call is still logged under it.

        Raises:
            TrialNotEndedError: the trial ``token`` names is still being drawn (Give up first).
            OSError: the log refused the write; the session is unchanged (try again).
        """
        with self.lock:
            if token != self.sketch.token or self.status != "running":
                return self.current
            if self.sketch.phase == "drawing":
                raise TrialNotEndedError("this trial is still running: give up first")
            plan = self.plan[self.trial + 1] if self.trial + 1 < len(self.plan) else None
            if plan is None:
                self._write(self.log, [{"type": "session_end", "trials": len(self.plan)}])
                sketch = SketchState(phase="done")
            else:
                sketch = SketchState(target_id=plan.target_id, plan=plan)
                self._write(self.log, [self._trial_record(sketch, self._trial_start(sketch, False))])
            self.ended = [*self.ended, self.sketch][-ENDED_TRIALS_KEPT:]
            self.trial += 1
            self.sketch = sketch
            if plan is None:
                self.status = "done"
            return plan

    def elapsed_s(self) -> float:
        return time.monotonic() - self.sketch.start_mono

    def give_up(self, token: str) -> bool:
        """Give up the trial ``token`` names; logged as ``timed_out`` when its time had already run
        out. True when the trial ended now; False (nothing changes) when it had already ended or
        ``token`` is not the current trial (a repeated request).

        Raises:
            OSError: the log refused the write; the trial goes on (try again).
        """
        with self.lock:
            if token != self.sketch.token or self.sketch.phase != "drawing" or self.sketch.plan is None:
                return False
            if not self.check_time():
                self.end_trial("gave_up")
            return True

    def end_trial(self, outcome: str) -> None:
        """End the current trial as ``found``, ``gave_up`` or ``timed_out`` (``trial_end`` summary,
        durable before the phase changes; an ``OSError`` leaves the trial running)."""
        with self.lock:
            sketch = self.sketch
            if sketch.phase != "drawing" or sketch.plan is None:
                return
            summary = {
                "type": "trial_end",
                "outcome": outcome,
                "found": outcome == "found",
                "strokes_drawn": sketch.strokes_drawn,
                "seconds": round(self.elapsed_s(), 3),
                "final_rank": sketch.final_rank,
                "best_rank": sketch.best_rank,
            }
            self._write(self.log, [self._trial_record(sketch, summary)])
            sketch.phase, sketch.ended_mono = outcome, time.monotonic()

    def check_time(self) -> bool:
        """End the trial as timed out when its limit passed; True if it did."""
        limit = self.config.time_limit_s if self.config else 0
        with self.lock:
            if self.sketch.phase == "drawing" and limit and self.elapsed_s() >= limit:
                self.end_trial("timed_out")
                return True
        return False

    # --- the log --------------------------------------------------------------------------------
    @staticmethod
    def _trial_record(sketch: SketchState, record: dict) -> dict:
        plan = sketch.plan
        return {"trial": plan.index, "condition": plan.condition, "target_id": plan.target_id, **record}

    def _write(self, log: StudyLog, records: list[dict], sketch: SketchState | None = None) -> None:
        """Write records durably (one write, one fsync), within the session's (and ``sketch``'s) quota.

        Raises:
            QuotaError: the records would take the session's or the trial's log over its quota.
            OSError: the write failed (nothing of it stays in the file).
        """
        _, lines = log.encode(records)
        if self.log_bytes + len(lines) > SESSION_LOG_QUOTA_BYTES:
            raise QuotaError(f"this session's log reached its limit of {SESSION_LOG_QUOTA_BYTES} bytes")
        if sketch is not None and sketch.log_bytes + len(lines) > TRIAL_LOG_QUOTA_BYTES:
            raise QuotaError(f"this trial's log reached its limit of {TRIAL_LOG_QUOTA_BYTES} bytes")
        log.write(lines)
        self.log_bytes += len(lines)
        if sketch is not None:
            sketch.log_bytes += len(lines)

    def _log(self, sketch: SketchState, *records: dict) -> None:
        """Write records of ``sketch``'s trial (no-op outside a study)."""
        if self.log is not None and sketch.plan is not None and records:
            self._write(self.log, [self._trial_record(sketch, r) for r in records], sketch)

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
            new = self._unseen(sketch, batch)
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
            received = {
                "server_received_utc": received_utc,
                "server_received_s": round(received_mono - sketch.start_mono, 4),
            }
            self._log(
                sketch,
                *(
                    self._event_record(sketch, batch, event, on_canvas, index, to_rank and event is new[-1], received)
                    for event, on_canvas, index in applied
                ),
            )
            # Durable (or no study): apply. A failed write raised above, and the canvas re-sends.
            sketch.strokes, sketch.strokes_drawn, sketch.points_logged = strokes, drawn, points
            self._acknowledge(sketch, batch, len(new))
            if sketch is not self.sketch or sketch.phase != "drawing":
                return False
            if not strokes:
                sketch.last = None
                return True
            self._rank(sketch, batch, new[-1], rank)
            last = sketch.last
            if self.mode == "study" and new[-1].type == "stroke" and last.target_rank is not None:
                if last.target_rank <= self.config.found_k:
                    self.end_trial("found")
            return True

    def _sketch_for(self, token: str) -> SketchState:
        for sketch in (self.sketch, *reversed(self.ended)):
            if token == sketch.token:
                return sketch
        raise TrialClosedError("this canvas belongs to a trial that is over: reload the page")

    @staticmethod
    def _unseen(sketch: SketchState, batch: StrokeBatch) -> list[CanvasEvent]:
        """The batch's events after ``seen_seq``, once its history is checked against the session's."""
        applied = sketch.seen_seq
        if batch.base > applied:
            raise SyncError(f"events after {applied} are missing: send from there", applied, sketch.chain)
        for seq, chain in [(batch.base, batch.chain), *zip(range(batch.base + 1, applied + 1), batch.chains)]:
            known = sketch.chains.get(seq)
            if known is None:
                raise SyncError(f"seq {seq} is too old to check: send from {applied}", applied, sketch.chain)
            if known != chain:
                raise SyncError(
                    f"the journal differs from what the server applied at seq {seq}: events cannot be changed "
                    "once sent",
                    applied,
                    sketch.chain,
                )
        return [e for e in batch.events if e.seq > applied]

    def _check_limits(self, last_seq: int, points: int, strokes: list[np.ndarray]) -> None:
        if self.mode == "study":
            if last_seq > MAX_EVENTS:
                raise QuotaError(f"a trial holds at most {MAX_EVENTS} events (strokes, undos, clears)")
            if points > MAX_POINTS:
                raise QuotaError(f"a trial holds at most {MAX_POINTS} points: drawing limit reached for this trial")
        elif sum(len(s) for s in strokes) > MAX_POINTS:
            raise QuotaError(f"a canvas holds at most {MAX_POINTS} points: clear it to go on")

    @staticmethod
    def _acknowledge(sketch: SketchState, batch: StrokeBatch, count: int) -> None:
        for event, chain in zip(batch.events[-count:], batch.chains[-count:], strict=True):
            sketch.chains[event.seq] = chain
        sketch.seen_seq = batch.events[-1].seq
        for seq in [s for s in sketch.chains if s <= sketch.seen_seq - CHAIN_WINDOW]:
            del sketch.chains[seq]

    def _rank(self, sketch: SketchState, batch: StrokeBatch, event: CanvasEvent, rank: RankFn) -> None:
        """Rank the sketch's strokes; in a study the ranking is logged as a ``rank`` record."""
        strokes = sketch.strokes
        start = time.perf_counter()
        try:
            result = rank(strokes_to_sketch(strokes, batch.width, batch.height), sketch.target_id)
        except Exception as exc:  # any ranker (in process, or a cluster that is down): the strokes are safe
            self._log(sketch, {"type": "rank", "seq": event.seq, "trial_token": sketch.token, "error": repr(exc)[:200]})
            raise RankingError(f"ranking failed ({type(exc).__name__}); the strokes are saved") from exc
        sketch.last, sketch.last_server_ms = result, (time.perf_counter() - start) * 1000.0
        top1 = float(result.scores[0]) if len(result.scores) else float("nan")
        sketch.curve.append(RankPoint(len(strokes), result.target_rank, top1, sketch.last_server_ms))
        del sketch.curve[:-MAX_CURVE]
        sketch.final_rank = result.target_rank
        if result.target_rank is not None:
            sketch.best_rank = min(result.target_rank, sketch.best_rank or result.target_rank)
        ranking = dict(
            zip(
                RANKING_FIELDS,
                (
                    result.target_rank,
                    list(result.ids),
                    [round(float(s), 5) for s in result.scores],
                    round(sketch.last_server_ms, 2),
                    dict(result.timings_ms),
                ),
                strict=True,
            )
        )
        record = {"type": "rank", "seq": event.seq, "trial_token": sketch.token, "phase": sketch.phase}
        self._log(sketch, {**record, "strokes_on_canvas": len(strokes), **ranking})

    def _event_record(
        self,
        sketch: SketchState,
        batch: StrokeBatch,
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
            "canvas_width": batch.width,
            "canvas_height": batch.height,
            "dpr": batch.dpr,
            "client_t0_utc_ms": batch.t0_utc_ms,
            "trial_start_utc": sketch.start_utc,
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
