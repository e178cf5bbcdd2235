"""Server-side limits of the running app: the queue cap, the API's own slot in study mode, and
errors that never show server paths. One study-mode app whose log folder cannot be created
(a file stands in its way), with ``--api on`` and a one-event queue."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json

import httpx
import pytest

from harness.api_client import ApiError, call_rank
from harness.ui_client import UiApp, UiError, UiSession
from tests.app_server import running_app

pytestmark = pytest.mark.slow  # real apps in subprocesses

ADDRESS_BURST = 30  # this module's app: one address (the tests') may send 30 events in a row
SKETCH = {
    "canvas": {"width": 400, "height": 400},
    "strokes": [[[10 + i % 300, 20 + (i * 7) % 300, i] for i in range(2000)] for _ in range(4)],
}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limits")
    blocker = tmp / "not-a-folder"
    blocker.write_text("a file where the log folder should be")
    study = tmp / "study.json"
    study.write_text(json.dumps({"random_targets": 2, "num_trials": 2, "time_limit_s": 0}))
    args = [
        "--mode",
        "study",
        "--study",
        str(study),
        "--log-dir",
        str(blocker / "logs"),
        "--api",
        "on",
        "--max-queue",
        "1",
        "--concurrency",
        "1",
        "--batch",
        "1",
        "--rate-limit-address-burst",
        str(ADDRESS_BURST),
        "--rate-limit-address-per-s",
        "0.5",
    ]
    with running_app(tmp, *args) as url:
        yield url, str(tmp)


def test_a_log_folder_that_cannot_be_made_is_a_clear_error_without_server_paths(app):
    url, tmp = app

    async def start() -> str:
        async with httpx.AsyncClient(trust_env=False) as client:
            ui = await UiApp.connect(client, url)
            with pytest.raises(UiError) as failed:
                await UiSession(client, ui).call(
                    ui.event("Start", "click"), {"Participant id": "P1", "Session id": "S1"}
                )
            return str(failed.value)

    message = asyncio.run(start())
    assert "study log cannot be written" in message, message
    assert tmp not in message and "Errno" not in message, "server paths stay in the server's console"


def test_the_event_queue_is_capped_and_the_server_keeps_serving(app):
    url, _ = app
    payload = json.dumps(SKETCH)

    def one_call() -> str:
        with httpx.Client(trust_env=False) as client:
            try:
                call_rank(client, url, payload, k=3)
                return "ok"
            except ApiError as exc:
                return str(exc)
            except httpx.HTTPStatusError as exc:  # refused at the door: Gradio answers 503 when its queue is full
                return f"{exc.response.status_code} {exc.response.text}"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: one_call(), range(8)))
    assert "ok" in outcomes
    assert any(o.startswith("503") and "queue is full" in o.lower() for o in outcomes), outcomes
    with httpx.Client(trust_env=False) as client:
        answer = call_rank(client, url, payload, k=3)
    assert len(answer["ids"]) == 3 and "batch_size" not in answer, "the API in study mode shows no other sessions"


def test_a_client_flooding_events_under_fresh_session_hashes_gets_429_with_retry_after(app):
    """Study mode turns the rate limit on by default, charged to the address: new ``session_hash``
    values (or a planted one) get no fresh tokens, and the flood is refused at the door."""
    url, _ = app

    async def flood() -> list[httpx.Response]:
        attacker = httpx.AsyncHTTPTransport(local_address="127.0.0.2")  # its own address: the tests' stays unspent
        async with httpx.AsyncClient(transport=attacker, trust_env=False) as client:
            ui = await UiApp.connect(client, url)
            check = ui.event("es-canvas", "trial_check")

            def join(session: str):
                body = {
                    "session_hash": "decoy",
                    "data": [],
                    "event_data": None,
                    "fn_index": check.fn_index,
                    "trigger_id": check.trigger_id,
                    "session_hash ": session,
                }
                text = json.dumps(body).replace('"session_hash ": ', '"session_hash": ')  # a duplicate key
                headers = {"content-type": "application/json"}
                return client.post(f"{url}/gradio_api/queue/join", content=text, headers=headers, timeout=30)

            return await asyncio.gather(*(join(f"tab-{i}") for i in range(2 * ADDRESS_BURST)))

    answers = asyncio.run(flood())
    codes = [a.status_code for a in answers]
    refused = [a for a in answers if a.status_code == 429]
    passed = [c for c in codes if c != 429]
    assert set(passed) <= {200, 503}, "past the door: joined, or refused by the one-event queue of this app"
    assert len(refused) >= ADDRESS_BURST // 2 and len(passed) <= ADDRESS_BURST + 2, codes
    assert int(refused[0].headers["retry-after"]) >= 0 and "Too many requests" in refused[0].json()["detail"]


def test_routes_the_page_does_not_use_are_404_and_oversized_bodies_413_before_gradio_parses_them(app):
    url, _ = app
    journal = {"events": [{"seq": i, "points": [[1.5, 2.5, 3.5, 0.5]] * 50} for i in range(3000)]}  # 3.3 MB
    with httpx.Client(trust_env=False, timeout=30) as client:
        for path in ("/gradio_api/component_server", "/gradio_api/upload", "/gradio_api/process_recording"):
            closed = client.post(url + path, json={"session_hash": "x", "component_id": 1, "fn_name": "f", "data": 1})
            assert closed.status_code == 404 and closed.text == "not a route of this app", path
        assert client.get(url + "/gradio_api/file=/etc/hostname").status_code == 404
        nested = client.post(url + "/gradio_api/call/rank", json={"data": [journal, 5, None]})
        assert nested.status_code == 413 and "nested JSON" in nested.text, "the API parses no 3 MB nested input"
        chunked = client.post(url + "/gradio_api/queue/join", content=(b" " * 100_000 for _ in range(50)))
        assert chunked.status_code == 413 and "over the limit" in chunked.text, "a streamed 5 MB body is cut off"
