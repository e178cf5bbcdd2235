"""The load of ``bench_study_reliability.py``: honest participants and hostile clients.

An honest :class:`Participant` draws each trial's target stroke by stroke at human times and
posts each stroke to the app's stroke route after its pen-up, as the study page's canvas does; a
hostile client sends what an attacker would, back to back. Both go through the study page's own
requests (``harness/ui_client.py``: Gradio events for the buttons, ``POST /es/stroke`` for
strokes). What the participants sent is tallied, so the logs on disk can be checked against it.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench.lib.common import BENCH_CACHE
from bench.lib.study_client import StudyPageClient
from harness.ui_client import UiApp, UiError, UiSession
from retrieval.study.payload import JournalWriter


@dataclass
class StudyLoad:
    """The settings every study-traffic benchmark shares: the study app it starts and what its
    participants draw."""

    strokes_per_trial: int = 6
    """A participant gives up after this many strokes when the target was not found."""
    gallery_size: int = 1000
    """Procedural photos in the app's gallery (the app's default)."""
    seed: int = 0
    app_args: str = ""
    """Extra app flags, e.g. "--batch 1"."""
    cache_dir: Path = BENCH_CACHE

    def app_argv(self, study: Path, log_dir: Path) -> list[str]:
        """``app.py`` flags of the study app: ``study`` config, logs in ``log_dir``, then ``app_args``."""
        return [
            *("--mode", "study", "--study", str(study), "--log-dir", str(log_dir)),
            *("--gallery-size", str(self.gallery_size), "--cache-dir", str(self.cache_dir)),
            *shlex.split(self.app_args),
        ]


@dataclass
class Tally:
    """What one phase's honest participants sent and saw."""

    sent: dict[str, dict[str, set[int]]] = field(default_factory=dict)  # participant -> trial token -> seqs
    # participant -> trial token -> (trial, target)
    trials: dict[str, dict[str, tuple[int, str]]] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # time.monotonic() when each latency's stroke was first sent
    errors: Counter = field(default_factory=Counter)
    wall_s: float = 0.0
    requests: int = 0  # every request the participants sent (Start, strokes, Give up, Next; retries too)

    def merge(self, other: Tally) -> None:
        self.sent.update(other.sent)
        self.trials.update(other.trials)
        self.latencies_ms += other.latencies_ms
        self.sent_at += other.sent_at
        self.errors.update(other.errors)
        self.wall_s += other.wall_s
        self.requests += other.requests


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


def calibrated_gaps(rng: np.random.Generator) -> float:
    """Pen-up to pen-down milliseconds from the Quick, Draw!-calibrated lognormal (procedural timing)."""
    from retrieval.data.procedural.timing import pen_up_gap

    return pen_up_gap(rng)


