"""One study trial in each feedback mode, in a real browser: what the participant sees.

Debian's Chromium (never ``playwright install``) runs a three-condition study (``every_stroke``,
``on_request``, ``after_trial``; participant P01 gets them in that order, row 0 of the Latin
square). ``found_k`` is the whole 60-photo gallery, so each trial ends exactly where its mode
lets it: at the first stroke, at Search, at Done.
"""

from __future__ import annotations

import json

import pytest

from retrieval.study.log import log_files, read_log
from retrieval.study.log_rankings import with_rankings
from retrieval.ui.views import HIDDEN_RESULTS
from tests.app_server import SMALL_GALLERY, draw, running_app, start_study

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

STROKES = [[(0.32, 0.15), (0.32, 0.85)], [(0.32, 0.55), (0.70, 0.55)]]
CONDITIONS = [
    {"name": "live", "feedback": "every_stroke"},
    {"name": "asked", "feedback": "on_request"},
    {"name": "blind", "feedback": "after_trial", "show_rank": False},
]


def _config(tmp_path):
    path = tmp_path / "study.json"
    study = {
        "name": "feedback-modes",
        "random_targets": 3,
        "num_trials": 3,
        "time_limit_s": 0,
        "found_k": int(SMALL_GALLERY),
        "conditions": CONDITIONS,
        "counterbalance": "participant_number",
    }
    path.write_text(json.dumps(study))
    return path


def _draw_and_wait(page, stroke):
    """Draw one stroke and wait until the server's answer to it was rendered (the canvas marks the
    events answered, ``data-acked``, just before it hands the answer to the grid and panel, in the
    same task): a hidden ranking changes nothing visible, so nothing else says it arrived."""
    wrap = page.locator(".es-canvas-wrap[data-ready]")
    draw(page, page.locator("canvas.es-canvas").bounding_box(), stroke)
    expect(wrap).to_have_attribute("data-acked", wrap.get_attribute("data-seq"), timeout=30_000)


def test_each_feedback_mode_shows_what_its_condition_promises(browser, tmp_path):
    log_dir, outside = tmp_path / "logs", []
    args = ["--mode", "study", "--study", str(_config(tmp_path)), "--log-dir", str(log_dir)]
    with running_app(tmp_path, *args) as url:
        page = start_study(browser, url, "P01", outside)
        wrap, results, panel = (
            page.locator(".es-canvas-wrap[data-ready]"),
            page.locator(".es-results"),
            page.locator(".es-panel"),
        )
        search, done, next_trial = (page.get_by_role("button", name=n) for n in ("Search", "Done", "Next trial"))
        expect(wrap).not_to_have_attribute("data-trial", "", timeout=60_000)

        # every_stroke: the grid and the rank after the first stroke, and found ends the trial
        expect(search).to_be_hidden()
        expect(done).to_be_hidden()
        _draw_and_wait(page, STROKES[0])
        expect(page.locator(".es-card[data-id]:not([data-id=''])")).to_have_count(12)
        expect(results).to_have_attribute("data-curve", "1")
        expect(panel).to_have_attribute("data-banner", "found")
        next_trial.click()

        # on_request: strokes are ranked but nothing is shown until Search
        expect(search).to_be_visible(timeout=30_000)
        expect(done).to_be_hidden()
        _draw_and_wait(page, STROKES[0])
        expect(results).to_have_attribute("data-ids", "")
        expect(results.locator(".es-empty-msg")).to_have_text(HIDDEN_RESULTS["on_request"])
        expect(panel).to_have_attribute("data-banner", "")
        search.click()
        expect(results).not_to_have_attribute("data-ids", "", timeout=30_000)
        expect(panel).to_have_attribute("data-banner", "found")
        expect(search).to_be_hidden()
        next_trial.click()

        # after_trial, rank hidden: nothing while drawing; Done ends the trial and shows the photos, never the rank
        expect(done).to_be_visible(timeout=30_000)
        expect(search).to_be_hidden()
        for stroke in STROKES:
            _draw_and_wait(page, stroke)
            expect(results).to_have_attribute("data-ids", "")
            expect(results.locator(".es-empty-msg")).to_have_text(HIDDEN_RESULTS["after_trial"])
        done.click()
        expect(results).not_to_have_attribute("data-ids", "", timeout=30_000)
        expect(panel).to_have_attribute("data-banner", "found")
        expect(results).to_have_attribute("data-target-rank", "")
        expect(results).to_have_attribute("data-curve", "0")
        next_trial.click()
        expect(page.get_by_text("The session is complete")).to_be_visible(timeout=30_000)
    assert not outside, f"requests left 127.0.0.1: {outside}"
    records = with_rankings(read_log(log_files(log_dir)[0]))
    ends = [
        (r["condition"], r["outcome"], r["strokes_drawn"], r["searches"]) for r in records if r["type"] == "trial_end"
    ]
    assert ends == [("live", "found", 1, 0), ("asked", "found", 1, 1), ("blind", "found", 2, 0)]
    # strokes logged before ranking in every mode; each rank record says whether the page showed it
    shown = [(r["condition"], r["shown"]) for r in records if r["type"] == "stroke"]
    assert shown == [("live", True), ("asked", False), ("blind", False), ("blind", False)]
    assert [r["condition"] for r in records if r["type"] == "search"] == ["asked"]
