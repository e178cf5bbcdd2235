"""The app's views: the values assets/ui/*.js render (retrieval/ui/contract.py), as pure functions
of the session state. No I/O here: thumbnail URLs are computed from the photo id, and the handlers
make sure the files exist before a view names them (``Backend.prepare_thumbnails``).

Every value here reaches the page as text or an attribute, never as markup: the JavaScript sets
``textContent`` and attributes only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from retrieval.ui.contract import BannerKind, CanvasValue, CurvePoint, PanelValue, ResultItem, ResultsValue
from retrieval.ui.drawing_session import DrawingSession

if TYPE_CHECKING:
    from retrieval.ui.backend import Backend

FREE_SUBTITLE = (
    "Draw anything: the closest photos appear after every stroke. Tick the challenge box to get a photo to find."
)


def remaining_s(session: DrawingSession) -> float | None:
    """Seconds left in a timed study trial while it is being drawn; None otherwise."""
    limit = session.time_limit_s()
    if not limit or session.phase != "drawing":
        return None
    return max(0.0, limit - session.elapsed_s())


def found_banner(strokes: int, seconds: float | None = None) -> str:
    """``Found it in 3 strokes!``, with the time when given (studies)."""
    took = f" ({seconds:.1f} s)" if seconds is not None else ""
    return f"Found it in {strokes} stroke{'s' * (strokes != 1)}{took}!"


def shown_ids(session: DrawingSession, k: int) -> list[str]:
    """The photos a view of ``session`` shows: the top ``k`` and the target."""
    ids = list(session.shown.ids[:k]) if session.shown is not None else []
    return ids + ([session.target_id] if session.target_id is not None else [])


HIDDEN_RESULTS = {
    "on_request": "Press Search to see the results for your drawing so far.",
    "after_trial": "The results appear when you press Done.",
}
"""What the empty grid says while a study condition hides the results (``every_stroke`` never does)."""
CONDITION_HINTS = {
    "every_stroke": "The results update after every stroke; the trial ends as soon as your photo is found.",
    "on_request": "Press Search to see the results; the trial ends when a search finds your photo.",
    "after_trial": "No results while you draw: press Done when your drawing is finished.",
}
"""The line under a study trial's title: what this trial's condition shows, and when it ends."""


def results_view(backend: Backend, session: DrawingSession, k: int, message: str = "") -> ResultsValue:
    """The grid of what the participant is shown (``session.shown``) and, if the condition allows, the rank."""
    last, target, condition = session.shown, session.target_id, session.condition
    show_rank = condition is None or condition.show_rank
    items: list[ResultItem] = []
    if last is not None:
        ranked = zip(last.ids[:k], last.scores)
        items = [
            {"src": backend.thumb_url(pid), "id": pid, "rank": i, "score": round(float(s), 4), "target": pid == target}
            for i, (pid, s) in enumerate(ranked, start=1)
        ]
    curve: list[CurvePoint] = [
        {"strokes": p.strokes, "rank": p.target_rank, "top1": round(p.top1_score, 4)} for p in session.shown_curve
    ]
    if last is None and condition is not None and session.phase == "drawing":
        message = message or HIDDEN_RESULTS.get(condition.feedback, "")
    size = len(backend.ids)
    return {
        "items": items,
        "k": k,
        "curve": curve if show_rank else [],
        "has_target": target is not None,
        "target_rank": last.target_rank if last is not None and show_rank else None,
        "gallery_size": size,
        "server_ms": round(session.last_server_ms, 1) if last is not None else None,
        "message": message or f"Draw on the canvas: after every stroke the {size} photos are re-ranked.",
    }


def panel_view(backend: Backend, session: DrawingSession, banner: str = "", kind: BannerKind = "") -> PanelValue:
    target = session.target_id
    if target is None:
        title, subtitle = "Free drawing", FREE_SUBTITLE
    elif session.mode == "study":
        title = f"Trial {session.trial + 1} of {len(session.plan)}: find this photo"
        hint = CONDITION_HINTS[session.condition.feedback] if session.condition is not None else ""
        subtitle = f"{session.config.instructions} {hint}" if session.trial == 0 else hint
    else:
        title, subtitle = "Can you find this one?", "Draw it: the fewer strokes, the better."
    return {
        "title": title,
        "subtitle": subtitle,
        "target_src": backend.thumb_url(target) if target is not None else None,
        "target_id": target,
        "remaining_s": remaining_s(session),
        "banner": banner,
        "banner_kind": kind,
        "resume_code": session.resume_code if session.status == "running" else None,
    }


def canvas_value(session: DrawingSession, locked: bool = False, message: str = "") -> CanvasValue:
    return {"trial": session.token, "locked": locked, "message": message, "deadline_s": remaining_s(session)}
