"""The app's request guards as configured (``retrieval/ui/guards.py``), in front of a stand-in for
Gradio that records what reaches it: only the page's routes pass, every body is capped before it is
read, large or deep nested inputs are refused on every route that parses them, and the rate limit
charges the address and the server-issued identity, never a body field.

The identity here is a stand-in for the app's signed session cookie: ``<id>.<HMAC-SHA256(key, id)>``
in the ``es_session`` cookie, verified with a key only the server holds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import replace
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from retrieval.ui.config import AppConfig
from retrieval.ui.guards import MAX_STRUCTURED_INPUT_BYTES, allowed_routes, max_queued_per_client, middleware

THUMBS = Path("/cache/thumbs/0123456789abcdef")
STUDY = AppConfig(mode="study", study="study.json")
FREE = AppConfig(mode="free")
SERVER_KEY = secrets.token_bytes(32)


def signed(session: str, key: bytes = SERVER_KEY) -> str:
    return f"{session}.{hmac.new(key, session.encode(), hashlib.sha256).hexdigest()}"


def verified_session(scope) -> str | None:
    """The stand-in ``request_identity``: the cookie's session id when its signature is the server's."""
    cookie = SimpleCookie(dict(scope.get("headers") or []).get(b"cookie", b"").decode("latin-1"))
    session, _, mac = cookie["es_session"].value.rpartition(".") if "es_session" in cookie else ("", "", "")
    good = hmac.new(SERVER_KEY, session.encode(), hashlib.sha256).hexdigest()
    return session if session and hmac.compare_digest(mac, good) else None


class Recorder:
    """Stands in for Gradio: answers 200 to anything and records each request it saw (and its body size)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []

    async def handle(self, request: Request) -> PlainTextResponse:
        body = await request.body()
        self.seen.append((request.method, request.url.path, len(body)))
        return PlainTextResponse("reached")


def guarded(config: AppConfig, identity=None) -> tuple[TestClient, Recorder]:
    recorder = Recorder()
    everything = Route("/{path:path}", recorder.handle, methods=["GET", "HEAD", "POST", "PUT", "DELETE"])
    kwargs = {"identity": identity} if identity else {}
    app = Starlette(routes=[everything], middleware=middleware(config, THUMBS, **kwargs))
    return TestClient(app, client=("203.0.113.7", 50000)), recorder


def event(**extra) -> dict:
    return {"data": ['{"events": []}', None], "event_data": None, "fn_index": 3, "session_hash": "tab1", **extra}


PAGE_REQUESTS = [  # recorded from the page in Chromium (free, demo and study)
    ("GET", "/"),
    ("GET", "/assets/index-DphvyggB.js"),
    ("GET", "/static/js/iframeResizer.contentWindow.min.js"),
    ("GET", "/theme.css"),
    ("GET", "/gradio_api/heartbeat/4cej9h69kvo"),
    ("GET", "/gradio_api/queue/data?session_hash=4cej9h69kvo"),
    ("GET", f"/gradio_api/file={THUMBS}/00af3c.jpg"),
    ("GET", "/config"),
    ("GET", "/gradio_api/info"),
    ("GET", "/gradio_api/startup-events"),
]
CLOSED = [
    ("POST", "/gradio_api/component_server"),
    ("POST", "/gradio_api/upload"),
    ("GET", "/gradio_api/upload_progress?upload_id=x"),
    ("POST", "/gradio_api/process_recording"),
    ("GET", "/gradio_api/file=/etc/passwd"),
    ("GET", f"/gradio_api/file={THUMBS}/../../photos/secret.jpg"),
    ("GET", f"/gradio_api/file={THUMBS}x/y.jpg"),
    ("GET", "/gradio_api/proxy=http://example.com/"),
    ("POST", "/gradio_api/cancel"),
    ("POST", "/gradio_api/reset"),
    ("POST", "/gradio_api/stream/abc"),
    ("GET", "/gradio_api/openapi.json"),
    ("GET", "/gradio_api/runs"),
    ("GET", "/monitoring"),
    ("POST", "/login"),
    ("DELETE", "/"),
    ("POST", "/gradio_api/call/rank"),
    ("GET", "/gradio_api/call/rank/abc"),
]


@pytest.mark.parametrize("config", [STUDY, replace(STUDY, mode="demo")], ids=["study", "demo"])
def test_only_the_pages_routes_reach_gradio_and_everything_else_is_404(config):
    client, recorder = guarded(config)
    for method, path in PAGE_REQUESTS:
        assert client.request(method, path).status_code == 200, path
    assert client.post("/gradio_api/queue/join", json=event()).status_code == 200
    assert client.post("/es/stroke", json={"seq": 1}).status_code == 200, "the app's own routes"
    reached = len(recorder.seen)
    for method, path in CLOSED:
        refused = client.request(method, path)
        assert refused.status_code == 404 and refused.text == "not a route of this app", (method, path)
    assert len(recorder.seen) == reached, "no closed route reached Gradio"


