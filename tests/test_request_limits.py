"""Request caps: bodies over the size cap (declared or streamed) and UI events with large nested inputs get 413."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from retrieval.request_limits import BodySizeLimit, StructuredInputLimit


async def echo_size(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


def _client(max_bytes: int) -> TestClient:
    app = Starlette(routes=[Route("/", echo_size, methods=["POST"])],
                    middleware=[Middleware(BodySizeLimit, max_bytes=max_bytes)])  # fmt: skip
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
    app = Starlette(routes=[Route("/join", echo_size, methods=["POST"]), Route("/other", echo_size, methods=["POST"])],
                    middleware=[Middleware(StructuredInputLimit, paths=("/join",), max_bytes=max_structured)])  # fmt: skip
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
