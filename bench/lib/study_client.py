"""One study participant's page, scripted: the requests the study page sends for Start, strokes,
Give up and Next (``harness/ui_client.py`` underneath). The honest participants of the study
benchmarks (``study_traffic.Participant``) draw through it.
"""

from __future__ import annotations

import asyncio
import time

from harness.ui_client import UiError, UiSession
from retrieval.study.payload import JournalWriter


class StudyPageClient:
    """One participant's study page: Start, Give up and Next as Gradio events, strokes posted to the
    app's route (``POST /es/stroke``) with the page's own cookie, only the events not acknowledged
    yet (:class:`~retrieval.study.payload.JournalWriter`). The adapter :class:`Participant` draws through.
    """

    def __init__(self, tab: UiSession) -> None:
        self.tab, self.app = tab, tab.app
        self.events = {
            name: self.app.event(*where)
            for name, where in {
                "start": ("Start", "click"),
                "give_up": ("Give up", "click"),
                "next": ("Next trial", "click"),
            }.items()
        }
        self.writer: JournalWriter | None = None

    def _trial(self, out: list, event) -> tuple[str, str] | None:
        canvas = self.app.output(out, "es-canvas", event)
        panel = self.app.output(out, "es-panel", event)
        if not canvas or not panel or not panel.get("target_id"):
            return None
        self.writer = JournalWriter(canvas["trial"])
        return canvas["trial"], panel["target_id"]

    def _shown(self) -> dict:
        """The canvas's value: Give up and Next name the trial it shows."""
        return {"es-canvas": {"trial": self.writer.trial if self.writer else ""}}

    async def start(self, participant: str) -> tuple[str, str] | None:
        """Consent and Start: the first trial's (canvas token, target id)."""
        start = self.events["start"]
        return self._trial(await self.tab.call(start, {"Participant id": participant, "Session id": "S1"}), start)

    async def stroke(self, token: str, events: list[dict]) -> bool:
        """Post the trial's events the server has not acknowledged after a pen-up; True once the trial
        has ended (target found). A batch the server could not save (503) or refused for pace (429)
        is sent again after 1, 2, 4 ... s, as the canvas does, for up to ``RETRY_S``; then UiError."""
        writer = self.writer
        for event in events[writer.seq :]:
            writer.add(event)
        status, answer = await _again(lambda: self.tab.stroke(writer.batch()), lambda a: a[0] in (429, 503))
        if status not in (200, 409):
            raise UiError(f"stroke refused: HTTP {status} {str(answer)[:120]}", status)
        writer.acknowledge(answer["applied"])
        canvas = answer.get("canvas")
        return bool(answer.get("trial_ended") or (canvas and canvas.get("locked")))

    async def give_up(self) -> None:
        await _again(lambda: self.tab.call(self.events["give_up"], self._shown()))

    async def next_trial(self) -> tuple[str, str] | None:
        """Next: the new trial's (canvas token, target id), None when the study is over."""
        out = await _again(lambda: self.tab.call(self.events["next"], self._shown()))
        return self._trial(out, self.events["next"])


RETRY_S = 30.0  # how long an honest participant keeps trying (a person presses again; the canvas resends)


async def _again(request, retry=lambda answer: False):
    """``await request()``, again after 1, 2, 4 ... s while it raises UiError (a button whose record could
    not be saved: pressed again, which is safe, the app's requests being idempotent) or ``retry(answer)``."""
    deadline, wait = time.monotonic() + RETRY_S, 1.0
    while True:
        try:
            answer = await request()
            if not retry(answer) or time.monotonic() + wait > deadline:
                return answer
        except UiError:
            if time.monotonic() + wait > deadline:
                raise
        await asyncio.sleep(wait)
        wait = min(2 * wait, 8.0)
