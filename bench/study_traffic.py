"""The load of ``bench_study_reliability.py``: honest participants and hostile clients.

An honest :class:`Participant` draws each trial's target stroke by stroke at human times and
sends the whole journal after every pen-up, as the study page does; a hostile client sends what
an attacker would, back to back. Both go through the study UI's own events
(``retrieval/ui/ui_client.py``). What the participants sent is tallied, so the logs on disk can be
checked against it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
import numpy as np

from retrieval.ui.ui_client import UiApp, UiError, UiSession

if TYPE_CHECKING:
    from bench_study_reliability import Config


@dataclass
class Tally:
    """What one phase's honest participants sent and saw."""

    sent: dict[str, dict[str, set[int]]] = field(default_factory=dict)  # participant -> trial token -> seqs
    # participant -> trial token -> (trial, target)
    trials: dict[str, dict[str, tuple[int, str]]] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    wall_s: float = 0.0

    def merge(self, other: Tally) -> None:
        self.sent.update(other.sent)
        self.trials.update(other.trials)
        self.latencies_ms += other.latencies_ms
        self.errors.update(other.errors)
        self.wall_s += other.wall_s


def journal(token: str, events: list[dict], extra: dict | None = None) -> str:
    """The canvas journal as the page sends it: JSON text."""
    return json.dumps(journal_object(token, events, extra))


def journal_object(token: str, events: list[dict], extra: dict | None = None) -> dict:
    return {
        "trial": token,
        "width": 256,
        "height": 256,
        "dpr": 1,
        "t0_utc_ms": time.time() * 1e3,
        "events": events,
        **(extra or {}),
    }


def stroke_event(seq: int, stroke: np.ndarray, t0_ms: float) -> dict:
    points = [
        [round(float(x), 2), round(float(y), 2), round(float(t - stroke[0, 2] + t0_ms), 1), 0.5] for x, y, t in stroke
    ]
    return {
        "seq": seq,
        "type": "stroke",
        "pointer": "mouse",
        "t_down": points[0][2],
        "t_up": points[-1][2],
        "points": points,
    }


class Participant:
    """One honest participant: start, then trials of human-paced strokes until the deadline."""

    def __init__(self, name: str, tab: UiSession, tally: Tally, rng: np.random.Generator, cfg: Config) -> None:
        self.name, self.tab, self.tally, self.rng, self.cfg = name, tab, tally, rng, cfg
        self.app = tab.app
        tally.sent[name], tally.trials[name] = {}, {}

    def _trial(self, out: list, event) -> tuple[str, str] | None:
        canvas = self.app.output(out, "es-canvas", event)
        panel = self.app.output(out, "es-panel", event)
        if not canvas or not panel or not panel.get("target_id"):
            return None
        return canvas["trial"], panel["target_id"]

    async def run(self, deadline: float) -> None:
        from retrieval.data.procedural import generate_sketch
        from retrieval.data.procedural.timing import pen_up_gap

        start, stroke_ev = self.app.event("Start", "click"), self.app.event("es-canvas", "stroke_end")
        give_up, next_ev = self.app.event("Give up", "click"), self.app.event("Next trial", "click")
        current = self._trial(await self.tab.call(start, {"Participant id": self.name, "Session id": "S1"}), start)
        trial = 0
        while current is not None and time.monotonic() < deadline:
            token, target = current
            self.tally.trials[self.name][token] = (trial, target)
            sent = self.tally.sent[self.name].setdefault(token, set())
            sketch = generate_sketch(self.cfg.seed, int(target.rsplit("-", 1)[1]), int(self.rng.integers(3)))
            events, t_ms, locked = [], 0.0, False
            for i, stroke in enumerate(sketch.strokes[: self.cfg.strokes_per_trial]):
                pause_ms = (pen_up_gap(self.rng) if i else 300.0) + float(stroke[-1, 2] - stroke[0, 2])
                await asyncio.sleep(pause_ms / 1e3)
                t_ms += pause_ms
                events.append(stroke_event(len(events) + 1, stroke, t_ms))
                sent.add(len(events))
                locked = await self._send(stroke_ev, journal(token, events))
                if locked or time.monotonic() >= deadline:
                    break
            if time.monotonic() >= deadline:
                return
            if not locked:
                await self.tab.call(give_up)
            current = self._trial(await self.tab.call(next_ev), next_ev)
            trial += 1

    async def _send(self, event, payload: dict) -> bool:
        """Send the journal (again, up to 3 times, if the request fails); True once the trial ended."""
        for _ in range(3):
            began = time.perf_counter()
            try:
                out = await self.tab.call(event, {"es-canvas": payload})
            except (UiError, OSError, httpx.HTTPError) as exc:
                self.tally.errors[type(exc).__name__ + ": " + str(exc)[:60]] += 1
                continue
            self.tally.latencies_ms.append((time.perf_counter() - began) * 1e3)
            canvas = self.app.output(out, "es-canvas", event)
            return bool(canvas and canvas.get("locked"))
        return False


