"""kill -9 mid-study: every stroke acknowledged before the kill is in the study log, which still parses.

1. A child process runs the app's per-stroke study path (``DrawingSession.update`` with a real
   ``Retriever``, logging through ``retrieval.study.log``) and prints ``ACK <seq>`` after each stroke
   returns, i.e. when the app would answer the browser. The test SIGKILLs it at several points
   while it keeps drawing, so the kill lands mid-ranking or mid-write; then checks the log, and that
   re-opening the session appends cleanly after a torn line.
2. The real app in study mode, driven by headless Chromium (skipped without Debian chromium): a
   stroke counts as acknowledged once its results are painted in the page; then kill -9 the server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from harness.api_client import running_app
from retrieval.provenance import PROJECT_ROOT as REPO_ROOT
from retrieval.study.log import StudyLog, read_log

pytestmark = pytest.mark.slow  # kill -9 of child processes and of a real app

CHILD = r"""
import sys
import numpy as np
from retrieval.runtime import set_threads
set_threads(1)
from retrieval.model.encoder import create_encoder, Encoder
from retrieval.serving.index import PhotoIndex
from retrieval.data.procedural import generate_sketch
from retrieval.serving.retriever import Retriever
from retrieval.study.plan import StudyConfig
from retrieval.ui.drawing_session import DrawingSession
from retrieval.study.log import StudyLog
from retrieval.study.payload import JournalWriter, parse_stroke_batch

log_dir = sys.argv[1]
encoder = create_encoder(seed=0)
vectors = np.random.default_rng(0).standard_normal((30, encoder.meta["embed_dim"])).astype(np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
ids = [f"p{i}" for i in range(30)]
retriever = Retriever(encoder, PhotoIndex.build(vectors, ids))
session = DrawingSession(mode="study")
config = StudyConfig(name="crash", random_targets=2, num_trials=2, found_k=1, time_limit_s=0)
session.begin_study(config, StudyLog(log_dir, "P1", "S1", {"mode": "study"}), ids, {"gallery_size": len(ids)}, "C")
print("READY", flush=True)
writer = JournalWriter(session.token)
for seq in range(1, 300):
    sketch = generate_sketch(0, seq % 40, 0)
    stroke = sketch.strokes[seq % sketch.num_strokes][:60]
    points = [[round(float(x), 2), round(float(y), 2), round(float(t), 1), 0.5] for x, y, t in stroke]
    writer.add({"type": "stroke", "pointer": "mouse", "t_down": float(stroke[0, 2]),
                "t_up": float(stroke[-1, 2]), "points": points})
    session.apply(parse_stroke_batch(writer.batch()), lambda sketch, target: retriever.rank(sketch, k=5, target_id=target))
    writer.acknowledge(seq)
    print(f"ACK {seq}", flush=True)
"""


def _stroke_seqs(records: list[dict]) -> set[int]:
    return {r["seq"] for r in records if r.get("type") == "stroke"}


@pytest.mark.parametrize("kill_after", [1, 6, 25])
def test_kill_9_during_study_logging_loses_no_acknowledged_stroke(tmp_path, kill_after):
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked: list[int] = []
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            if line.startswith("ACK "):
                acked.append(int(line.split()[1]))
                if len(acked) >= kill_after:
                    os.kill(proc.pid, signal.SIGKILL)  # the child is already drawing the next stroke
                    break
            assert time.monotonic() < deadline, "child too slow"
        acked += [int(line.split()[1]) for line in proc.stdout if line.startswith("ACK ")]  # sent before it died
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    assert len(acked) >= kill_after

    path = tmp_path / "P1__S1.jsonl"
    raw_lines = [line for line in path.read_bytes().split(b"\n") if line.strip()]
    unparsable = [i for i, line in enumerate(raw_lines) if not _parses(line)]
    assert unparsable in ([], [len(raw_lines) - 1]), "only the very last line may be torn by the kill"
    records = read_log(path)
    assert records[0]["type"] == "session_start" and records[1]["type"] == "trial_start"
    logged = _stroke_seqs(records)
    assert set(acked) <= logged, f"acknowledged strokes missing from the log: {sorted(set(acked) - logged)}"
    assert logged <= set(range(1, max(acked) + 2)), "at most the stroke in flight at the kill may be extra"

    # A restarted server re-opens the same session file: the torn tail is closed off, records append whole.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        StudyLog(tmp_path, "P1", "S1").append({"type": "session_resumed"})
        again = read_log(path)
    assert again[-1]["type"] == "session_resumed"
    assert _stroke_seqs(again) == logged


def _parses(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


# --- the real app, driven by a browser ------------------------------------------------------------
RESULTS = "#es-results .es-results"


def test_kill_9_app_server_mid_study(browser, tmp_path):
    study = tmp_path / "study.json"
    study.write_text(
        json.dumps(
            {"name": "crash-app", "random_targets": 2, "num_trials": 2, "found_k": 1, "time_limit_s": 0, "seed": 3}
        )
    )
    log_dir = tmp_path / "logs"
    args = [
        "--mode",
        "study",
        "--study",
        str(study),
        "--log-dir",
        str(log_dir),
        "--gallery-size",
        "60",
        "--threads",
        "1",
    ]
    acked = 0
    with running_app(args, log_path=tmp_path / "app.log", ready_timeout_s=300) as app:
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.route("**/*", lambda route: route.continue_() if "127.0.0.1" in route.request.url else route.abort())
        page.goto(app.url, wait_until="domcontentloaded")
        page.get_by_label("Participant id").fill("P9")
        page.get_by_role("button", name="Start").click()
        page.wait_for_selector("#es-canvas .es-canvas-wrap[data-ready='1']", state="visible", timeout=60_000)
        # Draw only once the trial's canvas token has arrived (what a participant sees as the target).
        page.wait_for_selector("#es-canvas .es-canvas-wrap[data-trial]:not([data-trial=''])", timeout=60_000)
        box = page.locator("#es-canvas canvas.es-canvas").bounding_box()
        rng = np.random.default_rng(0)
        for _ in range(4):
            if page.locator("#es-canvas .es-canvas-wrap.es-locked").count():
                break  # the target was found: the trial ended and the canvas is locked
            before = int(page.eval_on_selector(RESULTS, "el => Number(el.dataset.renders || 0)"))
            x, y = box["x"] + box["width"] * rng.uniform(0.2, 0.5), box["y"] + box["height"] * rng.uniform(0.2, 0.5)
            page.mouse.move(x, y)
            page.mouse.down()
            for step in range(1, 8):
                page.mouse.move(x + step * 12, y + step * 7 * rng.uniform(0.5, 1.5))
            page.mouse.up()
            page.wait_for_function(
                f"Number(document.querySelector('{RESULTS}').dataset.renders) > {before}", timeout=60_000
            )
            acked += 1  # painted in the page: the server answered after logging this stroke
        os.killpg(app.proc.pid, signal.SIGKILL)
        app.proc.wait(30)
        page.close()
    assert acked >= 1
    logs = sorted(log_dir.glob("P9__*.jsonl"))  # session id: the app's default (a timestamp)
    assert len(logs) == 1, logs
    records = read_log(logs[0])
    types = [r["type"] for r in records]
    assert types[:2] == ["session_start", "trial_start"], types
    strokes = [r for r in records if r["type"] == "stroke"]
    assert len(strokes) >= acked, f"{acked} strokes were answered but only {len(strokes)} logged"
    assert [r["stroke_index"] for r in strokes] == list(range(len(strokes)))
    assert all(r["points"] and r["participant"] == "P9" for r in strokes)
