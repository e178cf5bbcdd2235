"""The attack classes of ``bench_hostile.py``: what a stranger sends, back to back, from its own
address (127.0.0.2: loopback accepts any 127/8 source, so the server's per-address limits see a
different client than the honest participants on 127.0.0.1).

Each attack runs until its deadline (or its request budget) and tallies ``route: outcome``. The
faults (``disk_full``, ``ranker_down``) are not requests: ``bench_hostile.py`` switches them on
and off through ``bench/load/faulty_app.py``'s control file.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter

import httpx
import numpy as np

from bench.lib.study_traffic import stroke_event
from harness.ui_client import UiApp, UiError, UiSession
from retrieval.study.payload import JournalWriter

ATTACKER_ADDRESS = "127.0.0.2"
# Every route a client can POST to, open or not: the oversized nested body is tried on each.
POST_ROUTES = (
    "/gradio_api/queue/join",
    "/es/stroke",
    "/gradio_api/call/rank",
    "/gradio_api/run/rank",
    "/gradio_api/component_server",
    "/gradio_api/upload",
    "/gradio_api/process_recording",
    "/",
)


def attacker_client(connections: int) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(
        local_address=ATTACKER_ADDRESS, limits=httpx.Limits(max_connections=connections)
    )
    return httpx.AsyncClient(transport=transport, trust_env=False, timeout=30)


async def _workers(n: int, deadline: float, budget: int, one) -> None:
    """``n`` concurrent loops calling ``one(i)`` for i = 0, 1, ... until the deadline or ``budget`` calls."""
    counter = itertools.count()

    async def loop() -> None:
        while time.monotonic() < deadline and (i := next(counter)) < budget:
            await one(i)

    await asyncio.gather(*(loop() for _ in range(n)))


async def _post(client: httpx.AsyncClient, counts: Counter, label: str, url: str, **kwargs) -> None:
    try:
        counts[f"{label}: HTTP {(await client.post(url, **kwargs)).status_code}"] += 1
    except httpx.HTTPError as exc:
        counts[f"{label}: {type(exc).__name__}"] += 1


async def session_flood(url: str, deadline: float, counts: Counter, sessions: int = 10_000) -> None:
    """``sessions`` session creations the way the issue measured them: POST /component_server, each with a
    new ``session_hash`` (Gradio creates state for each); 16 at a time."""
    async with attacker_client(16) as client:

        async def one(i: int) -> None:
            body = {"session_hash": f"flood{i:06d}", "component_id": 1, "fn_name": "x", "data": None}
            await _post(
                client, counts, "POST /gradio_api/component_server", f"{url}/gradio_api/component_server", json=body
            )

        await _workers(16, deadline, sessions, one)


class RawPoster:
    """POSTs over one kept-alive socket with the request bytes written by hand, no HTTP library: a
    flood costs its sender a few microseconds a request, so on the bench's shared 2 cores what the
    attack costs honest participants is the server's work for it, not the attacker's own client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, url: str) -> RawPoster:
        host, port = url.split("//", 1)[1].split(":")
        reader, writer = await asyncio.open_connection(host, int(port), local_addr=(ATTACKER_ADDRESS, 0))
        return cls(reader, writer, f"{host}:{port}")

    async def post(self, path: str, body: bytes) -> int:
        """The answer's status (the connection is reopened when the server closed it)."""
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        self.writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        await self.reader.readexactly(int(fields.get("content-length", 0)))
        return int(lines[0].split()[1])

    def close(self) -> None:
        self.writer.close()


async def rotating_identity(url: str, deadline: float, counts: Counter) -> None:
    """Canvas events (the trial check, the page's one canvas event through Gradio since strokes take
    the app's route), each under a fresh ``session_hash`` after a decoy unescaped ``"session_hash"``
    key: the bucket keys of the old limit. 8 connections, each sending as fast as it is answered."""
    async with attacker_client(1) as client:
        check = (await UiApp.connect(client, url)).event("es-canvas", "trial_check")
    body = {"data": [], "event_data": None, "fn_index": check.fn_index, "trigger_id": check.trigger_id}
    label = "POST /gradio_api/queue/join"

    async def one_connection(n: int) -> None:
        poster = await RawPoster.open(url)
        try:
            for i in itertools.count(n, 8):
                if time.monotonic() >= deadline:
                    return
                text = '{"session_hash": "decoy", ' + json.dumps({**body, "session_hash": f"rot{i:07d}"})[1:]
                try:
                    counts[f"{label}: HTTP {await poster.post('/gradio_api/queue/join', text.encode())}"] += 1
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    counts[f"{label}: {type(exc).__name__}"] += 1
                    poster.close()
                    poster = await RawPoster.open(url)
        finally:
            poster.close()

    await asyncio.gather(*(one_connection(n) for n in range(8)))


