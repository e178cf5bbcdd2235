"""End to end in a real browser: Debian's Chromium draws three strokes in study mode.

Checks that results update after every stroke, that the study log on disk holds each stroke with
its points, timing and target rank, that nothing is fetched from outside 127.0.0.1, and saves a
screenshot (to docs/screenshot.png, the README's picture, when EARLYSKETCH_UPDATE_SCREENSHOT=1;
otherwise into the test's tmp folder so a test run leaves the working tree clean).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import pytest

from retrieval.study_log import log_files, read_log
from tests.app_server import REPO_ROOT, app_log, running_app

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]  # fmt: skip
# Three strokes of a chair seen from the side, as fractions of the canvas: back, seat, front leg.
STROKES = [[(0.32, 0.15), (0.32, 0.85)], [(0.32, 0.55), (0.70, 0.55)], [(0.70, 0.55), (0.70, 0.85)]]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium not installed: `make chromium` (or apt-get install -y chromium)"
)


def _study_config(tmp_path):
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"name": "browser-test", "random_targets": 3, "num_trials": 3, "seed": 1,
                                "found_k": 1, "time_limit_s": 0, "show_k": 12}))  # fmt: skip
    return path


def _draw(page, box, stroke, steps=12):
    (x0, y0), (x1, y1) = stroke
    page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
    page.mouse.down()
    time.sleep(0.05)
    page.mouse.move(box["x"] + x1 * box["width"], box["y"] + y1 * box["height"], steps=steps)
    time.sleep(0.05)
    page.mouse.up()


def test_three_strokes_update_results_and_are_logged(tmp_path):
    expect = playwright_api.expect
    log_dir = tmp_path / "logs"
    outside: list[str] = []
    args = ["--mode", "study", "--study", str(_study_config(tmp_path)), "--log-dir", str(log_dir)]
    with running_app(tmp_path, *args) as url, playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})

            def guard(route):
                if route.request.url.startswith("http://127.0.0.1:"):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", guard)
            page.goto(url)
            page.get_by_label("Participant id").fill("P-browser")
            page.get_by_role("button", name="Start").click()
            canvas_wrap = page.locator(".es-canvas-wrap[data-ready]")
            expect(canvas_wrap).to_be_visible(timeout=60_000)
            results = page.locator(".es-results")
            expect(page.locator(".es-panel img.es-target-img")).to_be_visible()
            box = page.locator("canvas.es-canvas").bounding_box()
            for n, stroke in enumerate(STROKES, start=1):
                if page.get_by_role("button", name="Next trial").is_visible():  # the target was found early
                    page.get_by_role("button", name="Next trial").click()
                    expect(canvas_wrap).to_have_attribute("data-strokes", "0")
                _draw(page, box, stroke)
                expect(canvas_wrap).to_have_attribute("data-seq", str(n), timeout=5_000)
                # the result grid re-renders with this stroke's ranking
                expect(results).to_have_attribute("data-curve", str(n), timeout=30_000)
                expect(page.locator(".es-card")).to_have_count(12)
                expect(results).to_have_attribute("data-target-rank", re.compile(r"^\d+$"))
                time.sleep(0.3)  # human-like pause between strokes
            update_docs = os.environ.get("EARLYSKETCH_UPDATE_SCREENSHOT") == "1"
            shot = REPO_ROOT / "docs" / "screenshot.png" if update_docs else tmp_path / "screenshot.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000, "the screenshot should show the rendered app"
        finally:
            browser.close()
    assert outside == [], f"the page tried to reach outside 127.0.0.1: {outside}"

    files = log_files(log_dir)
    assert [f.name for f in files] == [f"P-browser__{files[0].name.split('__')[1]}"]
    records = read_log(files[0])
    strokes = [r for r in records if r["type"] == "stroke"]
    assert len(strokes) == 3, app_log(tmp_path)[-2000:]
    for record in strokes:
        assert record["pointer"] == "mouse" and len(record["points"]) >= 2
        assert record["t_up"] > record["t_down"] and isinstance(record["target_rank"], int)
        assert record["canvas_width"] > 0 and record["dpr"] >= 1 and len(record["top_ids"]) >= 12
        times = [p[2] for p in record["points"]]
        assert times == sorted(times), "point timestamps must not go back in time"
    for trial in {r["trial"] for r in strokes}:  # client clocks restart with each trial
        downs = [r["t_down"] for r in strokes if r["trial"] == trial]
        assert downs == sorted(downs)
    assert [r["server_received_utc"] for r in strokes] == sorted(r["server_received_utc"] for r in strokes)
    assert records[0]["type"] == "session_start" and records[0]["model_hash"]
