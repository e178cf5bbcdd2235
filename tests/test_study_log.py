"""Study log: durable appends, torn-line tolerance, CSV/pandas export, path sanitising, file modes, kill -9."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from retrieval.provenance import PROJECT_ROOT as REPO_ROOT
from retrieval.study.log import (
    NoSessionLogError,
    SessionExistsError,
    StudyLog,
    export_csv,
    iter_records,
    log_files,
    read_log,
)
from retrieval.study.log_names import IdCaseCollisionError, decode_id, encode_id
from retrieval.study.private_files import UnsafeLogPathError


def test_append_writes_one_fsynced_line_per_record(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    log = StudyLog.create(tmp_path, "P01", "S1", common={"code_version": "abc"})
    synced.clear()  # the folder, after the file was created
    log.append({"type": "stroke", "points": [[1.0, 2.0, 3.0]], "rank": float("nan")})
    log.append({"type": "undo", "t": 5.5})
    assert len(synced) == 2, "every record must be fsync'd before append returns"
    lines = log.path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["type"] == "stroke" and first["participant"] == "P01" and first["code_version"] == "abc"
    assert first["rank"] is None, "NaN must be written as null so every JSON parser reads the line"
    assert first["schema_version"] == 2 and first["written_utc"].endswith("Z")


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
    [("P07", "P07"), ("../../etc/passwd", "_2E._2F.._2Fetc_2Fpasswd"), ("P 01/é", "P_2001_2F_C3_A9"), ("a_b", "a_5Fb")],
)
def test_ids_encode_reversibly_and_never_escape_the_folder(tmp_path, raw, expected):
    assert encode_id(raw) == expected and decode_id(expected) == raw
    log = StudyLog(tmp_path, raw, raw)
    assert log.path.parent == tmp_path.resolve() and "/" not in log.path.name


@pytest.mark.parametrize(
    ("raw", "message"), [("", "empty"), ("  ", "empty"), ("a" * 65, "at most 64"), ("P\n1", "control")]
)
def test_unusable_ids_are_refused_not_cut(tmp_path, raw, message):
    with pytest.raises(ValueError, match=message):
        StudyLog(tmp_path, raw, "S1")


def test_the_id_limit_counts_utf8_bytes_not_characters(tmp_path):
    cjk = "参加者" * 10  # 30 characters, 90 bytes in UTF-8: the old check passed it, the file system refused it
    with pytest.raises(ValueError, match="90 bytes.*at most 64 bytes"):
        StudyLog.create(tmp_path, cjk, "S1")
    assert list(tmp_path.iterdir()) == [], "a refused id must leave no file behind"


def test_an_id_whose_file_name_part_would_not_fit_is_refused_naming_the_limit(tmp_path):
    accented = "é" * 21  # 42 bytes (under 64), each escaped to 3 characters: 126 in the file name
    with pytest.raises(ValueError, match=r"126 characters in the log's file name, at most 123"):
        StudyLog.create(tmp_path, accented, "S1")


def test_the_longest_allowed_ids_still_make_a_file_name_the_file_system_accepts(tmp_path):
    longest = "é" * 20 + "abc"  # 43 bytes, 123 characters once encoded: the longest file-name part allowed
    log = StudyLog.create(tmp_path, longest, longest)
    log.append({"type": "session_start"})
    assert len(log.path.name.encode()) <= 255 and read_log(log.path)[0]["participant"] == longest


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("a__b", "c"), ("a", "b__c")),
        (("P 07", "S"), ("P/07", "S")),
        (("P.", "S"), ("P-", "S")),
        (("a" * 64, "S"), ("a" * 64 + "b", "S")),
    ],
)
def test_different_participant_session_pairs_never_share_a_file(tmp_path, first, second):
    try:
        other = StudyLog.create(tmp_path, *second)
    except ValueError:
        return  # refused outright (e.g. too long): cannot collide either
    log = StudyLog.create(tmp_path, *first)
    assert log.path != other.path
    log.append({"type": "session_start"})
    assert read_log(other.path) == [], "one participant's records must never land in another's file"


def test_an_existing_session_is_refused_unless_resuming(tmp_path):
    StudyLog.create(tmp_path, "P01", "S1").append({"type": "session_start"})
    with pytest.raises(SessionExistsError, match="already has a log for session 'S1'"):
        StudyLog.create(tmp_path, "P01", "S1")
    StudyLog.create(tmp_path, "P01", "S1", resume=True).append({"type": "session_start"})
    assert [r["participant"] for r in read_log(tmp_path / "P01__S1.jsonl")] == ["P01", "P01"]


def test_creating_a_session_file_fsyncs_the_folder(tmp_path, monkeypatch):
    synced_dirs = []
    real_fsync = os.fsync

    def spy(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced_dirs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    StudyLog.create(tmp_path / "logs", "P", "S")
    assert len(synced_dirs) == 2, "the new folder's parent and the folder holding the new file"
    StudyLog(tmp_path / "logs2", "P", "S").append({"type": "session_start"})
    assert len(synced_dirs) == 3, "append on a file it created fsyncs the folder too"


_SHORT_WRITE = """
import resource, signal, sys
from retrieval.study.log import StudyLog
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the size limit a write comes up short instead
log = StudyLog(sys.argv[1], "P", "S")
log.append({"type": "stroke", "stroke_index": 0})
size = log.path.stat().st_size
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, hard))
try:
    log.append({"type": "stroke", "stroke_index": 1, "points": [[1.0, 2.0, 3.0]] * 50})
except OSError as exc:
    print("refused:", exc)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
