"""A request body read up to a cap (the stroke route's and the Serve ingress's): refused past it, by
the declared length before reading and by the bytes received when there is no declared length."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from retrieval.serving.body_cap import BodyOverCap, capped_json

CAP = 64


async def echo(request: Request) -> JSONResponse:
    try:
        return JSONResponse({"got": await capped_json(request, CAP)})
    except BodyOverCap as exc:
        return JSONResponse({"error": str(exc)}, 413)
    except ValueError:
        return JSONResponse({"error": "not JSON"}, 400)


CLIENT = TestClient(Starlette(routes=[Route("/", echo, methods=["POST"])]))


def test_a_body_within_the_cap_is_parsed():
    answer = CLIENT.post("/", content=b'{"k": 3}')
    assert answer.status_code == 200 and answer.json() == {"got": {"k": 3}}


def test_a_declared_length_over_the_cap_is_refused_with_the_limit_named():
    answer = CLIENT.post("/", content=b"[" + b"1," * 40 + b"1]")
    assert answer.status_code == 413 and answer.json() == {"error": f"request body over the limit of {CAP} bytes"}


def test_a_chunked_body_is_cut_off_once_it_passes_the_cap():
    answer = CLIENT.post("/", content=iter([b"[1,"] * 30 + [b"1]"]))  # no Content-Length: streamed
    assert answer.status_code == 413


def test_a_body_that_is_not_json_is_a_value_error():
    assert CLIENT.post("/", content=b"{nope").status_code == 400
