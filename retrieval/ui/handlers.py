"""What each UI event does, without Gradio: handlers take the tab's ``DrawingSession`` and return
an :class:`Update` (the views to show, which buttons and sections are visible). retrieval/ui/blocks.py
binds them to the page's components, retrieval/ui/stroke_route.py the stroke handler to its route;
the tests call them directly.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from retrieval.data.formats.stroke_json import StrokePayloadError, parse_stroke_json
from retrieval.serving.rank_result import check_k
from retrieval.study.log import NoSessionLogError, SessionExistsError, StudyLog, read_log
from retrieval.study.payload import CanvasPayloadError, StrokeBatch
from retrieval.study.plan import StudyConfig, plan_trials
from retrieval.study.resume import ResumeRefusedError, new_resume_code, resume_point
from retrieval.ui.backend import Backend
from retrieval.ui.config import AppConfig
from retrieval.ui.contract import BannerKind, CanvasValue, PanelValue, ResultsValue, StrokeAnswer
from retrieval.ui.drawing_session import (
    DrawingSession,
    QuotaError,
    RankingError,
    SyncError,
    TrialClosedError,
    TrialNotEndedError,
)
from retrieval.ui.guards import rank_slots
from retrieval.ui.views import canvas_value, found_banner, panel_view, results_view, shown_ids

SAVE_FAILED = "The study log could not be saved on the server: please tell the experimenter, then try again."


class UserError(Exception):
    """A message for the person using the page (shown as an error dialog; the event changes nothing)."""


@dataclass
class Update:
    """What one event changes on the page; ``None`` leaves that part as it is."""

    results: ResultsValue | None = None
    panel: PanelValue | None = None
    canvas: CanvasValue | None = None
    trial_ended: bool | None = None  # True: offer Next trial (Give up hidden); False: the reverse
    feedback: str | None = None  # a trial started: its feedback mode says whether Search or Done is offered
    section: Literal["workspace", "done"] | None = None  # the part of a study shown instead of the last
    warning: str = ""  # a passing notice (the event still counts)


def default_session_id() -> str:
    """Date, time and 16 random bits: two participants starting in the same second still differ."""
    return datetime.now().strftime("S%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def random_photo(ids: tuple[str, ...]) -> str:
    return ids[int.from_bytes(os.urandom(4), "little") % len(ids)]


def canvas_token(value: Any) -> str | None:
    """The trial token the canvas shows: its value is a ``CanvasValue`` from Python, or the JSON
    text the canvas script keeps there (``{"trial": ...}``); None when it holds neither."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if len(value) < 1_000 else None
        except ValueError:
            return None
    trial = value.get("trial") if isinstance(value, dict) else None
    return trial if isinstance(trial, str) else None


