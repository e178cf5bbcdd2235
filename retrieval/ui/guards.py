"""What the app lets in: the allow-list of routes the page uses (each with its body cap), the
public API switch, the rate limit per address and per session, the per-client queue bound, the
ranking slots, and the request guards that enforce them in front of Gradio
(retrieval/ui/request_limits.py, rate_limits.py). docs/app.md has the table of routes and why each is open.
"""

from __future__ import annotations

from pathlib import Path

from starlette.middleware import Middleware

from retrieval.ui.config import AppConfig
from retrieval.ui.rate_limits import (
    HOLD_REFUSED_S,
    Bucket,
    Identity,
    OpenStreamLimit,
    QueuedLimit,
    RateLimit,
    no_identity,
)
from retrieval.ui.request_limits import AllowedRoute, RouteAllowList, Scope, StructuredInputLimit, client_address

APP_ROUTES = "/es/*"  # the app's own routes (session, stroke): outside Gradio's queue
EVENT_ROUTE = "/gradio_api/queue/join"  # where the page sends UI events
STREAM_ROUTES = ("/gradio_api/heartbeat/", "/gradio_api/queue/data")  # long-lived GETs, two per open tab
MAX_OPEN_STREAMS_PER_ADDRESS = 200  # 100 tabs behind one NAT; each stream holds a connection and a task
API_ROUTES = ("/gradio_api/call/*", "/gradio_api/run/*", "/gradio_api/api/*")  # named endpoints
LOGIN_BODY_BYTES = 4_096  # user and password of the login form
MAX_STRUCTURED_INPUT_BYTES = 64_000  # the page sends only scalars and text: nested inputs are never large
MAX_INPUT_DEPTH = 32  # the deepest input of the page or the API is a stroke's point: 5 levels


def api_enabled(config: AppConfig) -> bool:
    """The public ``rank`` endpoint: on in free mode, off in study and demo unless ``--api on``."""
    return config.api == "on" or (config.api == "auto" and config.mode == "free")


def rate_limited(config: AppConfig) -> bool:
    """The rate limit: on in study and demo, off in free mode unless ``--rate-limit on``."""
    return config.rate_limit == "on" or (config.rate_limit == "auto" and config.mode != "free")


def rank_slots(config: AppConfig) -> int:
    """Ranking events Gradio runs at once. With batching, enough callers must be inside the batcher
    for its ``concurrency`` workers to fill batches; they wait there, not in Gradio's queue."""
    return config.concurrency * max(1, config.batch)


