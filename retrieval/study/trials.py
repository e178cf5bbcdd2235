"""The user study's trial state machine: start, resume, give up, Search, Done, time limit, next trial.

Every change is written to the log first and applied only once that write is durable: a failed
write (``OSError``) leaves the session as it was, and the same call can be made again. Give up
and Next name the trial they act on (its canvas token), so a repeated request changes nothing.
The log's size is bounded per trial and per session (:data:`TRIAL_LOG_QUOTA_BYTES`,
:data:`SESSION_LOG_QUOTA_BYTES`). :class:`retrieval.ui.drawing_session.DrawingSession` holds the state
these methods use (its fields are documented there).

Each trial follows its condition (:mod:`retrieval.study.conditions`): every stroke is logged and
ranked, but what the participant is shown (``SketchState.shown``) and when the trial can end as
found depend on the condition's ``feedback``: after every stroke, at :meth:`StudyTrials.search`
(``on_request``), or at :meth:`StudyTrials.submit` (``after_trial``). Every record of a trial names
its condition, its place in the counterbalanced order and the hash of the model that ranks it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from retrieval.study.conditions import Condition
from retrieval.study.log import StudyLog
from retrieval.study.plan import StudyConfig, TrialPlan, plan_trials
from retrieval.study.resume import ResumePoint, code_record
from retrieval.study.sketch_state import QuotaError, SketchState

if TYPE_CHECKING:
    import threading

END_PHASES = ("found", "not_found", "gave_up", "timed_out")
ENDED_TRIALS_KEPT = 2  # ended trials whose late strokes are still logged under them...
ENDED_GRACE_S = 5.0
"""... for this long after they ended: a stroke drawn before Give up, the clock or Next reaches the
server within a second or two; past this a trial is closed and refuses events."""
TRIAL_LOG_QUOTA_BYTES = 8_000_000
"""Log bytes one trial may write. The largest honest trial (the canvas's 40,000 points, 2,000
events each with its ranking) writes about 3 MB."""
SESSION_LOG_QUOTA_BYTES = 64_000_000  # log bytes one session file may hold (resumes included)


class TrialNotEndedError(RuntimeError):
    """Next was asked while the trial is still being drawn."""


class StudyTrials:
    """The study part of a drawing session (a base of :class:`~retrieval.ui.drawing_session.DrawingSession`)."""

    lock: threading.RLock
    sketch: SketchState
    ended: list[SketchState]
    config: StudyConfig | None
    log: StudyLog | None
    plan: list[TrialPlan]
    trial: int
    status: str
    mode: str
    resume_code: str | None
    log_bytes: int
    model_fields: dict[str, dict]

    @property
    def current(self) -> TrialPlan | None:
        return self.plan[self.trial] if 0 <= self.trial < len(self.plan) else None

    @property
    def condition(self) -> Condition | None:
        """The current study trial's condition (None outside a study and after it)."""
        return self.sketch.plan.condition if self.sketch.plan is not None else None

    def begin_study(
        self,
        config: StudyConfig,
        log: StudyLog,
        gallery_ids: list[str],
        extra: dict,
        code: str,
        model_fields: dict[str, dict] | None = None,
    ) -> None:
        """Plan the session's trials; write ``session_start`` (with the hash of the resume ``code``)
        and the first ``trial_start`` in one durable write, then start the first trial.

        ``extra``: fields for ``session_start``, e.g. the gallery size. ``model_fields`` maps each
        condition's ``model`` key to the fields of the model that ranks it (``model_hash``,
        ``snapshot``; "" = the app's model): every record of its trials carries them.

        Raises:
            OSError: the log refused the write; the session is unchanged.
        """
        with self.lock:
            plan = plan_trials(config, gallery_ids, log.participant)
            start = {
                "type": "session_start",
                "study": config.name,
                "config": config.as_record(),
                "resume_code": code_record(code),
                **extra,
            }
            self.model_fields = dict(model_fields or {})
            self._start_study(config, log, plan, [start], 0, resumed=False)
            self.resume_code = code

    def resume_study(
        self,
        config: StudyConfig,
        log: StudyLog,
        gallery_ids: list[str],
        where: ResumePoint,
        model_fields: dict[str, dict] | None = None,
    ) -> None:
        """Go on with a session at its first trial without a ``trial_end`` (``session_resume``, then
        that trial's ``trial_start``, in one durable write); a session with every trial ended is done.

        Raises:
            OSError: the log refused the write; the session is unchanged.
        """
        with self.lock:
            plan = plan_trials(config, gallery_ids, log.participant)
            first = next((t.index for t in plan if t.index not in where.ended_trials), len(plan))
            self.log_bytes = log.size()
            self.model_fields = dict(model_fields or {})
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
        record = {
            "type": "trial_start",
            "trial_start_utc": sketch.start_utc,
            "trial_token": sketch.token,
            "settings": sketch.plan.condition.as_record(),
        }
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

    def search(self, token: str) -> bool:
        """Search pressed (``on_request``) in the trial ``token`` names: a ``search`` record, then the
        latest ranking is shown; found when the target is in the condition's top ``found_k``. True
        when it ran; False (nothing changes) for another feedback mode, an ended trial or an old token.

        Raises:
            OSError: the log refused the write; nothing is shown (try again).
        """
        with self.lock:
            sketch, condition = self.sketch, self.condition
            if not self._acts_on(token, "on_request") or self.check_time():
                return False
            rank = sketch.last.target_rank if sketch.last is not None else None
            record = {"type": "search", "search": sketch.searches + 1, "strokes_drawn": sketch.strokes_drawn}
            self._log(sketch, {**record, "target_rank": rank})
            sketch.searches += 1
            sketch.show_latest()
            if sketch.target_found(condition.found_k):
                self.end_trial("found")
            return True

    def submit(self, token: str) -> bool:
        """Done pressed (``after_trial``) in the trial ``token`` names: it ends ``found`` when the
        target ranks in the condition's top ``found_k``, else ``not_found``; False when nothing changed.

        Raises:
            OSError: the log refused the write; the trial goes on (try again).
        """
        with self.lock:
            if not self._acts_on(token, "after_trial") or self.check_time():
                return False
            self.end_trial("found" if self.sketch.target_found(self.condition.found_k) else "not_found")
            return True

    def _acts_on(self, token: str, feedback: str) -> bool:
        condition = self.condition
        return (
            token == self.sketch.token
            and self.sketch.phase == "drawing"
            and condition is not None
            and condition.feedback == feedback
        )

    def end_trial(self, outcome: str) -> None:
        """End the current trial as one of :data:`END_PHASES` (``trial_end`` summary, durable before
        the phase changes; an ``OSError`` leaves the trial running). Its results are then shown."""
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
                "searches": sketch.searches,
                "settings": sketch.plan.condition.as_record(),
            }
            self._write(self.log, [self._trial_record(sketch, summary)])
            sketch.phase, sketch.ended_mono = outcome, time.monotonic()
            sketch.show_latest()

    def time_limit_s(self) -> float:
        """The current trial's time limit in seconds (its condition's; 0 = none)."""
        return self.condition.time_limit_s if self.condition is not None else 0.0

    def check_time(self) -> bool:
        """End the trial as timed out when its limit passed; True if it did."""
        limit = self.time_limit_s()
        with self.lock:
            if self.sketch.phase == "drawing" and limit and self.elapsed_s() >= limit:
                self.end_trial("timed_out")
                return True
        return False

    # --- the log --------------------------------------------------------------------------------
    def _trial_record(self, sketch: SketchState, record: dict) -> dict:
        """``record`` with its trial's fields: condition, order, target and the ranking model's hash and snapshot."""
        plan, fields = sketch.plan, sketch.plan.log_fields()
        return {**fields, **self.model_fields.get(plan.condition.model, {}), **record}

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
