"""Request caps: bodies over the size cap (declared or streamed) and UI events with large or deep nested
inputs get 413; a browser or address sending events faster than people draw gets 429, and so does a
client with too many events waiting."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from retrieval.ui.rate_limits import (
    ADDRESS_BURST,
    ADDRESS_PER_S,
    RATE_BURST,
    RATE_PER_S,
    Bucket,
    OpenStreamLimit,
    QueuedLimit,
    RateLimit,
    no_identity,
)
from retrieval.ui.request_limits import BodySizeLimit, StructuredInputLimit


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
    assert client.post("/join", content=b'{"data": [1, 2').status_code == 200, "not JSON: left to the app"


def test_deeply_nested_inputs_are_refused_whether_or_not_json_can_parse_them():
    client = _join_client(1_000_000)
    deep = {"data": [json.loads("[" * 40 + "]" * 40)], "fn_index": 1}
    refused = client.post("/join", json=deep)
    assert refused.status_code == 413 and "nests deeper than 32 levels" in refused.text
    too_deep_to_parse = client.post("/join", content=b'{"data": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")
    assert too_deep_to_parse.status_code == 413 and "nests deeper" in too_deep_to_parse.text
    assert client.post("/join", content=b"[[1]]").status_code == 413, "not a JSON object"
    shallow = {"data": [[[[[1, 2, 3]]]]], "fn_index": 1}
    assert client.post("/join", json=shallow).status_code == 200


# --- the rate limit: per address and per server-issued identity -----------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


PERSON = Bucket(RATE_BURST, RATE_PER_S)
NETWORK = Bucket(ADDRESS_BURST, ADDRESS_PER_S)


def _limited_client(clock: FakeClock, identity=no_identity, person=PERSON, network=NETWORK) -> TestClient:
    limit = {"per_identity": person, "address": network, "identity": identity, "clock": clock}
    app = Starlette(
        routes=[Route("/join", echo_size, methods=["POST"]), Route("/other", echo_size, methods=["POST"])],
        middleware=[Middleware(RateLimit, paths=("/join",), **limit)],
    )
    return TestClient(app)


def _by_header(scope) -> str | None:
    """Tests' identity: the ``x-test-identity`` header (the app's is a signed cookie: tests/test_guards.py)."""
    return dict(scope["headers"]).get(b"x-test-identity", b"").decode() or None


def _join(client: TestClient, who: str):
    return client.post("/join", json={"data": ["{}", None], "fn_index": 3}, headers={"x-test-identity": who})


@pytest.mark.slow
def test_a_burst_from_one_browser_gets_429_while_another_at_the_fastest_human_pace_is_never_refused():
    clock = FakeClock()
    client = _limited_client(clock, identity=_by_header)
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
    assert client.post("/other", headers={"x-test-identity": "attacker"}).status_code == 200, "only the listed paths"


@pytest.mark.slow
def test_every_request_is_charged_to_its_address_so_new_identities_and_body_fields_get_no_fresh_tokens():
    clock = FakeClock()
    client = _limited_client(clock, identity=_by_header, network=Bucket(5, 0.001))
    codes = [_join(client, f"identity-{i}").status_code for i in range(7)]
    assert codes == [200] * 5 + [429] * 2, "a fresh identity per request still pays its address's tokens"
    body = {"data": ["{}"], "fn_index": 3, "session_hash": "fresh", "event_data": {"session_hash": "decoy"}}
    assert client.post("/join", json=body).status_code == 429, "body fields pick no bucket"


def test_a_refused_request_takes_no_token_from_the_other_bucket():
    limit = RateLimit(lambda *a: None, ("/join",), per_identity=Bucket(2, 0.001), address=Bucket(10, 0.001))
    assert [limit.take("10.0.0.1", "tab") == 0.0 for _ in range(3)] == [True, True, False]
    others = [limit.take("10.0.0.1", f"other{i // 2}") == 0.0 for i in range(9)]
    assert others == [True] * 8 + [False], "the refusal above left the address its 8 other tokens"


def test_the_bucket_table_is_bounded():
    limit = RateLimit(lambda *a: None, ("/join",), per_identity=PERSON, address=NETWORK, max_clients=100)
    for i in range(1000):
        assert limit.take(f"10.0.{i // 256}.{i % 256}", f"tab{i}") == 0.0
    assert len(limit.buckets) == 100


def test_no_quickdraw_drawing_is_refused_by_the_default_limit(shared_data):
    """Real people: every Quick, Draw! drawing's stroke ends (one request each) through one default bucket."""
    folder = shared_data("quickdraw-raw")
    drawings = 0
    for path in sorted(folder.glob("*.ndjson")):
        for line in path.read_text().splitlines():
            ends = sorted(stroke[2][-1] / 1e3 for stroke in json.loads(line)["drawing"] if stroke[2])
            clock = FakeClock()
            limit = RateLimit(lambda *a: None, ("/",), per_identity=PERSON, address=NETWORK, clock=clock)
            for t in ends:
                clock.now = 1000.0 + t
                assert limit.take("", "person") == 0.0, f"{path.name}: refused at {t:.2f} s of {ends}"
            drawings += 1
    assert drawings > 9000