def test_the_api_and_login_routes_open_only_when_switched_on():
    client, recorder = guarded(replace(FREE, auth="user:pass"))
    assert client.post("/gradio_api/call/rank", json={"data": ["{}", 5, None]}).status_code == 200
    assert client.get("/gradio_api/call/rank/abc").status_code == 200
    assert client.post("/login", data={"username": "user", "password": "pass"}).status_code == 200
    assert client.post("/login", content=b"x" * 5000).status_code == 413, "a login form is small"
    assert client.post("/gradio_api/component_server", json={}).status_code == 404
    assert [path for _, path, _ in recorder.seen] == ["/gradio_api/call/rank", "/gradio_api/call/rank/abc", "/login"]
    routes = allowed_routes(STUDY, THUMBS)
    assert all(route.why for route in routes), "docs/app.md's table says why each route is open"


def test_every_body_is_capped_before_it_is_read_declared_or_chunked():
    client, recorder = guarded(replace(STUDY, max_body_bytes=10_000))

    def chunks(n: int):
        for _ in range(n):
            yield b'{"data": [' + b" " * 990 + b"]}"[:0] + b" " * 10

    assert client.post("/gradio_api/queue/join", content=b" " * 10_001).status_code == 413, "declared"
    chunked = client.post("/gradio_api/queue/join", content=chunks(100))  # no Content-Length: streamed
    assert chunked.status_code == 413 and "over the limit of 10000 bytes" in chunked.text
    assert client.post("/es/stroke", content=chunks(100)).status_code == 413, "the app's routes too"
    assert client.request("GET", "/config", content=b"x").status_code == 413, "GET routes take no body"
    assert all(size <= 10_000 for _, _, size in recorder.seen), "no oversized body was read whole"


@pytest.mark.parametrize("route", ["/gradio_api/queue/join", "/gradio_api/call/rank", "/gradio_api/run/rank"])
def test_large_or_deep_nested_json_is_refused_on_every_route_that_parses_it(route):
    client, recorder = guarded(FREE)
    journal = {"events": [{"seq": i, "points": [[1.5, 2.5, 3.5, 0.5]] * 50} for i in range(3000)]}
    assert len(json.dumps(journal)) > 3_000_000 > MAX_STRUCTURED_INPUT_BYTES
    big = client.post(route, json=event(data=[journal, 5, None]))
    assert big.status_code == 413 and "nested JSON" in big.text
    deep = client.post(route, json=event(data=[json.loads("[" * 200 + "]" * 200), 5, None]))
    assert deep.status_code == 413 and "deeper" in deep.text
    assert recorder.seen == [], "Gradio parsed none of them"
    assert client.post(route, json=event(data=[json.dumps(journal)[:100_000], 5, None])).status_code == 200


def test_rotating_or_planted_session_hashes_get_no_fresh_tokens():
    client, recorder = guarded(replace(STUDY, rate_limit_address_burst=5, rate_limit_address_per_s=0.001))
    codes = [client.post("/gradio_api/queue/join", json=event(session_hash=f"tab{i}")).status_code for i in range(6)]
    assert codes == [200] * 5 + [429], "a fresh session_hash per request is the same address"
    decoy = b'{"session_hash": "fresh-decoy", "data": ["{}", null], "fn_index": 3, "session_hash": "tab9"}'
    refused = client.post("/gradio_api/queue/join", content=decoy)
    assert refused.status_code == 429 and "Too many requests" in refused.json()["detail"]
    assert len(recorder.seen) == 5


def test_the_rate_limit_charges_the_verified_identity_and_a_forged_one_only_its_address():
    config = replace(
        STUDY, rate_limit_burst=3, rate_limit_per_s=0.001, rate_limit_address_burst=8, rate_limit_address_per_s=0.001
    )
    client, _ = guarded(config, identity=verified_session)

    def stroke(cookie: str) -> int:
        return client.post("/es/stroke", json={"seq": 1}, headers={"cookie": f"es_session={cookie}"}).status_code

    assert [stroke(signed("alice")) for _ in range(4)] == [200, 200, 200, 429], "alice's own bucket"
    assert stroke(signed("bob")) == 200, "another person behind the same address is served"
    forged = [stroke(signed(f"mallory{i}", key=b"guessed")) for i in range(4)]
    assert forged == [200, 200, 200, 429], "no verified session: one browser's allowance for the whole address"
    assert [stroke(signed("carol")), stroke(signed("dave"))] == [200, 429], "then the address's 8 are spent"


def test_one_address_may_queue_two_events_per_tab_of_its_rate_limit_but_never_half_the_queue():
    defaults = AppConfig()
    tabs = defaults.rate_limit_address_burst // defaults.rate_limit_burst
    assert max_queued_per_client(defaults) == min(2 * tabs, defaults.max_queue // 2)
    assert max_queued_per_client(defaults) >= 2 * 50 * 0.8  # 50 participants behind one NAT: was 32, refused 4 of them
    assert max_queued_per_client(replace(defaults, max_queue=40)) == 20
    assert max_queued_per_client(replace(defaults, rate_limit_address_burst=defaults.rate_limit_burst)) == 4
