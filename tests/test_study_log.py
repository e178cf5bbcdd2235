"""Study log: durable appends, torn-line tolerance, CSV/pandas export, path sanitising, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from retrieval.study_log import StudyLog, export_csv, iter_records, log_files, read_log, safe_id

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_append_writes_one_fsynced_line_per_record(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    log = StudyLog(tmp_path, "P01", "S1", common={"code_version": "abc"})
    log.append({"type": "stroke", "points": [[1.0, 2.0, 3.0]], "rank": float("nan")})
    log.append({"type": "undo", "t": 5.5})
    assert len(synced) == 2, "every record must be fsync'd before append returns"
    lines = log.path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["type"] == "stroke" and first["participant"] == "P01" and first["code_version"] == "abc"
    assert first["rank"] is None, "NaN must be written as null so every JSON parser reads the line"
    assert first["schema_version"] == 1 and first["written_utc"].endswith("Z")


def test_reopening_appends_and_one_file_per_session(tmp_path):
    StudyLog(tmp_path, "P01", "S1").append({"type": "session_start"})
    StudyLog(tmp_path, "P01", "S1").append({"type": "trial_start"})
    StudyLog(tmp_path, "P02", "S1").append({"type": "session_start"})
    assert [p.name for p in log_files(tmp_path)] == ["P01__S1.jsonl", "P02__S1.jsonl"]
    assert [r["type"] for r in read_log(tmp_path / "P01__S1.jsonl")] == ["session_start", "trial_start"]


def test_torn_last_line_is_skipped_and_repaired_on_next_append(tmp_path):
    log = StudyLog(tmp_path, "P", "S")
    log.append({"type": "stroke", "stroke_index": 0})
    with open(log.path, "ab") as f:
        f.write(b'{"type": "stroke", "stroke_ind')  # a writer killed mid-line
    assert [r["stroke_index"] for r in read_log(log.path)] == [0]
    StudyLog(tmp_path, "P", "S").append({"type": "stroke", "stroke_index": 1})
    with pytest.warns(UserWarning, match="torn record"):
        records = read_log(log.path)
    assert [r["stroke_index"] for r in records] == [0, 1], "the record after a torn line must stay whole"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("../../etc/passwd", "etc-passwd"), ("P 01/é", "P-01"), ("..", None), ("a" * 100, "a" * 64), ("", None)],
)
def test_safe_id_never_escapes_the_folder(tmp_path, raw, expected):
    if expected is None:
        with pytest.raises(ValueError, match="no usable characters"):
            safe_id(raw)
        return
    assert safe_id(raw) == expected
    log = StudyLog(tmp_path, raw, raw)
    assert log.path.parent == tmp_path.resolve()


def test_csv_export_and_pandas_load_both_files(tmp_path):
    log = StudyLog(tmp_path, "P", "S", common={"model_hash": "m"})
    log.append({"type": "trial_start", "trial": 0, "target_id": "chair_0001"})
    log.append({"type": "stroke", "trial": 0, "stroke_index": 0, "target_rank": 7, "points": [[1, 2, 3], [4, 5, 6]]})
    log.append({"type": "trial_end", "trial": 0, "found": True, "strokes_drawn": 1})
    frame = pd.read_json(log.path, lines=True)
    assert list(frame["type"]) == ["trial_start", "stroke", "trial_end"]
    out = export_csv(iter_records(tmp_path), tmp_path / "out" / "all.csv")
    table = pd.read_csv(out)
    assert list(table.columns[:3]) == ["schema_version", "type", "written_utc"]
    assert table.loc[1, "target_rank"] == 7
    assert json.loads(table.loc[1, "points"]) == [[1, 2, 3], [4, 5, 6]]


_WRITER = """
import sys
from retrieval.study_log import StudyLog
log = StudyLog(sys.argv[1], "P", "S")
i = 0
while True:
    log.append({"type": "stroke", "stroke_index": i, "points": [[float(j), float(j), float(j)] for j in range(200)]})
    print(i, flush=True)
    i += 1
"""


def test_sigkill_loses_no_acknowledged_record(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    acked = -1
    deadline = time.monotonic() + 60
    while acked < 20 and time.monotonic() < deadline:
        acked = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert acked >= 20, "writer did not acknowledge 20 records in time"
    records = read_log(tmp_path / "P__S.jsonl")
    indices = [r["stroke_index"] for r in records]
    assert indices[: acked + 1] == list(range(acked + 1)), "every acknowledged record must survive kill -9"
    assert all(len(r["points"]) == 200 for r in records)