def test_a_refusal_is_answered_when_its_client_may_try_again_and_only_so_many_are_held_per_address():
    held: list[float] = []
    release = asyncio.Event()

    async def sleep(seconds: float) -> None:  # stands in for the wait: records it, returns when released
        held.append(seconds)
        await release.wait()

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limit = RateLimit(
        app, ("/join",), per_identity=PERSON, address=Bucket(1, 0.25), hold_refused_s=2.0, max_held_per_address=2,
        sleep=sleep,
    )  # fmt: skip

    async def post(address: str) -> tuple[int, dict[str, str]]:
        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        async def receive():
            return {"type": "http.request", "body": b"{}", "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/join", "headers": [], "client": (address, 1)}
        await limit(scope, receive, send)
        return sent[0]["status"], {k.decode(): v.decode() for k, v in sent[0].get("headers", [])}

    async def flood() -> list[tuple[int, dict[str, str]]]:
        assert (await post("10.0.0.1"))[0] == 200, "its one token"
        waiting = [asyncio.create_task(post("10.0.0.1")) for _ in range(2)]
        await asyncio.sleep(0)
        at_once = await post("10.0.0.1")  # a third refusal while two are held: answered at once
        assert not any(task.done() for task in waiting), "held until the client may try again"
        release.set()
        return [*(await asyncio.gather(*waiting)), at_once]

    first, second, at_once = asyncio.run(flood())
    assert held == [2.0, 2.0], "each held at most hold_refused_s of the 4 s its address must wait"
    assert first[0] == second[0] == at_once[0] == 429
    assert first[1]["retry-after"] == "2", "what is left of the wait after the hold"
    assert at_once[1]["retry-after"] == "4", "not held: the whole wait"
    assert limit.held == {}, "nothing is held once answered"


# --- the per-client queue bound --------------------------------------------------------------------
def test_a_client_with_max_queued_events_waiting_gets_429_and_others_pass():
    waiting = {"10.0.0.1": 3, "10.0.0.2": 2}
    app = Starlette(
        routes=[Route("/join", echo_size, methods=["POST"])],
        middleware=[Middleware(QueuedLimit, paths=("/join",), max_queued=3, queued=lambda s: waiting[s["client"][0]])],
    )
    full = TestClient(app, client=("10.0.0.1", 5000)).post("/join", content=b"{}")
    assert full.status_code == 429 and "still waiting" in full.json()["detail"]
    assert TestClient(app, client=("10.0.0.2", 5000)).post("/join", content=b"{}").status_code == 200


# --- open streams per address ----------------------------------------------------------------------
def test_an_address_with_max_open_streams_gets_429_until_one_closes():
    release = asyncio.Event()

    async def stream(scope, receive, send):  # a keep-alive stream: open until released
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await release.wait()
        await send({"type": "http.response.body", "body": b""})

    limit = OpenStreamLimit(stream, paths=("/heartbeat/",), max_open=2)

    async def get(address: str, path: str = "/heartbeat/tab") -> int:
        sent = []

        async def send(message):
            sent.append(message)

        async def receive():
            return {"type": "http.disconnect"}

        scope = {"type": "http", "method": "GET", "path": path, "client": (address, 1), "headers": []}
        task = asyncio.ensure_future(limit(scope, receive, send))
        await asyncio.sleep(0)
        return sent[0]["status"], task

    async def run():
        first = [await get("10.0.0.1") for _ in range(3)]
        other = await get("10.0.0.2")
        release.set()
        await asyncio.gather(*(task for _, task in [*first, other]))
        again = await get("10.0.0.1")
        await again[1]
        return [status for status, _ in first], other[0], again[0], dict(limit.open)

    statuses, other, again, still_open = asyncio.run(run())
    assert statuses == [200, 200, 429] and other == 200, "the third stream of one address is refused, not another's"
    assert again == 200 and still_open == {}, "closed streams are counted out"
