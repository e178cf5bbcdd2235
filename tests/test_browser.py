"""End to end in a real browser: Debian's Chromium draws three strokes in study mode.

Checks that every stroke goes to the app's own route (``POST /es/stroke``, not Gradio's queue) and
the results update after it, that the study log on disk holds each stroke with
its points, timing and target rank, that nothing is fetched from outside 127.0.0.1, and saves a
screenshot (to docs/screenshot.png, the README's picture, when EARLYSKETCH_UPDATE_SCREENSHOT=1;
otherwise into the test's tmp folder so a test run leaves the working tree clean).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request

import pytest

from retrieval.study.log import log_files, read_log
from retrieval.study.log_names import decode_id
from retrieval.study.log_rankings import with_rankings
from tests.app_server import app_log, draw, running_app, start_study
from tests.conftest import REPO_ROOT

playwright_api = pytest.importorskip("playwright.sync_api")

# Three strokes of a chair seen from the side, as fractions of the canvas: back, seat, front leg.
STROKES = [[(0.32, 0.15), (0.32, 0.85)], [(0.32, 0.55), (0.70, 0.55)], [(0.70, 0.55), (0.70, 0.85)]]


def _study_config(tmp_path):
    path = tmp_path / "study.json"
    path.write_text(
        json.dumps(
            {
                "name": "browser-test",
                "random_targets": 3,
                "num_trials": 3,
                "seed": 1,
                "found_k": 1,
                "time_limit_s": 0,
                "show_k": 12,
            }
        )
    )
    return path


def test_three_strokes_update_results_and_are_logged(browser, tmp_path):
    expect = playwright_api.expect
    log_dir = tmp_path / "logs"
    outside: list[str] = []
    args = ["--mode", "study", "--study", str(_study_config(tmp_path)), "--log-dir", str(log_dir)]
    with running_app(tmp_path, *args) as url:
        page = start_study(browser, url, "P-browser", outside)
        posts: list[str] = []
        page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
        canvas_wrap = page.locator(".es-canvas-wrap[data-ready]")
        expect(canvas_wrap).to_be_visible(timeout=60_000)
        results = page.locator(".es-results")
        expect(page.locator(".es-panel img.es-target-img")).to_be_visible()
        expect(page.locator(".es-panel")).to_have_attribute("data-resume-code", re.compile(r"^\w{5}-\w{5}$"))
        box = page.locator("canvas.es-canvas").bounding_box()
        posts.clear()
        shown = []
        for n, stroke in enumerate(STROKES, start=1):
            if page.get_by_role("button", name="Next trial").is_visible():  # the target was found early
                page.get_by_role("button", name="Next trial").click()
                expect(canvas_wrap).to_have_attribute("data-strokes", "0")
            draw(page, box, stroke)
            expect(canvas_wrap).to_have_attribute("data-seq", str(n), timeout=5_000)
            # the result grid re-renders with this stroke's ranking
            expect(results).to_have_attribute("data-curve", str(n), timeout=30_000)
            expect(page.locator(".es-card")).to_have_count(12)
            expect(results).to_have_attribute("data-target-rank", re.compile(r"^\d+$"))
            shown.append(results.get_attribute("data-ids"))
        strokes_posted = [u for u in posts if u.endswith("/es/stroke")]
        assert len(strokes_posted) == 3, f"each stroke is one POST to the app's route: {posts}"
        assert len(set(shown)) > 1, "the gallery changes with the strokes"
        update_docs = os.environ.get("EARLYSKETCH_UPDATE_SCREENSHOT") == "1"
        shot = REPO_ROOT / "docs" / "screenshot.png" if update_docs else tmp_path / "screenshot.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000, "the screenshot should show the rendered app"
    assert outside == [], f"the page tried to reach outside 127.0.0.1 or a closed route: {outside}"

    files = log_files(log_dir)
    assert [f.name for f in files] == [f"P-browser__{files[0].name.split('__')[1]}"]
    records = with_rankings(read_log(files[0]))  # rankings are their own records since schema 2
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


# --- two participants at once, and a hostile photo file name -------------------------------------
HOSTILE_NAME = "<img src=x onerror=window.__pwned=1>.jpg"
PARTICIPANTS = ("P-a", "P b/é")  # the second needs the reversible file-name encoding


def _photo_folder(tmp_path):
    """16 procedural photos, one more with a hostile name, and an unreadable file with another."""
    from PIL import Image

    from retrieval.data.procedural.dataset import generate_photo

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(16):
        Image.fromarray(generate_photo(0, i, size=128)).save(folder / f"chair {i:02d}.png")
    Image.fromarray(generate_photo(0, 16, size=128)).save(folder / "<b onmouseover=alert(1)>.png")
    (folder / HOSTILE_NAME).write_bytes(b"not a jpeg")  # skipped: its name goes into the header notice
    return folder


def _start(page, url, participant):
    page.goto(url)
    page.get_by_label("Participant id").fill(participant)
    page.get_by_role("button", name="Start").click()
    wrap = page.locator(".es-canvas-wrap[data-ready]")
    playwright_api.expect(wrap).not_to_have_attribute("data-trial", "", timeout=60_000)
    return wrap


def test_two_participants_at_once_get_separate_complete_logs_and_hostile_names_stay_text(browser, tmp_path):
    expect = playwright_api.expect
    log_dir = tmp_path / "logs"
    args = [
        "--mode",
        "study",
        "--study",
        str(_study_config(tmp_path)),
        "--log-dir",
        str(log_dir),
        "--photos",
        str(_photo_folder(tmp_path)),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    drawn = {p: {} for p in PARTICIPANTS}  # participant -> {trial token: strokes drawn in it}
    with running_app(tmp_path, *args) as url:
        info = json.loads(urllib.request.urlopen(url + "/gradio_api/info", timeout=30).read())
        assert "/rank" not in info["named_endpoints"], "the rank API is off in study mode unless --api on"
        call = urllib.request.Request(url + "/gradio_api/call/rank", b'{"data": ["{}", 5, null]}')
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(call, timeout=30)
        pages = {p: browser.new_context(viewport={"width": 1300, "height": 900}).new_page() for p in PARTICIPANTS}
        wraps = {p: _start(page, url, p) for p, page in pages.items()}
        notice = pages[PARTICIPANTS[0]].locator(".es-notice")
        expect(notice).to_contain_text(HOSTILE_NAME)
        for step in range(5):  # both draw a stroke, then both wait for their results
            for p, page in pages.items():
                if page.get_by_role("button", name="Next trial").is_visible():  # found (or given up)
                    page.get_by_role("button", name="Next trial").click()
                    expect(wraps[p]).to_have_attribute("data-strokes", "0")
                if step == 3:  # one trial each ends by Give up, mid-study
                    page.get_by_role("button", name="Give up").click()
                    expect(page.get_by_role("button", name="Next trial")).to_be_visible()
                    continue
                token = wraps[p].get_attribute("data-trial")
                drawn[p][token] = drawn[p].get(token, 0) + 1
                draw(page, page.locator("canvas.es-canvas").bounding_box(), STROKES[step % 3])
            for p, page in pages.items():
                token = wraps[p].get_attribute("data-trial")
                expect(page.locator(".es-results")).to_have_attribute(
                    "data-curve", re.compile(r"^[1-9]"), timeout=30_000
                )
                expect(wraps[p]).to_have_attribute("data-seq", str(drawn[p].get(token, 0)))
        for page in pages.values():
            assert page.evaluate("window.__pwned") is None, "a file name ran as markup"
            assert page.locator("img[src='x']").count() == 0
    # the app has exited (running_app waits for it): every record it wrote is in the files
    files = log_files(log_dir)
    assert len(files) == 2, [f.name for f in files]
    for participant in PARTICIPANTS:
        (path,) = [f for f in files if decode_id(f.name.split("__")[0]) == participant]
        _check_session_log(read_log(path), participant, drawn[participant])


def _check_session_log(records, participant, drawn):
    """Record by record: one participant, every stroke once, in order, under the trial it was drawn in."""
    assert all(r["participant"] == participant for r in records)
    assert records[0]["type"] == "session_start" and records[1]["type"] == "trial_start"
    trial_of_token = {r["trial_token"]: r for r in records if r["type"] == "trial_start"}
    strokes = [r for r in records if r["type"] == "stroke"]
    logged = {}
    for r in strokes:
        start = trial_of_token[r["trial_token"]]
        assert (r["trial"], r["target_id"]) == (start["trial"], start["target_id"]), r
        logged.setdefault(r["trial_token"], []).append(r["seq"])
        assert r["pointer"] == "mouse" and r["dpr"] >= 1 and len(r["points"]) >= 2
    assert {t: len(seqs) for t, seqs in logged.items()} == drawn, "each stroke drawn is logged exactly once"
    for seqs in logged.values():
        assert seqs == list(range(1, len(seqs) + 1)), "in order, no gaps, no repeats"
    assert [r["stroke_index"] for r in strokes] == [i for seqs in logged.values() for i in range(len(seqs))]
    ends = [r for r in records if r["type"] == "trial_end"]
    assert "gave_up" in {r["outcome"] for r in ends}
