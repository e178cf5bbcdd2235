"""Start the real app in a subprocess on a free local port for the API and browser tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL_GALLERY = "60"  # procedural photos: starts in seconds, cached after the first run
START_TIMEOUT_S = 300  # first run embeds the gallery on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(tmp_path: Path, *args: str) -> Iterator[str]:
    """Run ``app.py ARGS`` until the block exits; yields its base URL once ``/gradio_api/info`` answers."""
    port = free_port()
    out = open(tmp_path / "app.log", "w")  # noqa: SIM115 - closed below
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "app.py", "--port", str(port), "--gallery-size", SMALL_GALLERY, "--threads", "1", *args]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app exited with {proc.returncode}:\n{(tmp_path / 'app.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/gradio_api/info", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"app not ready after {START_TIMEOUT_S} s:\n{(tmp_path / 'app.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()


def app_log(tmp_path: Path) -> str:
    return (tmp_path / "app.log").read_text()