async def journal_replay(url: str, deadline: float, counts: Counter, tabs: int = 4) -> None:
    """Study sessions that re-send their journal from the start with every earlier stroke turned into a
    ``clear`` and five new 2,000-point strokes (within every per-request cap), to grow the log without
    bound and free the point budget: a batch from ``base`` 0 whose history differs from what was applied."""
    async with attacker_client(2 * tabs) as client:
        app = await UiApp.connect(client, url)
        start = app.event("Start", "click")
        big = np.array([[10.0 + (i % 200), 20.0 + (i // 200), 5.0 * i] for i in range(2000)])

        async def tab(n: int) -> None:
            session = UiSession(client, app)
            try:
                out = await session.call(start, {"Participant id": f"X-replay-{n}", "Session id": "S1"})
                token = app.output(out, "es-canvas", start)["trial"]
            except (UiError, httpx.HTTPError, TypeError) as exc:
                counts[f"replay Start: {type(exc).__name__} {getattr(exc, 'status', '')}"] += 1
                return
            seq = 0
            while time.monotonic() < deadline:
                writer = JournalWriter(token)
                for _ in range(seq):
                    writer.add({"type": "clear", "t": 1.0})
                for j in range(1, 6):
                    writer.add(stroke_event(seq + j, big, 1e4 * (seq + j)))
                try:
                    status, _ = await session.stroke(writer.batch(base=0), timeout_s=60)
                    counts[f"replayed journal: HTTP {status}"] += 1
                    seq += 5 if status == 200 else 0
                except httpx.HTTPError as exc:
                    counts[f"replayed journal: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.25)

        await asyncio.gather(*(tab(n) for n in range(tabs)))


async def nested_json(url: str, deadline: float, counts: Counter) -> None:
    """A 3.3 MB body of nested JSON (and one nested 200 deep) on every route a client can POST to; 2 at a
    time (the attacker shares the server's cores here: more would measure the loopback, not the server)."""
    events = [{"seq": i, "points": [[1.5, 2.5, 3.5, 0.5]] * 50} for i in range(3000)]
    wide = json.dumps({"data": [{"events": events}, 5, None], "fn_index": 3, "session_hash": "n"}).encode()
    deep = json.dumps({"data": [json.loads("[" * 200 + "]" * 200)], "fn_index": 3, "session_hash": "n"}).encode()
    bodies = [
        (route, kind, body) for route in POST_ROUTES for kind, body in (("3 MB nested", wide), ("200 deep", deep))
    ]
    async with attacker_client(2) as client:

        async def one(i: int) -> None:
            route, kind, body = bodies[i % len(bodies)]
            headers = {"content-type": "application/json"}
            await _post(client, counts, f"POST {route} ({kind})", url + route, content=body, headers=headers)

        await _workers(2, deadline, 10**9, one)


ATTACKS = {
    "session_flood": session_flood,
    "rotating_identity": rotating_identity,
    "journal_replay": journal_replay,
    "nested_json": nested_json,
}


def attack_process(url: str, attack: str, duration_s: float, results) -> None:
    """Entry point of the attacker's process: run ``attack``, put its outcome counts on ``results``."""

    async def run() -> Counter:
        counts: Counter = Counter()
        began = time.monotonic()
        try:
            await ATTACKS[attack](url, began + duration_s, counts)
        except Exception as exc:  # an attacker that crashed is part of the result, not a bench failure
            counts[f"attacker crashed: {exc!r:.100}"] += 1
        counts["(attacker wall s)"] = round(time.monotonic() - began, 1)
        return counts

    results.put(dict(asyncio.run(run())))