class Participant:
    """One honest participant: start, then trials of human-paced strokes until the deadline.

    Each stroke is sent when its pen lifts: the sketch's own stroke duration after a pen-up gap
    drawn by ``gap_ms`` (default: the calibrated lognormal).
    """

    def __init__(
        self, name: str, client: StudyPageClient, tally: Tally, rng: np.random.Generator, cfg, gap_ms=calibrated_gaps
    ) -> None:
        self.name, self.client, self.tally, self.rng, self.cfg, self.gap_ms = name, client, tally, rng, cfg, gap_ms
        tally.sent[name], tally.trials[name] = {}, {}

    async def run(self, deadline: float) -> None:
        from retrieval.data.procedural import generate_sketch

        self.tally.requests += 1
        current = await self.client.start(self.name)
        trial = 0
        while current is not None and time.monotonic() < deadline:
            token, target = current
            self.tally.trials[self.name][token] = (trial, target)
            sent = self.tally.sent[self.name].setdefault(token, set())
            sketch = generate_sketch(self.cfg.seed, int(target.rsplit("-", 1)[1]), int(self.rng.integers(3)))
            events, t_ms, locked = [], 0.0, False
            for i, stroke in enumerate(sketch.strokes[: self.cfg.strokes_per_trial]):
                pause_ms = (self.gap_ms(self.rng) if i else 300.0) + float(stroke[-1, 2] - stroke[0, 2])
                await asyncio.sleep(pause_ms / 1e3)
                t_ms += pause_ms
                events.append(stroke_event(len(events) + 1, stroke, t_ms))
                sent.add(len(events))
                locked = await self._send(token, events)
                if locked or time.monotonic() >= deadline:
                    break
            if time.monotonic() >= deadline:
                return
            if not locked:
                self.tally.requests += 1
                await self.client.give_up()
            self.tally.requests += 1
            current = await self.client.next_trial()
            trial += 1

    async def _send(self, token: str, events: list[dict]) -> bool:
        """Send the journal (again, up to 3 times, if the request fails); True once the trial ended."""
        first_sent = time.monotonic()
        for _ in range(3):
            began = time.perf_counter()
            self.tally.requests += 1
            try:
                locked = await self.client.stroke(token, events)
            except (UiError, OSError, httpx.HTTPError) as exc:
                self.tally.errors[type(exc).__name__ + ": " + str(exc)[:60]] += 1
                continue
            self.tally.latencies_ms.append((time.perf_counter() - began) * 1e3)
            self.tally.sent_at.append(first_sent)
            return locked
        return False


def check_logs(log_dir: Path, tally: Tally) -> dict:
    """Strokes sent vs stroke records on disk for one phase's participants: records written, and
    records lost (sent, never written), duplicated (written twice) and misfiled (another
    participant's, another trial's, or never sent)."""
    from retrieval.study.log import StudyLog, read_log

    sent = sum(len(seqs) for trials in tally.sent.values() for seqs in trials.values())
    written = misfiled = duplicated = 0
    logged: set[tuple[str, str, int]] = set()
    for name, trials in tally.sent.items():
        path = StudyLog(log_dir, name, "S1").path
        for record in read_log(path) if path.exists() else []:
            if record.get("type") != "stroke":
                continue
            written += 1
            key = (record.get("trial_token"), record.get("seq"))
            trial = tally.trials[name].get(key[0])
            if (name, *key) in logged:
                duplicated += 1
            elif (
                record.get("participant") != name
                or trial is None
                or key[1] not in trials.get(key[0], ())
                or (record.get("trial"), record.get("target_id")) != trial
            ):
                misfiled += 1
            logged.add((name, *key))
    lost = sum(
        1
        for name, trials in tally.sent.items()
        for token, seqs in trials.items()
        for seq in seqs
        if (name, token, seq) not in logged
    )
    return {
        "strokes_sent": sent,
        "records_written": written,
        "lost": lost,
        "duplicated": duplicated,
        "misfiled": misfiled,
    }


async def hostile_client(tab: UiSession, name: str, deadline: float, pause_s: float, counts: Counter) -> None:
    """Back-to-back hostile requests on its own session (and on the open endpoints)."""
    app, client = tab.app, tab.client
    start = app.event("Start", "click")
    give_up, next_ev = app.event("Give up", "click"), app.event("Next trial", "click")
    out = await tab.call(start, {"Participant id": name, "Session id": "S1"})
    token = app.output(out, "es-canvas", start)["trial"]
    line = np.array([[10.0 + i, 20.0 + i, 10.0 * i] for i in range(5)])
    flood = JournalWriter(token)
    for seq in range(1, 2001):  # made once: the attacker's CPU is not the server's
        flood.add(stroke_event(seq, line, 0.0))
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
            for seq in range(1, 61):
                largest.add(stroke_event(seq, line, 0.0))
            shown = {"es-canvas": {"trial": token}}
            await tab.call(give_up, shown)
            _, out = await asyncio.gather(tab.stroke(largest.batch()), tab.call(next_ev, shown))
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
