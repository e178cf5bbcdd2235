"""The servers ``bench_cluster.py`` compares, each started fresh, and what their processes use.

* ``single``: ``app.py`` with default flags, asked through ``POST /gradio_api/call/rank``.
* ``ray-N``: ``python -m retrieval.serving.serve_ray --replicas N``, asked through ``POST /rank``.

Memory and CPU are summed over a server's whole process tree from /proc: Ray workers run in
their own sessions, so a process group would miss them.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from bench.lib.common import ROOT
from harness.api_client import LOCALHOST, ApiError, call_rank_async, free_port, running_app, stop_process
from retrieval.serving.serve_client import rank_request

if TYPE_CHECKING:
    from bench.load.bench_cluster import Config

Sender = Callable[..., Awaitable[dict]]


@contextmanager
def serve_cluster(replicas: int, shards: int, cfg: Config) -> Iterator[tuple[str, int]]:
    """``python -m retrieval.serving.serve_ray`` in its own process group; yields (base URL, pid) once deployed."""
    port = free_port()
    log = cfg.cache_dir / f"serve-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "retrieval.serving.serve_ray",
        "--replicas",
        str(replicas),
        "--shards",
        str(shards),
        "--gallery-size",
        str(cfg.gallery_size),
        "--cache-dir",
        str(cfg.cache_dir),
        "--model",
        str(cfg.model),
        "--port",
        str(port),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "NO_PROXY": LOCALHOST, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 600
        while "EarlySketch on Ray Serve" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve_ray did not come up (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://{LOCALHOST}:{port}", proc.pid
    finally:
        proc.terminate()  # SIGTERM: serve.shutdown() + ray.shutdown() in serve_ray.main
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            stop_process(proc)
        with contextlib.suppress(ProcessLookupError):  # any Ray agent left in the group we started
            os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def server(name: str, cfg: Config) -> Iterator[tuple[str, Sender, float, int]]:
    """(base URL, request sender, start-up seconds, pid of its root process) of the server ``name``."""
    start = time.perf_counter()
    if name == "single":
        args = ["--gallery-size", str(cfg.gallery_size), "--cache-dir", str(cfg.cache_dir), "--model", str(cfg.model)]
        with running_app(args) as app:
            yield app.url, call_rank_async, time.perf_counter() - start, app.proc.pid
        return
    replicas = int(re.fullmatch(r"ray-(\d+)", name).group(1))  # type: ignore[union-attr]
    with serve_cluster(replicas, cfg.shards, cfg) as (url, pid):
        yield url, call_serve_async, time.perf_counter() - start, pid


def idle_cores(pid: int, seconds: float = 5.0) -> float:
    """CPU the server burns with no request (cores): Ray's daemons poll, the app warms thumbnails."""
    before = tree_usage(pid)[1]
    time.sleep(seconds)
    return (tree_usage(pid)[1] - before) / seconds


def tree_usage(root: int) -> tuple[float, float]:
    """(resident MiB, CPU seconds so far) of ``root`` and all its descendants: the app, or the Ray
    driver with its daemons and every replica (Ray workers run in their own sessions, so a process
    group would miss them)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                stats[int(entry.name)] = fields
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    todo, rss_pages, ticks = [root], 0, 0
    while todo:
        pid = todo.pop()
        if pid in stats:
            rss_pages += int(stats[pid][21])
            ticks += int(stats[pid][11]) + int(stats[pid][12])
        todo += children.get(pid, [])
    return rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**20, ticks / os.sysconf("SC_CLK_TCK")


async def call_serve_async(client, url: str, sketch: str, k: int, target_id: str | None, timeout_s: float) -> dict:
    response = await client.post(f"{url}/rank", json=rank_request(sketch, k, target_id), timeout=timeout_s)
    if response.status_code != 200:
        raise ApiError(f"HTTP {response.status_code}: {response.text[:300]}")
    return response.json()
