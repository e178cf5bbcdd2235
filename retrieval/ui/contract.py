"""The values Python sends to the page's scripts (assets/ui/*.js), typed.

They reach the page two ways: as Gradio component values, and inside a :class:`StrokeAnswer`,
the JSON the app's stroke route (``POST /es/stroke``, retrieval/ui/stroke_route.py) answers.

Each ``TypedDict`` here has a JSDoc ``@typedef`` of the same name and fields at the top of the
script that renders it; tests/test_ui_contract.py checks that both sides and the real views agree.
Every key is always sent (``None`` where there is nothing to show), so the scripts never have to
tell a missing field from an empty one. Before the first event a component holds a placeholder
(``{}``, or ``{"k": k}`` for the results), which the scripts treat as empty.
"""

from __future__ import annotations

from typing import Literal, TypedDict

BannerKind = Literal["found", "miss", ""]


class ResultItem(TypedDict):
    """One photo of the result grid."""

    src: str  # thumbnail URL (served from the thumbnail folder only)
    id: str
    rank: int  # 1 = best
    score: float  # cosine similarity, 4 decimals
    target: bool  # the photo to find


class CurvePoint(TypedDict):
    """The ranking after one more stroke."""

    strokes: int
    rank: int | None  # the target's rank; None without a target
    top1: float  # the best photo's score


class ResultsValue(TypedDict):
    """assets/ui/results.js: the grid, its stats line and the rank curve."""

    items: list[ResultItem]  # at most k; empty before the first stroke
    k: int  # slots shown (empty ones are placeholders)
    curve: list[CurvePoint]
    has_target: bool  # the curve plots the target's rank (else the top-1 score)
    target_rank: int | None
    gallery_size: int
    server_ms: float | None  # server time of the last stroke; None before the first
    message: str  # shown while the grid is empty


class PanelValue(TypedDict):
    """assets/ui/panel.js: the photo to find, the trial title, the countdown and a banner."""

    title: str
    subtitle: str
    target_src: str | None  # thumbnail URL of the target; None in free drawing
    target_id: str | None
    remaining_s: float | None  # study trials with a time limit, while drawing
    banner: str
    banner_kind: BannerKind
    resume_code: str | None  # a study's resume code, shown while it runs; None otherwise


class CanvasValue(TypedDict):
    """assets/ui/canvas.js: a new trial (new token) or a lock on the current one."""

    trial: str  # the canvas token: a new one clears the canvas
    locked: bool
    message: str  # shown over a locked canvas
    deadline_s: float | None  # seconds left in a timed trial: the canvas asks again when it passes


class StrokeAnswer(TypedDict):
    """assets/ui/canvas.js: the answer to one stroke batch (``POST /es/stroke``).

    ``applied`` and ``chain`` say what the server holds of the trial ``trial``, so the canvas
    sends only later events; the views are ``None`` when nothing on the page changes.
    """

    trial: str  # the canvas token the batch named
    applied: int  # that trial's events the server has applied (and, in a study, logged)
    chain: str  # the journal's running checksum after them (retrieval/study/payload.py)
    results: ResultsValue | None
    panel: PanelValue | None
    canvas: CanvasValue | None
    trial_ended: bool | None  # the trial just ended: the page offers Next trial
    warning: str  # a notice for the person drawing ("" when none)
