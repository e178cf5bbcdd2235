"""Start the real app in a subprocess on a free local port for the API and browser tests.

A thin wrapper over :func:`harness.api_client.running_app` (the one app launcher, shared with the
benchmarks) with the tests' small gallery, one thread and the log in the test's ``tmp_path``; and the
browser tests' shared Playwright helpers (the browser itself: :mod:`harness.browser`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from harness.api_client import running_app as _running_app

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


def draw(page, box: dict, stroke, steps: int = 12) -> None:
    """One mouse stroke from ``stroke[0]`` to ``stroke[1]``, given as fractions of ``box`` (CSS pixels)."""
    (x0, y0), (x1, y1) = stroke
    page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + x1 * box["width"], box["y"] + y1 * box["height"], steps=steps)  # one round trip each
    page.mouse.up()


REFUSED_AT_THE_DOOR = {404, 405, 413, 429}  # what the request guards answer (retrieval/ui/guards.py)


def start_study(browser, url: str, participant: str, outside: list[str]):
    """A new page on the study app, every request outside 127.0.0.1 blocked, past consent with ``participant``."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    block_outside(page, outside)
    page.goto(url)
    page.get_by_label("Participant id").fill(participant)
    page.get_by_role("button", name="Start").click()
    return page


def block_outside(page, outside: list[str]) -> None:
    """Abort (and record in ``outside``) every request that does not go to 127.0.0.1, and record there
    too every request the app's guards refused: the allow-list must open every route the page uses."""

    def guard(route):
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    def refused(response):
        if response.status in REFUSED_AT_THE_DOOR:
            outside.append(f"{response.status} {response.request.method} {response.url}")

    page.route("**/*", guard)
    page.on("response", refused)