async def hostile_client(tab: UiSession, name: str, deadline: float, pause_s: float, counts: Counter) -> None:
    """Back-to-back hostile requests on its own session (and on the open endpoints)."""
    app, client = tab.app, tab.client
    start, stroke_ev = app.event("Start", "click"), app.event("es-canvas", "stroke_end")
    give_up, next_ev = app.event("Give up", "click"), app.event("Next trial", "click")
    out = await tab.call(start, {"Participant id": name, "Session id": "S1"})
    token = app.output(out, "es-canvas", start)["trial"]
    line = np.array([[10.0 + i, 20.0 + i, 10.0 * i] for i in range(5)])
    flood = [stroke_event(s, line, 0.0) for s in range(1, 2001)]  # made once: the attacker's CPU is not the server's
    max_events = flood[:60]
    attacks = {
        "2000-event journal as text": lambda: journal(token, flood),
        "2000-event journal as nested JSON": lambda: journal_object(token, flood),
        "nested pointer": lambda: journal(token, [{**max_events[0], "pointer": json.loads("[" * 500 + "]" * 500)}]),
        "seq jump": lambda: journal(token, [max_events[0], {**max_events[1], "seq": 10**9}]),
    }
    huge = json.dumps(
        {
            "data": [journal_object(token, max_events[:1], {"dpr": "9" * 10_000_000}), None],
            "fn_index": stroke_ev.fn_index,
            "session_hash": tab.session_hash,
        }
    ).encode()
    while time.monotonic() < deadline:
        for attack, make in attacks.items():
            try:
                await tab.call(stroke_ev, {"es-canvas": make()}, timeout_s=60)
                counts[f"{attack}: answered"] += 1
            except (UiError, httpx.HTTPError) as exc:
                counts[f"{attack}: {refusal(exc)}"] += 1
            await asyncio.sleep(pause_s)
        for attack, request in {
            "rank API": lambda: client.post(f"{app.url}/gradio_api/call/rank", json={"data": ["{}", 5, None]}),
            "deeply nested body": lambda: client.post(f"{app.url}/gradio_api/queue/join", content="[" * 100_000),
            "10 MB dpr body": lambda: client.post(f"{app.url}/gradio_api/queue/join", content=huge),
        }.items():
            try:
                counts[f"{attack}: HTTP {(await request()).status_code}"] += 1
            except httpx.HTTPError as exc:
                counts[f"{attack}: {type(exc).__name__}"] += 1
            await asyncio.sleep(pause_s)
        # the largest journal allowed, on a fresh trial, racing Give up + Next: one forward, 60 records
        try:
            await tab.call(give_up)
            racing = asyncio.gather(tab.call(stroke_ev, {"es-canvas": journal(token, max_events)}), tab.call(next_ev))
            _, out = await racing
            token = app.output(out, "es-canvas", next_ev)["trial"]
            counts["largest journal racing Next: answered"] += 1
        except (UiError, httpx.HTTPError, TypeError) as exc:
            counts[f"largest journal racing Next: {refusal(exc)}"] += 1
        await asyncio.sleep(pause_s)


def refusal(exc: Exception) -> str:
    """How a hostile event was refused: the HTTP status at the door (413, 429...), else the error type."""
    status = getattr(exc, "status", None)
    return f"HTTP {status}" if status else f"refused ({type(exc).__name__})"


def hostile_process(url: str, phase: str, clients: int, duration_s: float, pause_s: float, results) -> None:
    """Entry point of the attackers' process: run the hostile clients, put their outcome counts on ``results``."""

    async def attack() -> Counter:
        counts: Counter = Counter()
        async with httpx.AsyncClient(trust_env=False) as client:
            app = await UiApp.connect(client, url)
            deadline = time.monotonic() + duration_s
            tabs = [UiSession(client, app) for _ in range(clients)]
            runs = [hostile_client(tab, f"X-{phase}-{i}", deadline, pause_s, counts) for i, tab in enumerate(tabs)]
            for result in await asyncio.gather(*runs, return_exceptions=True):
                if isinstance(result, BaseException):
                    counts[f"hostile client crashed: {result!r:.80}"] += 1
        return counts

    results.put(dict(asyncio.run(attack())))
