"""Drive the app's UI over HTTP the way its browser page does, without a browser.

The page loads ``/`` (which sets its ``es_session`` cookie), calls each Gradio event with
``POST /gradio_api/queue/join`` (``fn_index``, ``trigger_id``, a per-tab ``session_hash`` and the
input values) and reads the answer from the SSE stream ``GET /gradio_api/queue/data?session_hash=...``;
its canvas posts strokes to ``POST /es/stroke`` (retrieval/ui/stroke_route.py). :class:`UiSession`
does the same, with its own cookie, so a benchmark can run dozens of study participants (or
hostile clients) where dozens of Chromium tabs would not fit on two cores.

    app = await UiApp.connect(client, url)
    tab = UiSession(client, app)
    out = await tab.call(app.event("Start", "click"), {"Participant id": "P01"})
    token = app.output(out, "es-canvas", app.event("Start", "click"))["trial"]
    writer = JournalWriter(token)              # retrieval/study/payload.py
    writer.add({"type": "stroke", "points": [[10, 10, 0], [90, 60, 40]]})
    status, answer = await tab.stroke(writer.batch())
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from typing import Any

import httpx

from retrieval.ui.sessions import COOKIE


class UiError(RuntimeError):
    """The event failed (error answer, refused request, or the stream ended without an answer).

    ``status`` is the HTTP status when the server refused to queue the event (413, 429, 503...).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UiEvent:
    """One event listener of the app: its ``fn_index``, trigger component and input/output ids."""

    fn_index: int
    trigger_id: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class UiApp:
    """The app's components and events, read from ``GET /config``."""

    url: str
    components: dict[int, dict]
    events: tuple[tuple[tuple[int, str], ...], UiEvent]

    @classmethod
    async def connect(cls, client, url: str) -> UiApp:
        config = (await client.get(f"{url}/config", timeout=30)).json()
        components = {c["id"]: c for c in config["components"]}
        events = []
        for fn_index, dep in enumerate(config["dependencies"]):
            targets = tuple((int(t[0]), str(t[1])) for t in dep.get("targets", []))
            if targets:
                event = UiEvent(dep.get("id", fn_index), targets[0][0], tuple(dep["inputs"]), tuple(dep["outputs"]))
                events.append((targets, event))
        return cls(url, components, tuple(events))

    def component(self, name: str) -> int:
        """The id of the component whose ``elem_id``, ``label`` or button text is ``name``."""
        for cid, comp in self.components.items():
            props = comp.get("props", {})
            if name in (
                props.get("elem_id"),
                props.get("label"),
                props.get("value") if comp["type"] == "button" else None,
            ):
                return cid
        raise KeyError(f"no component named {name!r}")

    def event(self, component: str, event_name: str) -> UiEvent:
        cid = self.component(component)
        for targets, event in self.events:
            if (cid, event_name) in targets:
                return event
        raise KeyError(f"no {event_name!r} listener on {component!r}")

    def output(self, data: list, component: str, event: UiEvent) -> Any:
        """The value an event's answer sets on ``component`` (None when it leaves it unchanged)."""
        value = data[event.outputs.index(self.component(component))]
        if isinstance(value, dict) and value.get("__type__") == "update":
            return value.get("value")
        return value