class Handlers:
    """The app's events for one configuration and backend (``study``: the study config in study mode)."""

    def __init__(self, config: AppConfig, backend: Backend, study: StudyConfig | None = None) -> None:
        self.config, self.backend, self.study = config, backend, study
        self.study_mode = config.mode == "study"
        self.k = max(c.show_k for c in study.conditions) if study else config.k  # the grid's slots on the page
        self.pick_target: Callable[[], str] = lambda: random_photo(backend.ids)
        # Strokes rank in the route's worker threads: at most this many at once (the batcher, when on,
        # needs enough callers inside to fill its batches; they wait there).
        self._rank_slots = threading.BoundedSemaphore(rank_slots(config))

    def view(
        self,
        session: DrawingSession,
        banner: str = "",
        kind: BannerKind = "",
        *,
        locked: bool = False,
        message: str = "",
        fresh_canvas: bool = False,
    ) -> Update:
        """Results and panel (the canvas too when it starts afresh or locks); thumbnails made first."""
        k = self.show_k(session)
        self.backend.prepare_thumbnails(shown_ids(session, k))
        update = Update(results_view(self.backend, session, k), panel_view(self.backend, session, banner, kind))
        if fresh_canvas or locked:
            update.canvas = canvas_value(session, locked, message)
        return update

    def show_k(self, session: DrawingSession) -> int:
        """Photos shown: the study trial's condition's ``show_k``, else the app's ``--k``."""
        return session.condition.show_k if session.condition is not None else self.k

    def load(self, session: DrawingSession) -> Update:
        """A free or demo page opened: its first sketch (a study page has no load event: Start)."""
        session.new_sketch(self.pick_target() if self.config.challenge else None)
        return self.view(session, fresh_canvas=True)

    def trial_end(self, session: DrawingSession) -> Update:
        """After a trial ended: a banner, the canvas locked, Next trial offered."""
        if session.phase == "found":
            banner = found_banner(session.strokes_drawn, session.elapsed_s())
            update = self.view(session, banner, "found", locked=True, message="Found! Press Next trial")
        else:
            misses = {"timed_out": "Time is up.", "not_found": "Not found this time.", "gave_up": "Trial skipped."}
            banner = misses[session.phase]
            update = self.view(session, banner, "miss", locked=True, message=banner + " Press Next trial")
        update.trial_ended = True
        return update

    def stroke(self, batch: StrokeBatch, session: DrawingSession) -> tuple[int, StrokeAnswer]:
        """A stroke batch from the canvas (the app's stroke route): an HTTP status and the answer.

        400: the batch is malformed; 409: it does not continue what the server applied (the answer
        says where the server is); 410: its trial is closed; 413: a limit of the trial or session was reached; 503: the study log
        refused the write (nothing applied: the canvas sends the events again). A ranker failure
        answers 200 with a warning: the strokes were logged before ranking.
        """
        with session.lock:  # one ordered event stream per session
            phase, status, update = session.phase, 200, Update()
            try:
                changed = session.apply(batch, lambda sketch, target_id: self._rank(session, sketch, target_id))
            except SyncError as exc:
                return 409, self.out_of_sync(batch.trial, exc)
            except (TrialClosedError, QuotaError) as exc:
                status, update = (413 if isinstance(exc, QuotaError) else 410), Update(warning=str(exc))
                changed = False
            except CanvasPayloadError as exc:  # malformed or oversized: report it, keep serving
                status, update = 400, Update(warning=f"Could not read the drawing: {exc}")
                changed = False
            except OSError as exc:  # the study log refused a write (disk full): nothing applied
                print(f"error: study log write failed: {exc}", flush=True)
                status, update = 503, Update(warning=SAVE_FAILED)
                changed = False
            except RankingError as exc:  # the events are logged and applied; only the ranking is missing
                print(f"error: {exc.__cause__!r}", flush=True)
                update, changed = Update(warning="Ranking failed on the server; your strokes are saved."), False
            if self.study_mode and session.phase != phase:
                update = self.trial_end(session)
            elif changed:
                update = self.stroke_view(session)
            where = session.acknowledged(batch.trial) or (batch.base, batch.chain)
            return status, self._answer(batch.trial, where, update)

    def out_of_sync(self, trial: str, exc: SyncError) -> StrokeAnswer:
        """409: the batch does not continue what the server applied; the answer says where it is."""
        return self._answer(trial, (exc.applied, exc.chain), Update(warning=str(exc)))

    def stroke_view(self, session: DrawingSession) -> Update:
        last = session.last
        if not self.study_mode and session.target_id and last is not None and last.target_rank == 1:
            return self.view(session, found_banner(session.strokes_drawn), "found")
        return self.view(session)

    @staticmethod
    def _answer(trial: str, where: tuple[int, str], update: Update) -> StrokeAnswer:
        applied, chain = where
        return {
            "trial": trial,
            "applied": applied,
            "chain": chain,
            "results": update.results,
            "panel": update.panel,
            "canvas": update.canvas,
            "trial_ended": update.trial_ended,
            "warning": update.warning,
        }

    def sync(self, session: DrawingSession) -> Update:
        """The canvas asks after a trial ended on a stroke, or when its time limit passed: the
        buttons and views for the trial's phase now (the server's clock decides)."""
        with session.lock:
            if session.mode != "study" or session.status != "running":
                return Update()
            try:
                session.check_time()
            except OSError as exc:
                print(f"error: study log write failed: {exc}", flush=True)
                return Update(warning=SAVE_FAILED)
            if session.phase != "drawing":
                return self.trial_end(session)
            update = self.view(session)
            update.trial_ended = False
            return update

    def _rank(self, session: DrawingSession, sketch, target_id: str | None):
        """Rank with the trial's model (each condition names one), enough photos for the grid and the
        found test; at most ``rank_slots`` rankings at once."""
        condition = session.condition
        with self._rank_slots:
            if condition is None:
                return self.backend.rank(sketch, target_id, self.k)
            return self.backend.rank(sketch, target_id, max(condition.show_k, condition.found_k), condition.model)

    def search(self, canvas: Any, session: DrawingSession) -> Update:
        """Search pressed (``on_request``) on the trial the canvas shows: the server shows the results
        of the strokes it applied so far; found ends the trial. A repeat for an ended trial changes nothing."""
        return self._trial_action(canvas, session, session.search)

    def submit(self, canvas: Any, session: DrawingSession) -> Update:
        """Done pressed (``after_trial``): the trial ends, found or not, and its results are shown."""
        return self._trial_action(canvas, session, session.submit)

    def _trial_action(self, canvas: Any, session: DrawingSession, action: Callable[[str], bool]) -> Update:
        with session.lock:
            try:
                action(canvas_token(canvas) or "")
            except OSError as exc:  # the study log refused a write (disk full): nothing changed
                print(f"error: study log write failed: {exc}", flush=True)
                raise UserError(SAVE_FAILED) from exc
            return self.sync(session)

    def start(self, participant: str, session_id: str, resume_code: str, session: DrawingSession) -> Update:
        """Consent given: open the study log and begin the first trial, or, with a resume code, go on
        with an earlier session at its first unfinished trial. Pressed again on a page whose study
        runs (a double click, a retry), it shows that study and changes nothing."""
        participant, session_id, resume_code = (str(v or "") for v in (participant, session_id, resume_code))
        with session.lock:
            if session.status != "consent":
                log = session.log
                if (participant.strip(), session_id.strip()) != (log.participant, log.session):
                    raise UserError("This page already runs a study session: reload the page to start another.")
                return self._study_view(session)
            log, records = self._open_log(participant, session_id, resume_code)
            backend = self.backend
            try:
                if records is None:
                    gallery = {"gallery": backend.photos.name, "gallery_size": len(backend.ids)}
                    session.begin_study(
                        self.study, log, list(backend.ids), gallery, new_resume_code(), backend.model_fields()
                    )
                else:
                    where = resume_point(records, resume_code)
                    session.resume_study(self.study, log, list(backend.ids), where, backend.model_fields())
                    session.resume_code = resume_code.strip().upper()
            except ResumeRefusedError as exc:
                raise UserError(f"Cannot resume: {exc}.") from exc
            except OSError as exc:
                print(f"error: cannot write the study log {log.path}: {exc}", flush=True)
                if records is None:
                    log.discard_if_empty()  # a new session that never started leaves no file
                raise UserError(SAVE_FAILED) from exc
            return self._study_view(session)

    def _open_log(self, participant: str, session_id: str, resume_code: str) -> tuple[StudyLog, list[dict] | None]:
        """The session's log: a new file, or (with a resume code) the existing one and its records."""
        backend, log_dir = self.backend, self.config.log_dir
        common = {"mode": "study", "code_version": backend.code_version, "model_hash": backend.model_hash}
        common["snapshot"] = backend.snapshot  # encoder + gallery content hash (retrieval/serving/versions.py)
        resume = bool(resume_code.strip())
        try:
            plan_trials(self.study, list(backend.ids), participant.strip())  # refused before any file is made
        except ValueError as exc:
            raise UserError(f"Please check the participant id: {exc}.") from exc
        try:
            log = StudyLog.create(log_dir, participant, session_id, common, resume=resume)
            return log, (read_log(log.path) if resume else None)
        except SessionExistsError as exc:
            raise UserError(f"{exc} (enter the session's resume code to continue it).") from exc
        except NoSessionLogError as exc:
            raise UserError(f"{exc}.") from exc
        except ValueError as exc:
            raise UserError(f"Please check the participant id and the session id: {exc}.") from exc
        except OSError as exc:  # the path is for the operator's console, not the participant's page
            print(f"error: cannot open the study log in {log_dir}: {exc}", flush=True)
            raise UserError("The study log cannot be written on the server: please tell the experimenter.") from exc

    def _study_view(self, session: DrawingSession) -> Update:
        if session.status == "done":
            return Update(section="done")
        if session.phase != "drawing":
            update = self.trial_end(session)  # the canvas locked on this trial's token
        else:
            update = self.view(session, fresh_canvas=True)
            update.trial_ended = False
        update.section = "workspace"
        update.feedback = session.condition.feedback if session.condition is not None else None
        return update

    def give_up(self, canvas: Any, session: DrawingSession) -> Update:
        """Give up the trial the canvas shows (a repeat, or one for an older trial, changes nothing)."""
        with session.lock:
            try:
                session.give_up(canvas_token(canvas) or "")
            except OSError as exc:
                print(f"error: study log write failed: {exc}", flush=True)
                raise UserError(SAVE_FAILED) from exc
            return self.sync(session)

    def next_trial(self, canvas: Any, session: DrawingSession) -> Update:
        """Next trial, from the trial the canvas shows (a repeat changes nothing)."""
        with session.lock:  # a stroke being ranked finishes (and is logged) under its own trial first
            try:
                session.advance(canvas_token(canvas) or "")
            except TrialNotEndedError as exc:
                raise UserError(f"{exc}.") from exc
            except OSError as exc:
                print(f"error: study log write failed: {exc}", flush=True)
                raise UserError(SAVE_FAILED) from exc
            if session.status == "done":
                return Update(section="done")
            update = self._study_view(session)
            update.section = None
            return update

    def new_target(self, enabled: bool, session: DrawingSession) -> Update:
        session.new_sketch(self.pick_target() if enabled else None)
        return self.view(session, fresh_canvas=True)

    def rank(self, sketch: str, k: int = 10, target_id: str | None = None) -> dict:
        """The public ``rank`` endpoint: validate the request, rank, answer in plain JSON types."""
        try:
            parsed = parse_stroke_json(sketch)
        except (StrokePayloadError, ValueError, TypeError) as exc:
            raise UserError(f"Invalid sketch: {exc}") from exc
        try:
            check_k(k)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        backend = self.backend
        if target_id is not None and (type(target_id) is not str or target_id not in backend.photos):
            raise UserError(f"target_id {str(target_id)[:80]!r} is not a photo id of the gallery")
        # other sessions' activity (batch size, queue wait): only when the operator asks for it
        return backend.rank(parsed, target_id, k).to_json(diagnostics=self.config.api_diagnostics)
