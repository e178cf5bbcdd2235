"""The request body cap: declared and streamed (chunked) bodies over it get 413, smaller ones pass."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from retrieval.request_limits import BodySizeLimit


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
