"""Request caps: bodies over the size cap (declared or streamed) and UI events with large nested inputs get
413; a tab sending events faster than a person draws gets 429."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from retrieval.serving.request_limits import (
    RATE_BURST,
    RATE_PER_S,
    BodySizeLimit,
    RateLimit,
    StructuredInputLimit,
    session_of,
)
from tests.conftest import shared_path


async def echo_size(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


def _client(max_bytes: int) -> TestClient:
    app = Starlette(
        routes=[Route("/", echo_size, methods=["POST"])], middleware=[Middleware(BodySizeLimit, max_bytes=max_bytes)]
    )
    return TestClient(app)


def test_bodies_up_to_the_cap_pass_and_larger_declared_ones_are_refused():
    client = _client(1000)
    assert client.post("/", content=b"x" * 1000).text == "1000"
    refused = client.post("/", content=b"x" * 1001)
    assert refused.status_code == 413 and "over the limit of 1000 bytes" in refused.text


def test_a_streamed_body_without_length_is_cut_off_at_the_cap():
    def chunks():
        for _ in range(100):
            yield b"y" * 100

    assert _client(100_000).post("/", content=chunks()).text == "10000"
    assert _client(5000).post("/", content=chunks()).status_code == 413


def _join_client(max_structured: int) -> TestClient:
    app = Starlette(
        routes=[Route("/join", echo_size, methods=["POST"]), Route("/other", echo_size, methods=["POST"])],
        middleware=[Middleware(StructuredInputLimit, paths=("/join",), max_bytes=max_structured)],
    )
    return TestClient(app)


def test_event_inputs_with_large_nested_json_are_refused_and_the_same_data_as_text_passes():
    journal = {"events": [{"seq": i, "points": [[1, 2, 3]] * 5} for i in range(100)]}
    client = _join_client(1000)
    refused = client.post("/join", json={"data": [journal, None], "fn_index": 1})
    assert refused.status_code == 413 and "send large values as JSON text" in refused.text
    as_text = json.dumps({"data": [json.dumps(journal), None], "fn_index": 1}).encode()
    assert client.post("/join", content=as_text).text == str(len(as_text)), "the app reads the body intact"
    assert client.post("/join", json={"data": [{"small": [1, 2]}], "event_data": None}).status_code == 200
    assert client.post("/other", json={"data": [journal]}).status_code == 200, "only the listed paths are checked"
    assert client.post("/join", content=b"[" * 50_000).status_code == 200, "not parseable: left to the app"


# --- the per-tab rate limit ----------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limited_client(clock: FakeClock, per_s: float = RATE_PER_S, burst: int = RATE_BURST) -> TestClient:
    app = Starlette(
        routes=[Route("/join", echo_size, methods=["POST"]), Route("/other", echo_size, methods=["POST"])],
        middleware=[Middleware(RateLimit, paths=("/join",), per_s=per_s, burst=burst, clock=clock)],
    )
    return TestClient(app)


def _join(client: TestClient, session: str, **extra):
    return client.post("/join", json={"data": ["{}", None], "fn_index": 3, "session_hash": session, **extra})


def test_a_burst_from_one_tab_gets_429_while_another_tab_at_the_fastest_human_pace_is_never_refused():
    clock = FakeClock()
    client = _limited_client(clock)
    flood, human = [], []
    for step in range(400):  # 20 s: the flood sends every 50 ms; the person every 150 ms for 8 s, then every 600 ms
        clock.now += 0.05
        flood.append(_join(client, "attacker").status_code)
        if step % (3 if step < 160 else 12) == 0:
            human.append(_join(client, "person").status_code)
    assert set(human) == {200} and len(human) > RATE_BURST + 10
    assert flood[:RATE_BURST] == [200] * RATE_BURST, "a burst of RATE_BURST passes"
    assert flood.count(200) <= RATE_BURST + RATE_PER_S * 20 + 1 and flood.count(429) > 250
    refused = _join(client, "attacker")
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "Too many requests" in refused.json()["detail"], "the page shows the detail"
    clock.now += 1 / RATE_PER_S
    assert _join(client, "attacker").status_code == 200, "a token again after Retry-After"
    assert client.post("/other", json={"session_hash": "attacker"}).status_code == 200, "only the listed paths"


def test_the_bucket_key_is_the_session_of_the_body_and_a_planted_copy_does_not_borrow_one():
    clock = FakeClock()
    client = _limited_client(clock, per_s=0.001, burst=2)
    assert [_join(client, "victim").status_code for _ in range(3)] == [200, 200, 429]
    # a nested "session_hash" inside the inputs: the body has no (single) session, so the address's own bucket
    planted = {"data": [{"session_hash": "fresh"}], "fn_index": 3, "session_hash": "fresh"}
    assert [client.post("/join", json=planted).status_code for _ in range(3)] == [200, 200, 429]
    assert _join(client, "fresh").status_code == 200, "a new tab has its own bucket"
    escaped = json.dumps({"data": ['{"session_hash": "other"}'], "session_hash": "own"}).encode()
    assert session_of(escaped) == "own", "a quoted copy inside a text input is not a key"
    assert session_of(b"[" * 1000) is None and session_of(b'{"session_hash": 5}') is None


def test_the_bucket_table_is_bounded():
    limit = RateLimit(lambda *a: None, paths=("/join",), per_s=1.0, burst=3, max_clients=100, clock=FakeClock())
    for i in range(1000):
        assert limit.take(("10.0.0.1", f"tab{i}")) == 0.0
    assert len(limit.buckets) == 100


def test_no_quickdraw_drawing_is_refused_by_the_default_limit():
    """Real people: every Quick, Draw! drawing's stroke ends (one request each) through one default bucket."""
    folder = shared_path("quickdraw-raw")
    drawings = 0
    for path in sorted(folder.glob("*.ndjson")):
        for line in path.read_text().splitlines():
            ends = sorted(stroke[2][-1] / 1e3 for stroke in json.loads(line)["drawing"] if stroke[2])
            clock = FakeClock()
            limit = RateLimit(lambda *a: None, paths=("/",), per_s=RATE_PER_S, burst=RATE_BURST, clock=clock)
            for t in ends:
                clock.now = 1000.0 + t
                assert limit.take(("", "")) == 0.0, f"{path.name}: refused at {t:.2f} s of {ends}"
            drawings += 1
    assert drawings > 9000
