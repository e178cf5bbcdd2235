"""The app in a subprocess, and its ``rank`` endpoint over plain HTTP.

:func:`running_app` starts ``app.py`` on a free 127.0.0.1 port and waits until it answers;
:func:`call_rank` / :func:`call_rank_async` call ``POST /gradio_api/call/rank`` and read the SSE
result. Shared by the concurrency and browser benchmarks and by the hardening tests (imported as
``harness.api_client`` there), so this module needs nothing else from ``bench/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.provenance import PROJECT_ROOT
from retrieval.serving.rank_result import RankResult

LOCALHOST = "127.0.0.1"
APP_LOGS = PROJECT_ROOT / ".cache" / "bench"  # console logs of apps started without a log_path


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


@dataclass
class AppProcess:
    """A running ``app.py``: its process, base URL and console log file."""

    proc: subprocess.Popen
    url: str
    log_path: Path

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""


GRADIO_SLOW_START = "Cannot find empty port"
"""What Gradio 6 says when its server did not start: the port was taken between :func:`free_port`
and the app's bind, or (before retrieval.ui.server.PatientServer) a start slower than Gradio's
hard-coded 5 s. :func:`running_app` then starts the app again on a new port, at most
``START_ATTEMPTS`` times."""
START_ATTEMPTS = 3


@contextlib.contextmanager
def running_app(
    args: Sequence[str] = (),
    log_path: Path | None = None,
    ready_timeout_s: float = 600.0,
    env: dict[str, str] | None = None,
    entry: Path | None = None,
) -> Iterator[AppProcess]:
    """Start ``app.py --host 127.0.0.1 --port <free> *args``; yield once ``/gradio_api/info`` answers.

    The gallery may be embedded on first start (cached afterwards), hence the long default
    ``ready_timeout_s``. The process is terminated (then killed) on exit. ``entry`` runs another
    script with ``app.py``'s flags instead (a benchmark's wrapper that injects faults).
    """
    full_env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "NO_PROXY": LOCALHOST,
        **(env or {}),
    }
    deadline = time.monotonic() + ready_timeout_s
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        log = Path(log_path or (APP_LOGS / f"app-{port}.log"))
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(entry or PROJECT_ROOT / "app.py"), "--host", LOCALHOST, "--port", str(port), *args]
        with open(log, "ab" if attempt > 1 else "wb") as out:  # a retry keeps the first attempt's log above it
            proc = subprocess.Popen(
                cmd, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
            )
        app = AppProcess(proc, f"http://{LOCALHOST}:{port}", log)
        try:
            _wait_until_ready(app, deadline, ready_timeout_s)
        except BaseException as exc:
            stop_process(app.proc)
            if GRADIO_SLOW_START not in str(exc) or attempt == START_ATTEMPTS:
                raise
        else:
            break
    try:
        yield app
    finally:
        stop_process(app.proc)


def _answers(app: AppProcess) -> bool:
    import httpx

    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{app.url}/gradio_api/info", timeout=5).status_code == 200
    return False


def _wait_until_ready(app: AppProcess, deadline: float, ready_timeout_s: float) -> None:
    """Poll ``/gradio_api/info`` until it answers; RuntimeError if the app exits, TimeoutError past ``deadline``."""
    while not _answers(app):
        if app.proc.poll() is not None:
            raise RuntimeError(f"app.py exited with code {app.proc.returncode} before it was ready:\n{app.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"app.py not ready after {ready_timeout_s:.0f} s:\n{app.log_tail()}")
        time.sleep(0.5)


def stop_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace_s)


class ApiError(RuntimeError):
    """The endpoint answered with an error event (the message is the server's)."""


def parse_sse(text: str) -> tuple[str, Any]:
    """The last ``event:``/``data:`` pair of a Gradio SSE body: (event name, decoded data)."""
    event, data = "", None
    for line in text.splitlines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            raw = line[5:].strip()
            try:
                data = json.loads(raw)
            except json.JSONDecodeError:
                data = raw
    return event, data


def call_rank(
    client, url: str, sketch: str, k: int = 10, target_id: str | None = None, timeout_s: float = 60.0
) -> dict:
    """Call the app's ``rank`` endpoint with an ``httpx.Client``; returns its result dict.

    Raises:
        ApiError: the app answered with an error event (e.g. an invalid sketch).
    """
    start = client.post(f"{url}/gradio_api/call/rank", json={"data": [sketch, k, target_id]}, timeout=timeout_s)
    start.raise_for_status()
    event_id = start.json()["event_id"]
    result = client.get(f"{url}/gradio_api/call/rank/{event_id}", timeout=timeout_s)
    result.raise_for_status()
    return unpack_rank_event(*parse_sse(result.text))


async def call_rank_async(
    client, url: str, sketch: str, k: int = 10, target_id: str | None = None, timeout_s: float = 60.0
) -> dict:
    """:func:`call_rank` with an ``httpx.AsyncClient``."""
    start = await client.post(f"{url}/gradio_api/call/rank", json={"data": [sketch, k, target_id]}, timeout=timeout_s)
    start.raise_for_status()
    event_id = start.json()["event_id"]
    result = await client.get(f"{url}/gradio_api/call/rank/{event_id}", timeout=timeout_s)
    result.raise_for_status()
    return unpack_rank_event(*parse_sse(result.text))


def unpack_rank_event(event: str, data: Any) -> dict:
    """The answer dict of a completed ``rank`` event, checked to read as a :class:`RankResult`.

    The dict itself is returned (not the parsed result) because callers check what the wire
    carries, e.g. that a study-mode answer holds no ``batch_size``."""
    if event == "complete" and isinstance(data, list) and data and isinstance(data[0], dict):
        try:
            RankResult.from_json(data[0])
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(f"rank endpoint answered a malformed result ({exc!r}): {data[0]!r:.300}") from exc
        return data[0]
    raise ApiError(f"rank endpoint answered event {event!r}: {data!r:.300}")
