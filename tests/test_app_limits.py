"""Server-side limits of the running app: the queue cap, the API's own slot in study mode, and
errors that never show server paths. One study-mode app whose log folder cannot be created
(a file stands in its way), with ``--api on`` and a one-event queue."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json

import httpx
import pytest

from retrieval.serving.request_limits import RATE_BURST
from retrieval.ui.api_client import ApiError, call_rank
from retrieval.ui.ui_client import UiApp, UiError, UiSession
from tests.app_server import running_app

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


def test_a_tab_flooding_events_gets_429_with_retry_after_and_other_tabs_are_served(app):
    """Study mode turns the per-tab rate limit on by default: the flood is refused at the door."""
    url, _ = app

    async def flood() -> tuple[list[httpx.Response], httpx.Response]:
        async with httpx.AsyncClient(trust_env=False) as client:
            ui = await UiApp.connect(client, url)
            check = ui.event("es-canvas", "trial_check")
            headers = await UiSession(client, ui).headers()

            def join(session: str):
                body = {
                    "data": [],
                    "event_data": None,
                    "fn_index": check.fn_index,
                    "trigger_id": check.trigger_id,
                    "session_hash": session,
                }
                return client.post(f"{url}/gradio_api/queue/join", json=body, headers=headers, timeout=30)

            answers = await asyncio.gather(*(join("flood") for _ in range(2 * RATE_BURST)))
            return answers, await join("another-tab")

    answers, other = asyncio.run(flood())
    codes = [a.status_code for a in answers]
    refused = [a for a in answers if a.status_code == 429]
    assert len(answers) - len(refused) >= RATE_BURST and len(refused) >= RATE_BURST // 2, codes
    assert int(refused[0].headers["retry-after"]) >= 1 and "Too many requests" in refused[0].json()["detail"]
    assert other.status_code != 429, "another tab has its own bucket"
