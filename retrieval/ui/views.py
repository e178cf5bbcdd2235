"""The app's views: plain dicts that assets/ui/*.js render (pure functions of the session state).

Every value here reaches the page as text or an attribute, never as markup: the JavaScript sets
``textContent`` and attributes only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from retrieval.study.session import DrawingSession

if TYPE_CHECKING:
    from retrieval.ui.backend import Backend


def results_view(backend: Backend, session: DrawingSession, k: int, message: str = "") -> dict:
    last = session.last
    items = []
    if last is not None:
        items = [{"src": backend.thumb_url(pid), "id": pid, "rank": i + 1, "score": round(float(s), 4),
                  "target": pid == session.target_id} for i, (pid, s) in enumerate(zip(last.ids[:k], last.scores))]  # fmt: skip
    curve = [{"strokes": p.strokes, "rank": p.target_rank, "top1": round(p.top1_score, 4)} for p in session.curve]
    return {
        "items": items, "k": k, "curve": curve, "has_target": session.target_id is not None,
        "target_rank": last.target_rank if last is not None else None, "gallery_size": len(backend.ids),
        "server_ms": round(session.last_server_ms, 1) if last is not None else None,
        "message": message or f"Draw on the canvas: after every stroke the {len(backend.ids)} photos are re-ranked.",
    }  # fmt: skip


def panel_view(backend: Backend, session: DrawingSession, banner: str = "", kind: str = "") -> dict:
    if session.target_id is None:
        return {"title": "Free drawing", "subtitle": "Draw anything: the closest photos appear after every stroke. "
                "Tick the challenge box to get a photo to find.", "banner": banner, "banner_kind": kind}  # fmt: skip
    view = {"target_src": backend.thumb_url(session.target_id), "target_id": session.target_id,
            "banner": banner, "banner_kind": kind}  # fmt: skip
    if session.mode == "study":
        view["title"] = f"Trial {session.trial + 1} of {len(session.plan)}: find this photo"
        limit = session.config.time_limit_s
        view["subtitle"] = session.config.instructions if session.trial == 0 else ""
        if limit and session.phase == "drawing":
            view["remaining_s"] = max(0.0, limit - session.elapsed_s())
    else:
        view["title"] = "Can you find this one?"
        view["subtitle"] = "Draw it: the fewer strokes, the better."
    return view


def canvas_value(session: DrawingSession, locked: bool = False, message: str = "") -> dict:
    remaining = None
    if session.config is not None and session.config.time_limit_s and session.phase == "drawing":
        remaining = max(0.0, session.config.time_limit_s - session.elapsed_s())
    return {"trial": session.token, "locked": locked, "message": message, "deadline_s": remaining}
