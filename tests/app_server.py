"""Start the real app in a subprocess on a free local port for the API and browser tests.

A thin wrapper over :func:`retrieval.ui.api_client.running_app` (the one app launcher, shared with the
benchmarks) with the tests' small gallery, one thread and the log in the test's ``tmp_path``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from retrieval.ui.api_client import running_app as _running_app

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL_GALLERY = "60"  # procedural photos: starts in seconds, cached after the first run
START_TIMEOUT_S = 300  # first run embeds the gallery on a busy 2-core machine


@contextlib.contextmanager
def running_app(tmp_path: Path, *args: str) -> Iterator[str]:
    """Run ``app.py ARGS`` until the block exits; yields its base URL once ``/gradio_api/info`` answers."""
    app_args = ["--gallery-size", SMALL_GALLERY, "--threads", "1", *args]
    with _running_app(app_args, log_path=tmp_path / "app.log", ready_timeout_s=START_TIMEOUT_S) as app:
        yield app.url


def app_log(tmp_path: Path) -> str:
    return (tmp_path / "app.log").read_text()
