"""Caps on HTTP requests, enforced before the web framework parses them.

Gradio reads and JSON-decodes a whole request body before any app code sees it, so a per-field
size check in the app comes too late: a 500 MB body has already cost its memory. These ASGI
middlewares refuse at the door:

- :class:`RouteAllowList` answers ``404`` to every request that is not one of the app's routes
  and caps each allowed route's body (``413``) as soon as the declared ``Content-Length`` is over
  it, or, for bodies without one (chunked), as soon as the bytes received pass it;
- :class:`StructuredInputLimit` answers ``413`` to event inputs holding large or deep nested JSON.

The rate limits (``429``) are in :mod:`retrieval.ui.rate_limits`.

    FastAPI(middleware=[Middleware(RouteAllowList, routes=(AllowedRoute.of("GET", "/"),))])
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException

from retrieval.serving.body_cap import over_the_limit

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
    # Refusals come before the request's body is read: close rather than make the server drain it.
    head = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    head += headers
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


def client_address(scope: Scope) -> str:
    """The peer address of a request ("" when the server does not know it)."""
    return (scope.get("client") or ("",))[0] or ""


class BodyTooLarge(HTTPException):
    """Raised inside ``receive`` when a streamed body passes the cap.

    An ``HTTPException`` so that a framework reading the body (FastAPI wraps other errors of a
    body read into a ``400``) answers ``413`` too.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, over_the_limit(max_bytes))


async def call_with_body_cap(app: ASGIApp, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
    """Run ``app`` on an HTTP request whose body may hold at most ``max_bytes`` bytes, else ``413``.

    A declared ``Content-Length`` over the cap is refused before a byte is read; a body without one
    (chunked) is cut off as soon as the bytes received pass the cap, whoever reads it.
    """
    declared = dict(scope.get("headers") or []).get(b"content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        await plain_response(send, 413, over_the_limit(max_bytes))
        return
    seen = 0
    started = False

    async def counting_receive() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > max_bytes:
                raise BodyTooLarge(max_bytes)
        return message

    async def tracking_send(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, counting_receive, tracking_send)
    except BodyTooLarge:
        if not started:
            await plain_response(send, 413, over_the_limit(max_bytes))


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
        await call_with_body_cap(self.app, scope, receive, send, self.max_bytes)


@dataclass(frozen=True)
class AllowedRoute:
    """One route a client may use: its methods, its path (every path under it when it ends with
    ``*``) and the most bytes its request body may hold (0: none)."""

    methods: frozenset[str]
    path: str
    max_body_bytes: int = 0
    why: str = ""

    @classmethod
    def of(cls, methods: str, path: str, max_body_bytes: int = 0, why: str = "") -> AllowedRoute:
        """``AllowedRoute.of("GET HEAD", "/assets/*")``: methods separated by spaces."""
        return cls(frozenset(methods.split()), path, int(max_body_bytes), why)

    def matches(self, method: str, path: str) -> bool:
        if method not in self.methods:
            return False
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path


NOT_A_ROUTE = "not a route of this app"


class RouteAllowList:
    """ASGI middleware: only the listed routes are reachable, each with its own body cap.

    Any other HTTP request gets ``404`` before the framework sees it (cheaper than a framework's
    own lookup, and routes a library adds in a later version stay closed until listed), and so does
    any path with a ``..`` segment; websockets are closed unless ``websockets`` is on. Lifespan
    messages pass.
    """

    def __init__(self, app: ASGIApp, routes: tuple[AllowedRoute, ...], websockets: bool = False) -> None:
        self.app, self.routes, self.websockets = app, tuple(routes), websockets

    def route_of(self, method: str, path: str) -> AllowedRoute | None:
        """The first listed route that allows ``method`` on ``path`` (None: not allowed)."""
        if "/../" in path + "/" or "\x00" in path:
            return None
        return next((route for route in self.routes if route.matches(method, path)), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not self.websockets:
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.route_of(str(scope.get("method", "")), str(scope.get("path", "")))
        if route is None:
            await plain_response(send, 404, NOT_A_ROUTE)
            return
        await call_with_body_cap(self.app, scope, receive, send, route.max_body_bytes)


def posts_to(scope: Scope, paths: tuple[str, ...]) -> bool:
    """A POST to one of ``paths`` (exact, or every path under one ending in ``*``)."""
    if scope["type"] != "http" or scope.get("method") != "POST":
        return False
    path = str(scope.get("path", ""))
    return any(path.startswith(p[:-1]) if p.endswith("*") else path == p for p in paths)


class StructuredInputLimit:
    """ASGI middleware: a JSON request holding more than ``max_bytes`` outside its strings (lists,
    objects, numbers), or nesting deeper than ``max_depth``, gets ``413`` (so does a body that is
    JSON but not an object); text of any size (up to the body cap) passes.

    Gradio validates, copies and walks every nested value of an event's inputs on its event loop,
    about 0.5 ms per kB on this machine, and every session waits meanwhile; one string costs it
    almost nothing. The app's canvas therefore sends its journal as JSON text, and this refuses
    the expensive shape before Gradio parses it, without parsing it either (3.3 MB of nested JSON:
    ~10 ms here, against ~400 ms to parse and re-serialise it).
    """

    def __init__(self, app: ASGIApp, paths: tuple[str, ...], max_bytes: int, max_depth: int = 32) -> None:
        self.app = app
        self.paths = tuple(paths)
        self.max_bytes, self.max_depth = int(max_bytes), int(max_depth)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not posts_to(scope, self.paths):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:
            return  # the client went away
        problem = self.problem_of(body)
        if problem:
            await plain_response(send, 413, problem)
            return
        await self.app(scope, replaying(body, receive), send)

    def problem_of(self, body: bytes) -> str | None:
        """Why the request is too structured (None: it is not). Its strings are blanked first (one
        C-speed regex pass, ~3 ms per MB), so only the structure is ever parsed, and only when small."""
        structure = JSON_STRING.sub(b'""', body)
        if len(structure) > self.max_bytes:
            return f"request holds over {self.max_bytes} bytes of nested JSON: send large values as JSON text"
        if not structure.lstrip().startswith(b"{"):
            return "request body must be a JSON object"
        try:  # objects as lists of their values: blanked keys would otherwise collapse into one
            request = json.loads(structure, object_pairs_hook=lambda pairs: [v for _, v in pairs])
        except RecursionError:
            return f"request body nests deeper than {self.max_depth} levels (and deeper than Python's json parses)"
        except ValueError:
            return None  # not JSON: the framework refuses it itself, cheaply
        if nesting_depth(request) > self.max_depth:
            return f"request body nests deeper than {self.max_depth} levels"
        return None


JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string literal (unrolled: linear time)


def nesting_depth(value: Any) -> int:
    """Levels of lists and objects in a parsed JSON value (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, list | dict))
    return deepest
