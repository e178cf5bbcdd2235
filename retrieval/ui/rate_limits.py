"""Rate limits, enforced before the web framework reads a request: ``429`` with ``Retry-After``.

- :class:`RateLimit`: token buckets per client address and per server-issued identity (the app's
  signed session), never keyed by a value the client writes in the body;
- :class:`QueuedLimit`: a client with many events already waiting in the server's queue.

    FastAPI(middleware=[Middleware(RateLimit, paths=("/es/*",), per_identity=Bucket(40, 2.0),
                                   address=Bucket(1000, 50.0), identity=request_identity)])
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from retrieval.ui.request_limits import ASGIApp, Receive, Scope, Send, client_address, plain_response, posts_to

Identity = Callable[[Scope], "str | None"]


def no_identity(scope: Scope) -> str | None:
    """The identity of a request when the app issues none: every request is charged to its address only."""
    return None


def too_many_requests(
    detail: str, wait_s: float, at_least_s: int = 1
) -> tuple[int, str, bytes, tuple[tuple[bytes, bytes], ...]]:
    """A ``429`` with ``Retry-After`` (whole seconds, at least ``at_least_s``) and a JSON ``detail``
    (the message the Gradio page shows)."""
    retry = ((b"retry-after", str(max(at_least_s, math.ceil(wait_s))).encode()),)
    return 429, json.dumps({"detail": detail}), b"application/json", retry


# Defaults of the app's rate limit per identity (one browser). Replayed through this bucket, none of
# 9,570 Quick, Draw! drawings with real timing (one request per stroke) is refused: the busiest (55
# strokes in 20 s, 14 in one second) keeps 15 tokens. Strokes every 150 ms (the fastest pen-up gap,
# p10) pass up to 56 in a row, more than any of those drawings has; a client that keeps sending 4
# events a second gets 2 a second through once its first 40 are spent.
RATE_BURST = 40
RATE_PER_S = 2.0
# Per address: what 40 browsers at the per-identity limit would get. A lab or a conference demo
# behind one NAT is one address: 30 honest participants drawing at once send about 28 requests a
# second from it on the stroke route (bench/results/hostile.md, c0), which 10 browsers' worth
# (20/s) refused after the burst, costing honest strokes 1-7 s of retries. It also bounds one
# stranger on one address: a stroke costs the 2-core server ~12 ms of CPU on the stroke route
# (bench/results/stroke_route.md), so 80 a second is at most half its capacity.
ADDRESS_TABS = 40
ADDRESS_BURST = ADDRESS_TABS * RATE_BURST
ADDRESS_PER_S = ADDRESS_TABS * RATE_PER_S
# A refused request is answered when its client may try again (at most this long), not at once: a
# client sending as fast as it is answered then sends at the pace it is allowed. Answered at once, a
# flood of refusals cost the server ~0.3 ms of CPU each, and one address sending ~2,000 a second over
# 8 connections put honest p95 at x2.5 (a 4-participant bench_hostile check, not committed); with the
# hold, bench/results/hostile.md's rotating identities are at x0.92 and ~35 requests a second.
HOLD_REFUSED_S = 2.0
# Refusals held per address: past this many an address's requests are refused at once (a client
# with more connections than a browser's handful is not waiting for answers anyway).
MAX_HELD_PER_ADDRESS = 64


@dataclass(frozen=True)
class Bucket:
    """A token bucket's size: ``burst`` tokens, refilled at ``per_s`` a second."""

    burst: int
    per_s: float

    def __post_init__(self) -> None:
        if not self.per_s > 0 or self.burst < 1:
            raise ValueError(f"a bucket needs per_s > 0 and burst >= 1; got {self.per_s}, {self.burst}")


