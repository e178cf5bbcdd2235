"""What happens in a real browser when nobody draws: a study trial's time limit, the demo's idle reset.

Both are driven by timers on the page (assets/ui/canvas.js), so only a browser can show them work.
"""

from __future__ import annotations

import json
import re

import pytest

from harness.browser import CHROMIUM, NO_CHROMIUM, chromium_browser
from retrieval.study.log import log_files, read_log
from tests.app_server import block_outside, draw, running_app

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)

TIME_LIMIT_S = 15.0  # room for Start to render on a slow fresh machine before the countdown is read
IDLE_RESET_S = (
    8  # the canvas checks once a second; long enough for the stroke to be ranked first, even on a slow machine
)
STROKE = [(0.32, 0.15), (0.32, 0.85)]
# Every rank-curve length the result grid shows, in order: a slow ranking can land after the reset.
RECORD_CURVES = """() => {
    const results = document.querySelector(".es-results");
    window.__curves = [];
    new MutationObserver(() => window.__curves.push(results.dataset.curve))
        .observe(results, { attributes: true, attributeFilter: ["data-curve"] });
}"""


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as browser:
        yield browser


def _page(browser, url) -> tuple:
    """A new tab on ``url``, and the list of its requests outside 127.0.0.1 or refused by the app's guards."""
    page, refused = browser.new_context(viewport={"width": 1300, "height": 900}).new_page(), []
    block_outside(page, refused)
    page.goto(url)
    return page, refused


def test_a_study_trial_ends_by_itself_when_its_time_limit_passes(browser, tmp_path):
    config = tmp_path / "study.json"
    config.write_text(
        json.dumps(
            {
                "name": "deadline-test",
                "random_targets": 2,
                "num_trials": 2,
                "seed": 1,
                "found_k": 1,
                "time_limit_s": TIME_LIMIT_S,
                "show_k": 12,
            }
        )
    )
    log_dir = tmp_path / "logs"
    with running_app(tmp_path, "--mode", "study", "--study", str(config), "--log-dir", str(log_dir)) as url:
        page, refused = _page(browser, url)
        page.get_by_label("Participant id").fill("P-deadline")
        page.get_by_role("button", name="Start").click()
        wrap, panel = page.locator(".es-canvas-wrap[data-ready]"), page.locator(".es-panel")
        expect(wrap).not_to_have_attribute("data-trial", "", timeout=60_000)
        expect(panel.locator(".es-countdown")).to_contain_text("left")
        assert panel.get_attribute("data-banner") == "", "the trial is still running"
        assert "es-locked" not in (wrap.get_attribute("class") or "")
        # Nobody touches the page from here on: only the canvas's deadline timer can end the trial.
        expect(panel).to_have_attribute("data-banner", "miss", timeout=int((TIME_LIMIT_S + 20) * 1000))
        expect(panel.locator(".es-banner")).to_have_text("Time is up.")
        expect(page.get_by_role("button", name="Next trial")).to_be_visible()
        expect(wrap).to_have_class(re.compile(r"\bes-locked\b"))
        page.context.close()
    assert refused == [], f"the page reached outside 127.0.0.1 or a closed route: {refused}"
    (log,) = log_files(log_dir)
    ends = [r for r in read_log(log) if r["type"] == "trial_end"]
    assert [(e["trial"], e["outcome"], e["strokes_drawn"]) for e in ends] == [(0, "timed_out", 0)]
    assert ends[0]["seconds"] >= TIME_LIMIT_S


def test_the_demo_clears_an_idle_canvas_and_offers_a_new_target(browser, tmp_path):
    with running_app(tmp_path, "--mode", "demo", "--idle-reset-s", str(IDLE_RESET_S)) as url:
        page, refused = _page(browser, url)
        wrap, panel = page.locator(".es-canvas-wrap[data-ready]"), page.locator(".es-panel")
        results = page.locator(".es-results")
        expect(wrap).not_to_have_attribute("data-trial", "", timeout=60_000)
        targets = {panel.get_attribute("data-target-id")}
        page.evaluate(RECORD_CURVES)
        for _ in range(3):  # a new target is random: it repeats the last one by chance 1 time in 60
            token = wrap.get_attribute("data-trial")
            page.evaluate("window.__curves = []")
            draw(page, page.locator("canvas.es-canvas").bounding_box(), STROKE)
            expect(wrap).to_have_attribute("data-strokes", "1")
            expect(wrap).not_to_have_attribute("data-trial", token, timeout=(IDLE_RESET_S + 20) * 1000)
            expect(wrap).to_have_attribute("data-strokes", "0")
            expect(results).to_have_attribute("data-curve", "0")
            expect(results).to_have_attribute("data-ids", "")
            curves = page.evaluate("window.__curves")
            assert "1" in curves and curves[-1] == "0", f"ranked, then cleared by the reset: {curves}"
            expect(panel.locator("img.es-target-img")).to_be_visible()
            targets.add(panel.get_attribute("data-target-id"))
            if len(targets) > 1:
                break
        assert len(targets) > 1, f"the idle reset should show a new target, saw only {targets}"
        page.context.close()
    assert refused == [], f"the page reached outside 127.0.0.1 or a closed route: {refused}"
