"""What happens in a real browser when nobody draws: a study trial's time limit, the demo's idle reset.

Both are driven by timers on the page (assets/ui/canvas.js), so only a browser can show them work.
"""

from __future__ import annotations

import json
import re

import pytest

from retrieval.study.log import log_files, read_log
from tests.app_server import block_outside, draw, running_app

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

# The server's clock decides when a trial's time is up, so the trial really lasts this long: page
# time moved on would only wake the server early (the test records what the panel showed instead).
TIME_LIMIT_S = 2.0
IDLE_RESET_S = 90  # the app's default; page time, which the test moves on (Playwright's clock)
STROKE = [(0.32, 0.15), (0.32, 0.85)]
# Every (banner, countdown) the panel shows, in order, however fast they follow each other.
RECORD_PANEL = """() => {
    const states = window.__panelStates = [];
    new MutationObserver(() => {
        const panel = document.querySelector(".es-panel[data-ready]");  // rendered at Start in a study
        if (!panel) return;
        const state = [panel.dataset.banner || "", panel.querySelector(".es-countdown").textContent];
        if (JSON.stringify(states.at(-1)) !== JSON.stringify(state)) states.push(state);
    }).observe(document.body, { attributes: true, childList: true, characterData: true, subtree: true });
}"""


def _page(browser, url, clock: bool = True) -> tuple:
    """A new tab on ``url`` (its timers run by Playwright's clock unless ``clock`` is False), and
    the list of its requests outside 127.0.0.1 or refused by the app's guards."""
    page, refused = browser.new_context(viewport={"width": 1300, "height": 900}).new_page(), []
    block_outside(page, refused)
    if clock:
        page.clock.install()
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
        page, refused = _page(browser, url, clock=False)
        page.evaluate(RECORD_PANEL)
        page.get_by_label("Participant id").fill("P-deadline")
        page.get_by_role("button", name="Start").click()
        wrap, panel = page.locator(".es-canvas-wrap[data-ready]"), page.locator(".es-panel")
        # Nobody touches the page from here on: only the canvas's deadline timer can end the trial.
        expect(panel).to_have_attribute("data-banner", "miss", timeout=int((TIME_LIMIT_S + 60) * 1000))
        states = page.evaluate("window.__panelStates")
        running = [i for i, (banner, countdown) in enumerate(states) if banner == "" and countdown.endswith(" left")]
        ended = [i for i, (banner, _) in enumerate(states) if banner == "miss"]
        assert running and running[0] < ended[0], f"a countdown while the trial ran, then its end: {states}"
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
        for _ in range(3):  # a new target is random: it repeats the last one by chance 1 time in 60
            token = wrap.get_attribute("data-trial")
            draw(page, page.locator("canvas.es-canvas").bounding_box(), STROKE)
            expect(results).to_have_attribute("data-curve", "1", timeout=30_000)
            page.clock.run_for((IDLE_RESET_S + 1) * 1000)  # nobody draws for that long (page time)
            expect(wrap).not_to_have_attribute("data-trial", token, timeout=30_000)
            expect(wrap).to_have_attribute("data-strokes", "0")
            expect(results).to_have_attribute("data-curve", "0")
            expect(results).to_have_attribute("data-ids", "")
            expect(panel.locator("img.es-target-img")).to_be_visible()
            targets.add(panel.get_attribute("data-target-id"))
            if len(targets) > 1:
                break
        assert len(targets) > 1, f"the idle reset should show a new target, saw only {targets}"
        page.context.close()
    assert refused == [], f"the page reached outside 127.0.0.1 or a closed route: {refused}"