log.append({"type": "stroke", "stroke_index": 2})
"""


def test_a_short_write_is_cut_back_and_never_corrupts_the_next_record(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", _SHORT_WRITE, str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "refused:" in out.stdout, out.stderr[-2000:]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no torn fragment left to skip: the failed write was truncated
        records = read_log(tmp_path / "P__S.jsonl")
    assert [r["stroke_index"] for r in records] == [0, 2], "the record after a short write must stay whole"


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


def test_csv_export_escapes_formula_cells_but_keeps_numbers_and_the_jsonl_exact(tmp_path):
    hostile = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    log = StudyLog(tmp_path, "-P07", "S")
    for i, text in enumerate(hostile):
        log.append({"type": "note", "trial": i, "text": text, "score": -3.5})
    assert [r["text"] for r in read_log(log.path)] == hostile, "the JSONL log keeps every value exactly"
    table = pd.read_csv(export_csv(iter_records(tmp_path), tmp_path / "all.csv"), keep_default_na=False)
    assert list(table["text"]) == ["'" + text for text in hostile]
    assert set(table["participant"]) == {"'-P07"}, "an id that starts like a formula is escaped too"
    assert table["score"].dtype == float and set(table["score"]) == {-3.5}, "negative numbers stay numbers"
    assert list(table["trial"]) == list(range(len(hostile)))


_WRITER = """
import sys
from retrieval.study.log import StudyLog
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


@pytest.fixture
def umask_022():
    """The usual umask, under which the old code made 0755 folders and 0644 files."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_log_files_are_private_to_the_account_running_the_app(tmp_path, umask_022):
    StudyLog.create(tmp_path / "logs", "P01", "S1").append({"type": "session_start"})
    StudyLog(tmp_path / "logs2", "P01", "S1").append({"type": "session_start"})
    for folder in ("logs", "logs2"):
        assert _mode(tmp_path / folder) == 0o700, "only the app's account may list the participants' logs"
        assert _mode(tmp_path / folder / "P01__S1.jsonl") == 0o600, "only the app's account may read a log"


def test_a_log_folder_and_file_readable_by_others_are_made_private_with_a_warning(tmp_path, umask_022):
    folder = tmp_path / "logs"
    folder.mkdir(mode=0o755)
    (folder / "P01__S1.jsonl").write_text("")
    (folder / "P01__S1.jsonl").chmod(0o644)  # as an older version left them
    with pytest.warns(UserWarning, match="made it private") as record:
        StudyLog.create(folder, "P01", "S1", resume=True).append({"type": "session_start"})
    assert _mode(folder) == 0o700 and _mode(folder / "P01__S1.jsonl") == 0o600
    assert any(str(folder) in str(w.message) for w in record), "the warning must name the folder it changed"


@pytest.mark.parametrize("target_exists", [True, False])
@pytest.mark.parametrize("how", ["append", "create", "resume"])
def test_a_symlink_planted_at_the_log_path_is_refused_and_nothing_is_written_through_it(tmp_path, how, target_exists):
    folder, target = tmp_path / "logs", tmp_path / "victim.txt"
    folder.mkdir(mode=0o700)
    if target_exists:
        target.write_text("precious\n")
    os.symlink(target, folder / "P01__S1.jsonl")
    with pytest.raises(UnsafeLogPathError, match="symbolic link"):
        if how == "append":
            StudyLog(folder, "P01", "S1").append({"type": "session_start"})
        else:
            StudyLog.create(folder, "P01", "S1", resume=how == "resume").append({"type": "session_start"})
    if target_exists:
        assert target.read_text() == "precious\n", "a log record was written through the link"
    else:
        assert not target.exists(), "the log created the file the dangling link points at"


def test_a_file_system_with_shorter_file_names_is_refused_with_its_limit(tmp_path, monkeypatch):
    real = os.fpathconf
    # eCryptfs allows 143 bytes; 100 here so that ids under both caps can cross it.
    monkeypatch.setattr(os, "fpathconf", lambda fd, name: 100 if name == "PC_NAME_MAX" else real(fd, name))
    with pytest.raises(ValueError, match="101 bytes.*at most 100 bytes"):
        StudyLog.create(tmp_path, "P" * 50, "S" * 43)  # 50 + 2 + 43 + 6 = 101 bytes
    assert StudyLog.create(tmp_path, "P" * 50, "S" * 42).path.exists()


@pytest.mark.parametrize(
    ("first", "second", "which"),
    [(("P07", "S1"), ("p07", "S2"), "participant 'P07'"), (("P07", "S1"), ("P07", "s1"), "session 'S1'")],
)
def test_ids_differing_from_an_existing_log_only_in_case_are_refused(tmp_path, first, second, which):
    StudyLog.create(tmp_path, *first).append({"type": "session_start"})
    with pytest.raises(IdCaseCollisionError, match=f"only in case from {which}"):
        StudyLog.create(tmp_path, *second)
    with pytest.raises(IdCaseCollisionError):
        StudyLog.create(tmp_path, *second, resume=True)  # checked before "no such session to resume"
    assert [p.name for p in log_files(tmp_path)] == [f"{first[0]}__{first[1]}.jsonl"]
    StudyLog.create(tmp_path, *first, resume=True)  # the exact ids still resume
    StudyLog.create(tmp_path, "P08", "S1")  # and a different participant still starts


def test_resuming_a_session_that_has_no_log_is_refused_and_makes_no_file(tmp_path):
    with pytest.raises(NoSessionLogError, match="no log for session 'S9' to resume"):
        StudyLog.create(tmp_path, "P01", "S9", resume=True)
    assert log_files(tmp_path) == []
