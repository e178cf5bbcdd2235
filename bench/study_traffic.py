"""The load of ``bench_study_reliability.py``: honest participants and hostile clients.

An honest :class:`Participant` draws each trial's target stroke by stroke at human times and
posts each stroke to the app's stroke route after its pen-up, as the study page's canvas does; a
hostile client sends what an attacker would, back to back. Both go through the study page's own
requests (``retrieval/ui/ui_client.py``: Gradio events for the buttons, ``POST /es/stroke`` for
strokes). What the participants sent is tallied, so the logs on disk can be checked against it.
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

from retrieval.study.payload import JournalWriter
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


def stroke_event(stroke: np.ndarray, t0_ms: float) -> dict:
    points = [
        [round(float(x), 2), round(float(y), 2), round(float(t - stroke[0, 2] + t0_ms), 1), 0.5] for x, y, t in stroke
    ]
    return {
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

        start = self.app.event("Start", "click")
        give_up, next_ev = self.app.event("Give up", "click"), self.app.event("Next trial", "click")
        current = self._trial(await self.tab.call(start, {"Participant id": self.name, "Session id": "S1"}), start)
        trial = 0
        while current is not None and time.monotonic() < deadline:
            token, target = current
            self.tally.trials[self.name][token] = (trial, target)
            sent = self.tally.sent[self.name].setdefault(token, set())
            sketch = generate_sketch(self.cfg.seed, int(target.rsplit("-", 1)[1]), int(self.rng.integers(3)))
            writer, t_ms, locked = JournalWriter(token), 0.0, False
            for i, stroke in enumerate(sketch.strokes[: self.cfg.strokes_per_trial]):
                pause_ms = (pen_up_gap(self.rng) if i else 300.0) + float(stroke[-1, 2] - stroke[0, 2])
                await asyncio.sleep(pause_ms / 1e3)
                t_ms += pause_ms
                sent.add(writer.add(stroke_event(stroke, t_ms)))
                locked = await self._send(writer)
                if locked or time.monotonic() >= deadline:
                    break
            if time.monotonic() >= deadline:
                return
            shown = {"es-canvas": {"trial": token}}  # Give up and Next name the trial the canvas shows
            if not locked:
                await self.tab.call(give_up, shown)
            current = self._trial(await self.tab.call(next_ev, shown), next_ev)
            trial += 1

    async def _send(self, writer: JournalWriter) -> bool:
        """Post the unacknowledged strokes (again, up to 3 times, if the request fails); True once the trial ended."""
        for _ in range(3):
            began = time.perf_counter()
            try:
                status, answer = await self.tab.stroke(writer.batch())
            except (OSError, httpx.HTTPError) as exc:
                self.tally.errors[type(exc).__name__ + ": " + str(exc)[:60]] += 1
                continue
            if status not in (200, 409):
                self.tally.errors[f"HTTP {status}: {str(answer)[:60]}"] += 1
                continue
            self.tally.latencies_ms.append((time.perf_counter() - began) * 1e3)
            writer.acknowledge(answer["applied"])
            canvas = answer.get("canvas")
            return bool(answer.get("trial_ended") or (canvas and canvas.get("locked")))
        return False


async def hostile_client(tab: UiSession, name: str, deadline: float, pause_s: float, counts: Counter) -> None:
    """Back-to-back hostile requests on its own session (and on the open endpoints)."""
    app, client = tab.app, tab.client
    start = app.event("Start", "click")
    give_up, next_ev = app.event("Give up", "click"), app.event("Next trial", "click")
    out = await tab.call(start, {"Participant id": name, "Session id": "S1"})
    token = app.output(out, "es-canvas", start)["trial"]
    line = np.array([[10.0 + i, 20.0 + i, 10.0 * i] for i in range(5)])
    flood = JournalWriter(token)
    for _ in range(2000):  # made once: the attacker's CPU is not the server's
        flood.add(stroke_event(line, 0.0))
    texts = list(flood.texts.values())

    def batch(events: list[str], **fields) -> dict:  # on the current trial, from its start
        return {**flood.batch(base=0), "trial": token, "events": events, **fields}

    attacks = {
        "2000-event batch": lambda: batch(texts),
        "nested pointer": lambda: batch([json.dumps({**json.loads(texts[0]), "pointer": [[[[]]]]})]),
        "seq jump": lambda: batch([texts[0], texts[0].replace('"seq":1', '"seq":1000000000')]),
        "10 MB dpr": lambda: batch(texts[:1], dpr="9" * 10_000_000),
        "journal replayed as clears": lambda: batch(['{"seq":1,"type":"clear"}']),
        "foreign trial token": lambda: {**batch(texts[:1]), "trial": "0" * 32},
    }
    while time.monotonic() < deadline:
        await tab.stroke(batch(texts[:1]))  # one real stroke on the trial: the history a replay rewrites
        for attack, make in attacks.items():
            try:
                status, _ = await tab.stroke(make(), timeout_s=60)
                counts[f"{attack}: HTTP {status}"] += 1
            except httpx.HTTPError as exc:
                counts[f"{attack}: {type(exc).__name__}"] += 1
            await asyncio.sleep(pause_s)
        for attack, request in {
            "rank API": lambda: client.post(f"{app.url}/gradio_api/call/rank", json={"data": ["{}", 5, None]}),
            "deeply nested body": lambda: client.post(f"{app.url}/gradio_api/queue/join", content="[" * 100_000),
            "stroke without a cookie": lambda: client.post(
                f"{app.url}/es/stroke", json=batch(texts[:1]), headers={"cookie": "es_session=-"}
            ),
        }.items():
            try:
                counts[f"{attack}: HTTP {(await request()).status_code}"] += 1
            except httpx.HTTPError as exc:
                counts[f"{attack}: {type(exc).__name__}"] += 1
            await asyncio.sleep(pause_s)
        # the largest batch allowed, on a fresh trial, racing Give up + Next: one forward, 60 records
        try:
            largest = JournalWriter(token)
            for _ in range(60):
                largest.add(stroke_event(line, 0.0))
            await tab.call(give_up, {"es-canvas": {"trial": token}})
            racing = asyncio.gather(tab.stroke(largest.batch()), tab.call(next_ev, {"es-canvas": {"trial": token}}))
            _, out = await racing
            token = app.output(out, "es-canvas", next_ev)["trial"]
            counts["largest batch racing Next: answered"] += 1
        except (UiError, httpx.HTTPError, TypeError) as exc:
            counts[f"largest batch racing Next: {refusal(exc)}"] += 1
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