class RateLimit:
    """ASGI middleware: token buckets per client address and per server-issued identity.

    Each POST to one of ``paths`` takes a token from its address's bucket (``address``) and, when
    ``identity(scope)`` names a verified identity (the app's signed session), from that identity's
    bucket (``per_identity``) too; a request without one takes a token from its address's
    ``anonymous`` bucket instead, when there is one (once the app issues sessions, every page has
    one: what comes without is a script, allowed one browser's pace per address). With any of them
    empty the answer is ``429`` with ``Retry-After`` and a JSON ``detail``, before anything reads the
    body. Nothing the client writes in the body picks a bucket, so rotating or planting
    ``session_hash`` values gets no fresh tokens. At most ``max_clients`` buckets are kept, the
    least recently used dropped first.
    """

    def __init__(
        self,
        app: ASGIApp,
        paths: tuple[str, ...],
        per_identity: Bucket,
        address: Bucket,
        identity: Identity = no_identity,
        anonymous: Bucket | None = None,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        hold_refused_s: float = 0.0,
        max_held_per_address: int = MAX_HELD_PER_ADDRESS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        self.app, self.paths, self.identity, self.clock = app, tuple(paths), identity, clock
        self.per_identity, self.address, self.anonymous = per_identity, address, anonymous
        self.max_clients = int(max_clients)
        self.buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()  # key -> (tokens, time)
        self.hold_refused_s, self.max_held, self.sleep = float(hold_refused_s), int(max_held_per_address), sleep
        self.held: dict[str, int] = {}  # address -> refusals being held

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not posts_to(scope, self.paths):
            await self.app(scope, receive, send)
            return
        address = client_address(scope)
        wait_s = self.take(address, self.identity(scope))
        if wait_s:
            wait_s -= await self.hold(address, wait_s)
            message = f"Too many requests from this browser or network: wait {wait_s:.1f} s and try again."
            await plain_response(send, *too_many_requests(message, wait_s, at_least_s=0))
            return
        await self.app(scope, receive, send)

    async def hold(self, address: str, wait_s: float) -> float:
        """Hold a refusal until its client may try again (at most ``hold_refused_s``), unless
        ``address`` already has ``max_held_per_address`` held; the seconds held."""
        held_s = min(wait_s, self.hold_refused_s)
        if held_s <= 0 or self.held.get(address, 0) >= self.max_held:
            return 0.0
        self.held[address] = self.held.get(address, 0) + 1
        try:
            await self.sleep(held_s)
        finally:
            self.held[address] -= 1
            if not self.held[address]:
                del self.held[address]
        return held_s

    def take(self, address: str, identity: str | None = None) -> float:
        """Charge one request to ``address`` (and ``identity``): 0.0 when every bucket had a token,
        else the seconds until they all have one (and nothing is taken)."""
        now = self.clock()
        charged = {("address", address): self.address}
        if identity is not None:
            charged[("identity", identity)] = self.per_identity
        elif self.anonymous is not None:
            charged[("anonymous", address)] = self.anonymous
        tokens = {}
        for key, size in charged.items():
            held, stamp = self.buckets.pop(key, (float(size.burst), now))
            tokens[key] = min(float(size.burst), held + (now - stamp) * size.per_s)
        wait_s = max(max(0.0, 1 - tokens[key]) / size.per_s for key, size in charged.items())
        for key, held in tokens.items():
            self.buckets[key] = (held if wait_s else held - 1, now)
        while len(self.buckets) > self.max_clients:
            self.buckets.popitem(last=False)
        return wait_s


class QueuedLimit:
    """ASGI middleware: a POST to one of ``paths`` from a client that already has ``max_queued``
    events waiting (``queued(scope)``: the server's own count) gets ``429``, so no client fills
    the shared queue and answers nobody reads cannot pile up without bound."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...], max_queued: int, queued: Callable[[Scope], int]) -> None:
        if max_queued < 1:
            raise ValueError(f"max_queued must be >= 1, got {max_queued}")
        self.app, self.paths, self.max_queued, self.queued = app, tuple(paths), int(max_queued), queued

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if posts_to(scope, self.paths) and self.queued(scope) >= self.max_queued:
            message = f"{self.max_queued} of this client's events are still waiting: try again when they are answered."
            await plain_response(send, *too_many_requests(message, 1.0))
            return
        await self.app(scope, receive, send)


class OpenStreamLimit:
    """ASGI middleware: a GET to one of ``paths`` (long-lived streams: keep-alive, answers) from an
    address that already holds ``max_open`` of them open gets ``429``, so one client cannot tie up
    the server's connections and tasks with streams nobody reads."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...], max_open: int) -> None:
        if max_open < 1:
            raise ValueError(f"max_open must be >= 1, got {max_open}")
        self.app, self.paths, self.max_open = app, tuple(paths), int(max_open)
        self.open: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or scope.get("method") != "GET" or not path.startswith(self.paths):
            await self.app(scope, receive, send)
            return
        address = client_address(scope)
        if self.open.get(address, 0) >= self.max_open:
            message = f"{self.max_open} streams are open from this network: close some and try again."
            await plain_response(send, *too_many_requests(message, 1.0))
            return
        self.open[address] = self.open.get(address, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open[address] -= 1
            if not self.open[address]:
                del self.open[address]