def max_queued_per_client(config: AppConfig) -> int:
    """Events one address may have waiting in Gradio's queue: two per tab (a person's tab has at most
    two, ``always_last``) for as many tabs as the address's rate limit is sized for (a lab behind one
    NAT), and never more than half the queue, so no client fills it. Strokes take the app's own
    route, so only buttons wait here: at a quarter of the queue (32), 50 participants behind one
    address pressing Next together were refused (bench/results/hostile.md, c8)."""
    tabs = max(1, config.rate_limit_address_burst // max(1, config.rate_limit_burst))
    return max(4, min(config.max_queue // 2, 2 * tabs))


def allowed_routes(config: AppConfig, thumbnail_folder: Path) -> tuple[AllowedRoute, ...]:
    """Every route the page uses in free, demo and study mode (recorded in Chromium: tests/test_browser.py
    fails on any refused request), the login routes with ``--auth``, the API's with the API on."""
    body = config.max_body_bytes
    routes = [
        AllowedRoute.of("GET HEAD", "/", why="the page (its config is inlined)"),
        AllowedRoute.of("GET HEAD", "/assets/*", why="the page's scripts and styles (Gradio's static bundle)"),
        AllowedRoute.of("GET HEAD", "/static/*", why="Gradio's iframe-resizer script, loaded by the page"),
        AllowedRoute.of("GET HEAD", "/theme.css", why="the theme's styles"),
        AllowedRoute.of("GET HEAD", "/favicon.ico", why="browsers ask for it on every visit"),
        AllowedRoute.of(
            "GET", "/config", why="the page's layout as JSON: the scripted UI clients of tests and benches"
        ),
        AllowedRoute.of(
            "GET", "/gradio_api/info", why="readiness probe and API discovery (no endpoints with the API off)"
        ),
        AllowedRoute.of("GET", "/gradio_api/startup-events", why="launch() calls it once to run startup events"),
        AllowedRoute.of("GET", "/gradio_api/heartbeat/*", why="the page's keep-alive stream"),
        AllowedRoute.of("POST", EVENT_ROUTE, body, why="UI events: Start, strokes, panels, Next"),
        AllowedRoute.of("GET", "/gradio_api/queue/data", why="the stream of answers to UI events"),
        AllowedRoute.of("GET HEAD", f"/gradio_api/file={thumbnail_folder}/*", why="result thumbnails and targets"),
        AllowedRoute.of("GET POST", APP_ROUTES, body, why="the app's session and stroke routes"),
    ]
    if config.auth:
        routes += [
            AllowedRoute.of("POST", "/login", LOGIN_BODY_BYTES, why="the login form (--auth)"),
            AllowedRoute.of("GET", "/logout", why="log out (--auth)"),
        ]
    if api_enabled(config):
        routes += [AllowedRoute.of("GET POST", path, body, why="the public API (--api)") for path in API_ROUTES]
    return tuple(routes)


def queued_events(scope: Scope) -> int:
    """Events from this request's address waiting in Gradio's queue (read from Gradio 6's ``Queue``:
    ``event_queue_per_concurrency_id``; 0 before the queue exists)."""
    app = scope.get("app")
    queue = getattr(app.get_blocks(), "_queue", None) if hasattr(app, "get_blocks") else None
    if queue is None:
        return 0
    address = client_address(scope)
    waiting = (event for line in queue.event_queue_per_concurrency_id.values() for event in line.queue)
    return sum(1 for event in waiting if event.request is not None and client_address(event.request.scope) == address)


def middleware(config: AppConfig, thumbnail_folder: Path, identity: Identity = no_identity) -> list[Middleware]:
    """Request guards in front of Gradio, outermost first, cheapest refusals first: the allow-list
    with its body caps, the rate limit per address and per ``identity`` (the server-issued session),
    the per-address bound on open streams, the per-client queue bound, the nested-input cap."""
    work = (EVENT_ROUTE, APP_ROUTES, *API_ROUTES)
    guards = [Middleware(RouteAllowList, routes=allowed_routes(config, thumbnail_folder))]
    if rate_limited(config):
        per_identity = Bucket(config.rate_limit_burst, config.rate_limit_per_s)
        address = Bucket(config.rate_limit_address_burst, config.rate_limit_address_per_s)
        # With sessions issued, a request without one is a script: one browser's pace per address.
        anonymous = per_identity if identity is not no_identity else None
        limit = {"per_identity": per_identity, "address": address, "identity": identity, "anonymous": anonymous}
        limit["hold_refused_s"] = HOLD_REFUSED_S
        guards.append(Middleware(RateLimit, paths=work, **limit))
    guards.append(Middleware(OpenStreamLimit, paths=STREAM_ROUTES, max_open=MAX_OPEN_STREAMS_PER_ADDRESS))
    guards.append(
        Middleware(
            QueuedLimit,
            paths=(EVENT_ROUTE, *API_ROUTES),
            max_queued=max_queued_per_client(config),
            queued=queued_events,
        )
    )
    nested = {"max_bytes": MAX_STRUCTURED_INPUT_BYTES, "max_depth": MAX_INPUT_DEPTH}
    guards.append(Middleware(StructuredInputLimit, paths=(EVENT_ROUTE, *API_ROUTES), **nested))
    return guards
