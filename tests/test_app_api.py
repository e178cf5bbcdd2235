"""The named ``rank`` API of the running app: gradio_client and plain HTTP, valid and hostile payloads."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest

from tests.app_server import running_app

pytestmark = pytest.mark.slow  # a real app in a subprocess

gradio_client = pytest.importorskip("gradio_client")
AppError = pytest.importorskip("gradio_client.exceptions").AppError

SKETCH = {
    "canvas": {"width": 400, "height": 400},
    "strokes": [[[100, 80, 0], [110, 200, 40], [120, 320, 80]], [[100, 200, 500], [300, 205, 560, 0.7]]],
}


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("api")) as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url):
    return gradio_client.Client(app_url, verbose=False)


def _rank(client, sketch, k=5, target_id=None):
    return client.predict(sketch if isinstance(sketch, str) else json.dumps(sketch), k, target_id, api_name="/rank")


def test_valid_sketch_is_ranked(client):
    result = _rank(client, SKETCH, k=7)
    assert "batch_size" not in result and "queue" not in result["timings_ms"], "no other sessions' activity"
    assert len(result["ids"]) == 7 and len(set(result["ids"])) == 7
    assert all(isinstance(i, str) for i in result["ids"])
    assert result["scores"] == sorted(result["scores"], reverse=True)
    assert result["gallery_size"] == 60 and result["target_rank"] is None
    assert result["timings_ms"]["total"] > 0
    target = result["ids"][-1]
    with_target = _rank(client, SKETCH, k=3, target_id=target)
    assert 1 <= with_target["target_rank"] <= 60


HOSTILE = {
    "NaN coordinate": '{"canvas": {"width": 400, "height": 400}, "strokes": [[[1, NaN, 0]]]}',
    "huge point count": {"canvas": {"width": 400, "height": 400}, "strokes": [[[1, 2, 3]] * 9000] * 7},
    "wrong types": {"canvas": {"width": "wide", "height": 400}, "strokes": "abc"},
    "string points": {"canvas": {"width": 400, "height": 400}, "strokes": [[["1", "2", "3"]]]},
    "empty": "",
    "no strokes": {"canvas": {"width": 400, "height": 400}, "strokes": []},
    "truncated JSON": json.dumps(SKETCH)[:-9],
    "not an object": "[1, 2, 3]",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_bad_payloads_get_a_clear_error_and_the_server_keeps_serving(client, name):
    with pytest.raises(AppError, match="Invalid sketch"):
        _rank(client, HOSTILE[name])
    assert len(_rank(client, SKETCH, k=2)["ids"]) == 2, "server must keep serving after a bad payload"


def test_bad_k_and_unknown_target_are_errors(client):
    with pytest.raises(AppError, match="k must be"):
        _rank(client, SKETCH, k=0)
    with pytest.raises(AppError, match="not a photo id of the gallery"):
        _rank(client, SKETCH, target_id="no-such-photo")


def test_an_unhashable_target_id_is_a_clear_error(app_url):
    body = json.dumps({"data": [json.dumps(SKETCH), 4, ["a", "list"]]}).encode()
    stream = _call(app_url, body)
    assert "event: error" in stream and "not a photo id of the gallery" in stream, stream
    assert "unhashable" not in stream and "Traceback" not in stream


def test_a_request_body_over_the_cap_is_refused_before_it_is_read_and_the_server_keeps_serving(app_url, client):
    host, port = app_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        # Only the headers: a 5 MB body is announced but never sent, and the answer comes anyway.
        conn.sendall(
            f"POST /gradio_api/call/rank HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Content-Length: 5000000\r\n\r\n".encode()
        )
        answer = conn.recv(4096).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer
    assert len(_rank(client, SKETCH, k=2)["ids"]) == 2


def _call(app_url: str, body: bytes) -> str:
    """POST a call to ``rank`` and read its whole SSE answer."""
    request = urllib.request.Request(app_url + "/gradio_api/call/rank", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        event_id = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{app_url}/gradio_api/call/rank/{event_id}", timeout=60) as response:
        return response.read().decode()


def test_plain_http_call_endpoint(app_url):
    stream = _call(app_url, json.dumps({"data": [json.dumps(SKETCH), 4, None]}).encode())
    assert "event: complete" in stream, stream
    data = json.loads(stream.split("event: complete", 1)[1].split("data:", 1)[1].strip().splitlines()[0])
    assert len(data[0]["ids"]) == 4
