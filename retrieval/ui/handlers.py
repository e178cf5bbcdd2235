"""What each UI event does, without Gradio: handlers take the tab's ``DrawingSession`` and return
an :class:`Update` (the views to show, which buttons and sections are visible). retrieval/ui/blocks.py
binds them to the page's components; the tests call them directly.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from retrieval.data.formats.stroke_json import StrokePayloadError, parse_stroke_json
from retrieval.study.log import SessionExistsError, StudyLog
from retrieval.study.plan import StudyConfig
from retrieval.study.session import DrawingSession
from retrieval.ui.backend import Backend
from retrieval.ui.config import AppConfig
from retrieval.ui.contract import BannerKind, CanvasValue, PanelValue, ResultsValue
from retrieval.ui.views import canvas_value, found_banner, panel_view, results_view, shown_ids


class UserError(Exception):
    """A message for the person using the page (shown as an error dialog; the event changes nothing)."""


@dataclass
class Update:
    """What one event changes on the page; ``None`` leaves that part as it is."""

    results: ResultsValue | None = None
    panel: PanelValue | None = None
    canvas: CanvasValue | None = None
    trial_ended: bool | None = None  # True: offer Next trial (Give up hidden); False: the reverse
    section: Literal["workspace", "done"] | None = None  # the part of a study shown instead of the last
    warning: str = ""  # a passing notice (the event still counts)


def default_session_id() -> str:
    """Date, time and 16 random bits: two participants starting in the same second still differ."""
    return datetime.now().strftime("S%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def random_photo(ids: tuple[str, ...]) -> str:
    return ids[int.from_bytes(os.urandom(4), "little") % len(ids)]


class Handlers:
    """The app's events for one configuration and backend (``study``: the study config in study mode)."""

    def __init__(self, config: AppConfig, backend: Backend, study: StudyConfig | None = None) -> None:
        self.config, self.backend, self.study = config, backend, study
        self.study_mode = config.mode == "study"
        self.k = study.show_k if study else config.k
        self.found_k = study.found_k if study else 1
        self.pick_target: Callable[[], str] = lambda: random_photo(backend.ids)

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
        self.backend.prepare_thumbnails(shown_ids(session, self.k))
        update = Update(results_view(self.backend, session, self.k), panel_view(self.backend, session, banner, kind))
        if fresh_canvas or locked:
            update.canvas = canvas_value(session, locked, message)
        return update

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
            banner = "Time is up." if session.phase == "timed_out" else "Trial skipped."
            update = self.view(session, banner, "miss", locked=True, message=banner + " Press Next trial")
        update.trial_ended = True
        return update

    def stroke(self, value: Any, session: DrawingSession) -> Update:
        with session.lock:  # one ordered event stream per session, whatever the concurrency groups
            phase = session.phase
            try:
                changed = session.update(value, self._rank_for_session)
            except ValueError as exc:  # a malformed or oversized canvas payload: report it, keep serving
                return Update(warning=f"Could not read the drawing: {exc}")
            except OSError as exc:  # the study log refused a write (disk full): say so, keep the session
                print(f"error: study log write failed: {exc}", flush=True)
                return Update(warning="Could not save this stroke to the study log: please tell the experimenter.")
            if self.study_mode and session.phase != phase:
                return self.trial_end(session)
            if not changed:
                return Update()
            last = session.last
            if not self.study_mode and session.target_id and last is not None and last.target_rank == 1:
                return self.view(session, found_banner(session.strokes_drawn), "found")
            return self.view(session)

    def _rank_for_session(self, sketch, target_id: str | None):
        return self.backend.rank(sketch, target_id, max(self.k, self.found_k))

    def start(self, participant: str, session_id: str, resume: bool, session: DrawingSession) -> Update:
        """Consent given: open the study log and begin the first trial."""
        backend, log_dir = self.backend, self.config.log_dir
        common = {"mode": "study", "code_version": backend.code_version, "model_hash": backend.model_hash}
        common["snapshot"] = backend.snapshot  # encoder + gallery content hash (retrieval/serving/versions.py)
        try:
            log = StudyLog.create(log_dir, participant, session_id, common, resume=bool(resume))
        except SessionExistsError as exc:
            raise UserError(f"{exc} (tick 'Continue this session' to append to it).") from exc
        except ValueError as exc:
            raise UserError(f"Please check the participant id and the session id: {exc}.") from exc
        except OSError as exc:  # the path is for the operator's console, not the participant's page
            print(f"error: cannot create the study log in {log_dir}: {exc}", flush=True)
            raise UserError("The study log cannot be written on the server: please tell the experimenter.") from exc
        gallery = {"gallery": backend.gallery.source, "gallery_size": len(backend.ids)}
        session.begin_study(self.study, log, list(backend.ids), gallery)
        update = self.view(session, fresh_canvas=True)
        update.section = "workspace"
        return update

    def give_up(self, session: DrawingSession) -> Update:
        with session.lock:
            session.end_trial("gave_up")
            return self.trial_end(session)

    def next_trial(self, session: DrawingSession) -> Update:
        with session.lock:  # a stroke being ranked finishes (and is logged) under its own trial first
            if session.next_trial() is None:
                return Update(section="done")
            update = self.view(session, fresh_canvas=True)
            update.trial_ended = False
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
        if type(k) is not int or not 1 <= k <= 1000:
            raise UserError(f"k must be an integer between 1 and 1000, got {str(k)[:20]!r}")
        backend = self.backend
        if target_id is not None and (type(target_id) is not str or target_id not in backend.gallery.index):
            raise UserError(f"target_id {str(target_id)[:80]!r} is not a photo id of the gallery")
        result = backend.rank(parsed, target_id, k)
        answer = {
            "ids": list(result.ids),
            "scores": [float(s) for s in result.scores],
            "target_rank": result.target_rank,
            "gallery_size": len(backend.ids),
            "timings_ms": {n: v for n, v in result.timings_ms.items() if n != "queue"},
        }
        if self.config.api_diagnostics:  # other sessions' activity: only when the operator asks for it
            answer.update(batch_size=result.batch_size, timings_ms=dict(result.timings_ms))
        return answer
