"""Caps on HTTP requests, enforced before the web framework parses them.

Gradio reads and JSON-decodes a whole request body before any app code sees it, so a per-field
size check in the app comes too late: a 500 MB body has already cost its memory. This ASGI
middleware answers ``413`` as soon as the declared ``Content-Length`` is over the cap, and for
bodies without one (chunked) as soon as the bytes received pass it. :class:`RateLimit` answers
``429`` to a client (address + page session) that sends events faster than a person can draw.

    FastAPI(middleware=[Middleware(BodySizeLimit, max_bytes=4_000_000)])
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def plain_response(
    send: Send,
    status: int,
    text: str,
    content_type: bytes = b"text/plain; charset=utf-8",
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """Answer with ``status`` and a short body (plain text unless ``content_type`` says otherwise)."""
    body = text.encode()
    head = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body (None when the client went away first)."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app ``body`` (already read) in one message, then defers to ``receive``."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


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
        body = await read_body(receive)
        if body is None:
            return  # the client went away
        if self._too_structured(body):
            await plain_response(
                send,
                413,
                f"event inputs hold over {self.max_bytes} bytes of nested JSON: send large values as JSON text",
            )
            return
        await self.app(scope, replaying(body, receive), send)

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


# Defaults of the app's rate limit, per browser tab. Replayed through this bucket, none of 9,570
# Quick, Draw! drawings with real timing (one request per stroke) is refused: the busiest (55 strokes
# in 20 s, 14 in one second) keeps 15 tokens. Strokes every 150 ms (the fastest pen-up gap, p10)
# pass up to 56 in a row, more than any of those drawings has; a client that keeps sending 4 events
# a second gets 2 a second through once its first 40 are spent.
RATE_BURST = 40
RATE_PER_S = 2.0

SESSION_KEY = b'"session_hash"'
SESSION_VALUE = re.compile(rb'\s*:\s*"([^"\\]{1,128})"')


def session_of(body: bytes) -> str | None:
    """The ``session_hash`` of a Gradio request body, found without parsing the body.

    Inside a JSON string every quote is escaped, so an unescaped ``"session_hash"`` is a key. A body
    with none, or with two (a nested copy planted to use another tab's bucket), has no session: None.
    """
    found, at = -1, body.find(SESSION_KEY)
    while at != -1:
        if at == 0 or body[at - 1] != ord("\\"):
            if found != -1:
                return None
            found = at
        at = body.find(SESSION_KEY, at + 1)
    match = SESSION_VALUE.match(body, found + len(SESSION_KEY)) if found != -1 else None
    return match.group(1).decode("utf-8", "replace") if match else None


class RateLimit:
    """ASGI middleware: a token bucket per client (address + page session) on the routes that run work.

    Each POST to a path starting with one of ``paths`` takes a token from its client's bucket, which
    holds ``burst`` tokens and refills at ``per_s`` a second. With none left the answer is ``429``
    with ``Retry-After`` and a JSON ``detail`` (the message the Gradio page shows), before anything
    parses the body or the event reaches the queue. The session is the body's ``session_hash`` (one
    per browser tab), so people behind one address (a lab, a proxy) each get their own bucket;
    requests without one share their address's. At most ``max_clients`` buckets are kept, the least
    recently used dropped first (its client starts again with a full bucket).
    """

    def __init__(
        self,
        app: ASGIApp,
        paths: tuple[str, ...],
        per_s: float,
        burst: int,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not per_s > 0 or burst < 1 or max_clients < 1:
            raise ValueError(f"need per_s > 0, burst >= 1, max_clients >= 1; got {per_s}, {burst}, {max_clients}")
        self.app, self.paths, self.clock = app, tuple(paths), clock
        self.per_s, self.burst, self.max_clients = float(per_s), int(burst), int(max_clients)
        self.buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()  # key -> (tokens, time)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or not str(scope.get("path", "")).startswith(self.paths)
        ):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:
            return  # the client went away
        address = (scope.get("client") or ("",))[0] or ""
        wait_s = self.take((address, session_of(body) or ""))
        if wait_s:
            message = (
                f"Too many requests from this page (over {self.burst} in a row or {self.per_s:g} a second "
                f"for long): wait {wait_s:.1f} s and try again."
            )
            await plain_response(
                send,
                429,
                json.dumps({"detail": message}),
                b"application/json",
                ((b"retry-after", str(max(1, math.ceil(wait_s))).encode()),),
            )
            return
        await self.app(scope, replaying(body, receive), send)

    def take(self, key: tuple[str, str]) -> float:
        """Take a token from ``key``'s bucket: 0.0 when there was one, else the seconds until there is."""
        now = self.clock()
        tokens, stamp = self.buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - stamp) * self.per_s)
        wait_s = 0.0 if tokens >= 1 else (1 - tokens) / self.per_s
        self.buckets[key] = (tokens - 1 if not wait_s else tokens, now)
        if len(self.buckets) > self.max_clients:
            self.buckets.popitem(last=False)
        return wait_s


class BodyOverCap(ValueError):
    """A request body over the ingress cap."""


async def capped_json(request: Any, max_bytes: int) -> Any:
    """The JSON body, refused (:class:`BodyOverCap`) once its declared or received size passes
    ``max_bytes``: nothing bigger is buffered or parsed."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise BodyOverCap(f"request body over the limit of {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BodyOverCap(f"request body over the limit of {max_bytes} bytes")
    return json.loads(body)
