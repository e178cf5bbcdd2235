"""retrieval/ui/server.py: the Gradio server waits for a slow start instead of giving up after 5 s."""

from __future__ import annotations

import asyncio
import socket
import threading

import httpx
import pytest
import uvicorn
from gradio.exceptions import ServerFailedToStartError

from harness.api_client import free_port
from retrieval.ui.server import PatientServer


def slow_starting_app(entered: threading.Event, release: threading.Event):
    """An ASGI app whose start-up (lifespan) waits for ``release``: a start as slow as the test wants."""

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    entered.set()
                    while not release.is_set():
                        await asyncio.sleep(0.01)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def server(app, port: int, wait_s: float) -> PatientServer:
    patient = PatientServer(uvicorn.Config(app=app, host="127.0.0.1", port=port, log_level="warning"))
    patient.start_wait_s = wait_s
    return patient


def test_a_held_start_is_waited_for_and_then_serves():
    entered, release = threading.Event(), threading.Event()
    port = free_port()
    patient = server(slow_starting_app(entered, release), port, wait_s=600)
    starting = threading.Thread(target=patient.run_in_thread)
    starting.start()
    assert entered.wait(timeout=30), "uvicorn reached the app's start-up"
    assert not patient.started and starting.is_alive(), "still waiting while the start-up is held"
    release.set()
    starting.join(timeout=30)
    try:
        assert patient.started
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "ok"
    finally:
        patient.should_exit = True
        patient.thread.join(timeout=10)


def test_a_start_that_never_finishes_is_abandoned_with_its_cause_and_never_serves_later():
    entered, release = threading.Event(), threading.Event()
    port = free_port()
    patient = server(slow_starting_app(entered, release), port, wait_s=0.5)
    with pytest.raises(ServerFailedToStartError, match="did not start within"):
        patient.run_in_thread()
    release.set()  # the start-up finishes after all: the abandoned server must still not serve
    patient.thread.join(timeout=10)
    assert not patient.thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=5)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # uvicorn's sys.exit
def test_a_taken_port_is_reported_at_once_not_after_the_wait():
    started = threading.Event()
    started.set()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        patient = server(slow_starting_app(threading.Event(), started), taken.getsockname()[1], wait_s=600)
        with pytest.raises(ServerFailedToStartError, match="stopped while starting"):
            patient.run_in_thread()
