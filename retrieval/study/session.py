"""Drawing sessions and the user-study trial state machine, independent of any UI.

The browser canvas sends its whole journal of the current trial after every change (format and
validation in :mod:`retrieval.study.payload`). :meth:`DrawingSession.update` logs each event it
has not seen exactly once and ranks the latest state once per request, so events coalesced by the
UI (two quick strokes during one slow ranking) are each logged, and no payload can cost more than
one ranking. The per-stroke ranking is an injected callable, normally
``retrieval.serving.retriever.Retriever.rank``.

Study phases: ``consent`` -> per trial ``drawing`` -> ``found`` | ``not_found`` | ``gave_up`` |
``timed_out`` -> ... -> ``done``. Each trial follows its condition (:mod:`retrieval.study.conditions`):
every stroke is ranked and logged, but what the participant is shown (``SketchState.shown``) and
when the trial can end as found depend on the condition's ``feedback``: after every stroke, at
:meth:`DrawingSession.search` (``on_request``), or at :meth:`DrawingSession.submit` (``after_trial``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrieval.data.sketch import Sketch
from retrieval.study.conditions import Condition
from retrieval.study.log import StudyLog, utc_now
from retrieval.study.payload import (
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
from retrieval.study.sketch_state import RankPoint, SketchState, event_record

END_PHASES = ("found", "not_found", "gave_up", "timed_out")
MAX_NEW_EVENTS = 60
"""Unseen events one request may carry. Far more than a person draws between two requests: at the
fastest human pace (pen-up to pen-down p10 155 ms, ../shared/data/quickdraw-raw) 60 events take
about 10 s, and the canvas sends after every one of them."""
MAX_CURVE = 200  # rank-curve points kept and sent to the browser per sketch
ENDED_TRIALS_KEPT = 2  # ended trials whose late strokes are still logged under them


# --- drawing sessions ------------------------------------------------------------------------------
RankFn = Callable[[Sketch, "str | None"], Any]  # (sketch, target_id) -> RankResult-like


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
    model_hashes: dict[str, str] = field(default_factory=dict)  # condition model key -> hash ("" = the app's)
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
    shown = property(lambda self: self.sketch.shown)
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

    @property
    def condition(self) -> Condition | None:
        """The current study trial's condition (None outside a study and between trials)."""
        return self.sketch.plan.condition if self.sketch.plan is not None else None

    @property
    def shown_curve(self) -> list[RankPoint]:
        """The rank-curve points the participant has been shown."""
        return self.sketch.curve[: self.sketch.shown_curve]

    # --- trials ---------------------------------------------------------------------------------
    def new_sketch(self, target_id: str | None = None) -> None:
        """Forget the sketch (new canvas token) and set the target, keeping the study progress."""
        with self.lock:
            self.sketch = SketchState(target_id=target_id)

    def begin_study(
        self,
        config: StudyConfig,
        log: StudyLog,
        gallery_ids: list[str],
        extra: dict,
        model_hashes: dict[str, str] | None = None,
    ) -> None:
        """Plan the session's trials and write ``session_start`` (``extra``: e.g. gallery size).

        ``model_hashes`` maps each condition's ``model`` key to the hash of the model that ranks
        it ("" = the app's model); every record of a trial names its hash.

        Raises:
            ValueError: the plan cannot be made for this participant (nothing is logged).
        """
        with self.lock:
            plan = plan_trials(config, gallery_ids, log.participant)
            self.mode, self.config, self.log, self.plan = "study", config, log, plan
            self.model_hashes = dict(model_hashes or {})
            log.append({"type": "session_start", "study": config.name, "config": config.as_record(), **extra})
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
            start = {"type": "trial_start", "trial_start_utc": self.sketch.start_utc, "trial_token": self.sketch.token}
            self._log(self.sketch, {**start, "settings": plan.condition.as_record()})
            return plan

    def elapsed_s(self) -> float:
        return time.monotonic() - self.sketch.start_mono

    def end_trial(self, outcome: str) -> None:
        """End the current trial as one of :data:`END_PHASES` (``trial_end`` summary); results are shown."""
        with self.lock:
            sketch = self.sketch
            if sketch.phase != "drawing" or sketch.plan is None:
                return
            sketch.phase = outcome
            sketch.shown, sketch.shown_curve = sketch.last, len(sketch.curve)
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
                    "searches": sketch.searches,
                    "settings": sketch.plan.condition.as_record(),
                },
            )

    def time_limit_s(self) -> float:
        """The current trial's time limit in seconds (0 = none)."""
        return self.condition.time_limit_s if self.condition is not None else 0.0

    def search(self) -> None:
        """``on_request``: show the latest ranking (``search`` record); found if the target is in the top ``found_k``."""
        with self.lock:
            sketch, condition = self.sketch, self.condition
            if condition is None or sketch.phase != "drawing" or self.check_time():
                return
            sketch.searches += 1
            sketch.shown, sketch.shown_curve = sketch.last, len(sketch.curve)
            rank = sketch.last.target_rank if sketch.last is not None else None
            self._log(sketch, {"type": "search", "strokes_drawn": sketch.strokes_drawn, "target_rank": rank})
            if rank is not None and rank <= condition.found_k:
                self.end_trial("found")

    def submit(self) -> None:
        """``after_trial``: the participant is done drawing; found if the target ranks in the top ``found_k``."""
        with self.lock:
            sketch, condition = self.sketch, self.condition
            if condition is None or sketch.phase != "drawing" or self.check_time():
                return
            rank = sketch.last.target_rank if sketch.last is not None else None
            self.end_trial("found" if rank is not None and rank <= condition.found_k else "not_found")

    def check_time(self) -> bool:
        """End the trial as timed out when its limit passed; True if it did."""
        limit = self.time_limit_s()
        with self.lock:
            if self.sketch.phase == "drawing" and limit and self.elapsed_s() >= limit:
                self.end_trial("timed_out")
                return True
        return False

    def _log(self, sketch: SketchState, *records: dict) -> None:
        """Write records of ``sketch``'s trial (one write and one fsync for all of them)."""
        plan = sketch.plan
        if self.log is not None and plan is not None and records:
            trial = plan.log_fields()
            if plan.condition.model in self.model_hashes:
                trial["model_hash"] = self.model_hashes[plan.condition.model]  # the model that ranked this trial
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
                        event_record(sketch, journal, event, on_canvas, stroke_index, event is new[-1], received)
                        for event, on_canvas, stroke_index in applied
                    ),
                )
            # Only once the records are on disk: if the write failed, the resent journal logs them again.
            sketch.seen_seq, sketch.strokes_drawn = new[-1].seq, drawn
            if self.mode == "study" and sketch.plan.condition.feedback == "every_stroke":
                last, found_k = sketch.last, sketch.plan.condition.found_k
                if new[-1].type == "stroke" and last is not None and last.target_rank is not None:
                    if sketch is self.sketch and last.target_rank <= found_k:
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
        shows_every_stroke = sketch.plan is None or sketch.plan.condition.feedback == "every_stroke"
        if not strokes:
            sketch.last = None
            sketch.shown = None if shows_every_stroke else sketch.shown
            return
        start = time.perf_counter()
        sketch.last = result = rank(strokes_to_sketch(strokes, journal.width, journal.height), sketch.target_id)
        sketch.last_server_ms = server_ms = (time.perf_counter() - start) * 1000.0
        top1 = float(result.scores[0]) if len(result.scores) else float("nan")
        sketch.curve.append(RankPoint(len(strokes), result.target_rank, top1, server_ms))
        trimmed = max(0, len(sketch.curve) - MAX_CURVE)
        del sketch.curve[:trimmed]
        sketch.shown_curve = max(0, sketch.shown_curve - trimmed)
        if shows_every_stroke or sketch.phase != "drawing":
            sketch.shown, sketch.shown_curve = result, len(sketch.curve)
        sketch.final_rank = result.target_rank
        if result.target_rank is not None:
            sketch.best_rank = min(result.target_rank, sketch.best_rank or result.target_rank)
