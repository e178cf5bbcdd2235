"""Caps on HTTP requests, enforced before the web framework parses them.

Gradio reads and JSON-decodes a whole request body before any app code sees it, so a per-field
size check in the app comes too late: a 500 MB body has already cost its memory. This ASGI
middleware answers ``413`` as soon as the declared ``Content-Length`` is over the cap, and for
bodies without one (chunked) as soon as the bytes received pass it.

    FastAPI(middleware=[Middleware(BodySizeLimit, max_bytes=4_000_000)])
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def plain_response(send: Send, status: int, text: str) -> None:
    """Answer with ``status`` and a short plain-text body."""
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    """Raised inside ``receive`` when a streamed body passes the cap."""


class BodySizeLimit:
    """ASGI middleware: HTTP request bodies over ``max_bytes`` get ``413 Payload Too Large``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reject(send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        await plain_response(send, 413, f"request body over the limit of {self.max_bytes} bytes")


class BlockedPaths:
    """ASGI middleware: requests whose path starts with one of ``prefixes`` get ``404`` and ``message``.

    Cheaper than letting the framework look up a missing endpoint, which logs a traceback per call.
    """

    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...], message: str) -> None:
        self.app = app
        self.prefixes = tuple(prefixes)
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        await plain_response(send, 404, self.message)


class StructuredInputLimit:
    """ASGI middleware: a UI event whose inputs hold more than ``max_bytes`` of nested JSON
    (lists and objects) gets ``413``; text and scalars of any size (up to the body cap) pass.

    Gradio validates, copies and walks every nested value of an event's inputs on its event loop,
    about 0.5 ms per kB on this machine, and every session waits meanwhile; one string costs it
    almost nothing. The app's canvas therefore sends its journal as JSON text, and this refuses
    the expensive shape before Gradio parses it. C-speed ``json`` does the check.
    """

    def __init__(self, app: ASGIApp, paths: tuple[str, ...], max_bytes: int) -> None:
        self.app = app
        self.paths = tuple(paths)
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if self._too_structured(body):
            await plain_response(send, 413, f"event inputs hold over {self.max_bytes} bytes of nested JSON: "
                                 "send large values as JSON text")  # fmt: skip
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_structured(self, body: bytes) -> bool:
        try:
            request = json.loads(body)
        except (ValueError, RecursionError):
            return False  # not JSON (or absurdly nested): Gradio refuses it itself, cheaply
        if not isinstance(request, dict):
            return False
        values = request.get("data") if isinstance(request.get("data"), list) else []
        nested = [v for v in [*values, request.get("event_data")] if isinstance(v, list | dict)]
        return any(len(json.dumps(v, separators=(",", ":"))) > self.max_bytes for v in nested)