class UiSession:
    """One browser with one tab: its own ``es_session`` cookie and ``session_hash`` (so its own
    session in the app's table).

    Events may overlap (a stroke racing a button press): one reader task owns the tab's SSE
    stream, as the page does, and hands each answer to the call waiting for its ``event_id``.
    """

    def __init__(self, client, app: UiApp) -> None:
        self.client = client
        self.app = app
        self.session_hash = secrets.token_hex(8)
        self.cookie: str | None = None  # "es_session=<token>", from the page load
        self._waiting: dict[str, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None

    async def headers(self) -> dict[str, str]:
        """This browser's Cookie header, loading the page first to get one. Explicit, so a client
        shared by many simulated browsers never mixes their cookies (its jar is not consulted)."""
        if self.cookie is None:
            page = await self.client.get(f"{self.app.url}/", headers={"cookie": "es_session=-"}, timeout=60)
            for header in page.headers.get_list("set-cookie"):
                name, _, rest = header.partition("=")
                if name.strip() == COOKIE:
                    self.cookie = f"{COOKIE}={rest.split(';')[0]}"
            if self.cookie is None:
                raise UiError(f"the page set no {COOKIE} cookie (HTTP {page.status_code})", page.status_code)
        return {"cookie": self.cookie}

    async def _post(self, url: str, body: dict, timeout_s: float):
        """POST with this browser's cookie, sent again once if the server had just closed the kept-alive
        connection (its idle timeout racing the request). Safe: the app's requests are idempotent
        (a batch is recognised by its chain, Start / Give up / Next by the trial they name)."""
        headers = await self.headers()
        try:
            return await self.client.post(url, json=body, headers=headers, timeout=timeout_s)
        except (httpx.ReadError, httpx.RemoteProtocolError):
            return await self.client.post(url, json=body, headers=headers, timeout=timeout_s)

    async def stroke(self, batch: dict, timeout_s: float = 120.0) -> tuple[int, dict]:
        """Post a stroke batch (``JournalWriter.batch()``) as the canvas does: the status and the JSON answer."""
        answer = await self._post(f"{self.app.url}/es/stroke", batch, timeout_s)
        try:
            return answer.status_code, answer.json()
        except ValueError:
            return answer.status_code, {"error": answer.text[:200]}

    async def call(self, event: UiEvent, values: dict[str, Any] | None = None, timeout_s: float = 120.0) -> list:
        """Run ``event`` with inputs named as in :meth:`UiApp.component` (others None); its output data.

        Raises:
            UiError: refused, failed, or no answer in time.
        """
        by_id = {self.app.component(name): value for name, value in (values or {}).items()}
        body = {
            "data": [by_id.get(i) for i in event.inputs],
            "event_data": None,
            "fn_index": event.fn_index,
            "trigger_id": event.trigger_id,
            "session_hash": self.session_hash,
        }
        joined = await self._post(f"{self.app.url}/gradio_api/queue/join", body, timeout_s)
        if joined.status_code != 200 or "event_id" not in joined.json():
            raise UiError(f"join refused: HTTP {joined.status_code} {joined.text[:200]}", joined.status_code)
        answer = asyncio.get_running_loop().create_future()
        self._waiting[joined.json()["event_id"]] = answer
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(timeout_s))
        try:
            return await asyncio.wait_for(answer, timeout_s)
        except TimeoutError as exc:
            raise UiError(f"no answer in {timeout_s:g} s") from exc

    async def _read(self, timeout_s: float) -> None:
        url, params = f"{self.app.url}/gradio_api/queue/data", {"session_hash": self.session_hash}
        try:
            while self._waiting:  # the server closes the stream when nothing is pending: reopen if needed
                headers = await self.headers()
                async with self.client.stream("GET", url, params=params, headers=headers, timeout=timeout_s) as stream:
                    async for line in stream.aiter_lines():
                        if line.startswith("data:"):
                            self._dispatch(json.loads(line[5:]))
        except Exception as exc:  # noqa: BLE001 - every waiting call learns why
            for answer in self._waiting.values():
                if not answer.done():
                    answer.set_exception(UiError(f"stream failed: {exc!r:.200}"))
            self._waiting.clear()

    def _dispatch(self, message: dict) -> None:
        kind = message.get("msg")
        if kind in ("unexpected_error", "server_stopped"):
            raise UiError(f"{kind}: {str(message.get('message'))[:200]}")
        if kind != "process_completed":
            return
        answer = self._waiting.pop(message.get("event_id"), None)
        if answer is None or answer.done():
            return
        if message.get("success"):
            answer.set_result(message["output"]["data"])
        else:
            answer.set_exception(UiError(f"event failed: {str(message.get('output'))[:200]}"))
