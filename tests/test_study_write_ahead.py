"""The study session under attack and failure (issue 22): a replayed or rewritten journal, strokes
after a trial ended, a disk that refuses writes, repeated button presses, a ranker that is down,
resuming. Each test drives :class:`DrawingSession` directly (no server) and reads the log on disk.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, field

import pytest

from retrieval.study import log as study_log
from retrieval.study.log import StudyLog, read_log
from retrieval.study.payload import MAX_POINTS, JournalWriter, parse_stroke_batch
from retrieval.study.plan import StudyConfig
from retrieval.study.resume import ResumeRefusedError, resume_point
from retrieval.study.sketch_state import QuotaError, SyncError, TrialClosedError
from retrieval.study.trials import ENDED_GRACE_S, TrialNotEndedError
from retrieval.ui.drawing_session import DrawingSession, RankingError
from tests.rank_stub import RankResultStub

GALLERY = [f"photo_{i:03d}" for i in range(40)]
CODE = "K7QFM-2XAB9"


@dataclass
class CountingRank:
    """Stands in for Retriever.rank: records what it was asked; the target never rises above 5."""

    strokes_ranked: list = field(default_factory=list)
    fail: bool = False

    def __call__(self, sketch, target_id):
        if self.fail:
            raise ConnectionError("the ranking cluster is down")
        self.strokes_ranked.append(sketch.num_strokes)
        return RankResultStub(GALLERY[:3], [0.9, 0.5, 0.1], 5 if target_id else None, {"total": 1.0})


def _stroke(i, n=4):
    return {
        "type": "stroke",
        "pointer": "pen",
        "t_down": 100.0 * i,
        "t_up": 100.0 * i + 40,
        "points": [[5.0 + 9 * j + i, 8.0 + 4 * j, 100.0 * i + 10 * j, 0.5] for j in range(n)],
    }


def _send(session, writer, events, rank, base=None):
    for event in events:
        writer.add(event)
    changed = session.apply(parse_stroke_batch(writer.batch(base)), rank)
    writer.acknowledge(session.acknowledged(writer.trial)[0])
    return changed


def _study(tmp_path, num_trials=3, time_limit_s=0.0, participant="P1") -> DrawingSession:
    session = DrawingSession()
    config = StudyConfig(num_trials=num_trials, random_targets=num_trials, time_limit_s=time_limit_s)
    session.begin_study(config, StudyLog.create(tmp_path, participant, "S1"), GALLERY, {}, CODE)
    return session


def _records(tmp_path, kind=None, participant="P1"):
    return [r for r in read_log(tmp_path / f"{participant}__S1.jsonl") if kind is None or r["type"] == kind]


def _disk_full(fd, data, path):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def _half_then_disk_full(fd, data, path):
    os.write(fd, data[: len(data) // 2])
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


# --- the journal is what was ranked ------------------------------------------------------------------
def test_a_journal_replayed_as_clears_is_refused_and_frees_no_point_budget(tmp_path):
    session, rank = _study(tmp_path), CountingRank()
    writer = JournalWriter(session.token)
    for i in range(5):
        _send(session, writer, [_stroke(i, n=200)], rank)
    # The attack of issue 22: the same journal re-sent with its strokes rewritten as clears.
    forged = JournalWriter(session.token)
    for _ in range(5):
        forged.add({"type": "clear", "t": 1.0})
    forged.add(_stroke(9, n=200))
    with pytest.raises(SyncError, match="differs from what the server applied at seq 1") as refused:
        session.apply(parse_stroke_batch(forged.batch(base=0)), rank)
    assert (refused.value.applied, refused.value.chain) == (5, writer.chains[5]), "the answer says where to go on"
    assert session.sketch.points_logged == 1000 and len(session.sketch.strokes) == 5
    strokes = _records(tmp_path, "stroke")
    assert len(strokes) == 5 == len(rank.strokes_ranked), "the log holds exactly the strokes the ranker saw"
    assert rank.strokes_ranked == [1, 2, 3, 4, 5]


def test_a_trial_logs_at_most_its_point_quota_whatever_the_journal_says(tmp_path):
    session, rank = _study(tmp_path), CountingRank()
    writer = JournalWriter(session.token)
    per_stroke = 5_000
    for i in range(MAX_POINTS // per_stroke):
        _send(session, writer, [_stroke(i, n=per_stroke), {"type": "clear", "t": 1.0}], rank)
    with pytest.raises(QuotaError, match=f"at most {MAX_POINTS} points"):
        _send(session, writer, [_stroke(99, n=10)], rank)
    logged = sum(len(r["points"]) for r in _records(tmp_path, "stroke"))
    assert logged == MAX_POINTS, "clears free no budget in a study: the log holds every point"


def test_a_batch_resent_after_its_answer_was_lost_is_recognised_and_not_logged_twice(tmp_path):
    session, rank = _study(tmp_path), CountingRank()
    writer = JournalWriter(session.token)
    _send(session, writer, [_stroke(1)], rank)
    writer.add(_stroke(2))
    lost = parse_stroke_batch(writer.batch())
    session.apply(lost, rank)  # applied, but the answer never reached the canvas
    writer.add(_stroke(3))
    session.apply(parse_stroke_batch(writer.batch()), rank)  # events 2 and 3 again from base 1
    assert [r["seq"] for r in _records(tmp_path, "stroke")] == [1, 2, 3]


# --- ended trials -------------------------------------------------------------------------------------
def test_an_ended_trial_takes_strokes_only_within_the_grace_window(tmp_path):
    session, rank = _study(tmp_path), CountingRank()
    writer = JournalWriter(session.token)
    _send(session, writer, [_stroke(1)], rank)
    session.give_up(writer.trial)
    _send(session, writer, [_stroke(2)], rank)  # raced the button: logged under its trial, not ranked
    session.sketch.ended_mono -= ENDED_GRACE_S + 1
    with pytest.raises(TrialClosedError, match="has ended"):
        _send(session, writer, [_stroke(3)], rank)
    assert [(r["seq"], r["phase"]) for r in _records(tmp_path, "stroke")] == [(1, "drawing"), (2, "gave_up")]
    assert rank.strokes_ranked == [1]


# --- records before state -----------------------------------------------------------------------------
def test_give_up_and_next_change_nothing_when_their_record_cannot_be_written(tmp_path, monkeypatch):
    session, rank = _study(tmp_path), CountingRank()
    token = session.token
    _send(session, JournalWriter(token), [_stroke(1)], rank)
    with monkeypatch.context() as patch:
        patch.setattr(study_log, "_write_all", _disk_full)
        with pytest.raises(OSError):
            session.give_up(token)
        assert session.phase == "drawing", "no trial_end on disk: the trial goes on"
    session.give_up(token)
    with monkeypatch.context() as patch:
        patch.setattr(study_log, "_write_all", _disk_full)
        with pytest.raises(OSError):
            session.advance(token)
        assert session.token == token and session.trial == 0, "no trial_start on disk: still the ended trial"
    session.advance(token)
    kinds = [(r["type"], r.get("trial")) for r in _records(tmp_path) if r["type"] != "session_start"]
    assert kinds == [("trial_start", 0), ("stroke", 0), ("rank", 0), ("trial_end", 0), ("trial_start", 1)]


def test_a_batch_that_fails_half_written_is_cut_back_so_a_retry_writes_it_once(tmp_path, monkeypatch):
    session, rank = _study(tmp_path), CountingRank()
    writer = JournalWriter(session.token)
    size = (tmp_path / "P1__S1.jsonl").stat().st_size
    with monkeypatch.context() as patch:
        patch.setattr(study_log, "_write_all", _half_then_disk_full)
        with pytest.raises(OSError):
            _send(session, writer, [_stroke(1), _stroke(2)], rank)
    assert (tmp_path / "P1__S1.jsonl").stat().st_size == size, "the half-written batch was truncated away"
    session.apply(parse_stroke_batch(writer.batch()), rank)
    assert [r["seq"] for r in _records(tmp_path, "stroke")] == [1, 2]


def test_a_start_whose_records_cannot_be_written_leaves_the_session_unstarted(tmp_path, monkeypatch):
    session = DrawingSession(mode="study")  # as the app's session table makes them in study mode
    log = StudyLog.create(tmp_path, "P1", "S1")
    with monkeypatch.context() as patch:
        patch.setattr(study_log, "_write_all", _disk_full)
        with pytest.raises(OSError):
            session.begin_study(StudyConfig(num_trials=2, random_targets=2), log, GALLERY, {}, CODE)
    assert session.phase == "consent" and session.log is None
    log.discard_if_empty()
    assert not log.path.exists(), "a start that never wrote leaves no file behind"


# --- repeated requests --------------------------------------------------------------------------------
def test_give_up_and_next_pressed_twice_act_once(tmp_path):
    session = _study(tmp_path, num_trials=3)
    first = session.token
    assert session.give_up(first) and not session.give_up(first)
    session.advance(first)
    second = session.token
    session.advance(first)  # the repeated Next, from the trial that already ended
    assert session.token == second and session.trial == 1, "a repeated Next skips no trial"
    with pytest.raises(TrialNotEndedError):
        session.advance(second)  # Next while drawing would leave a trial without trial_end
    ends = [r["trial"] for r in _records(tmp_path, "trial_end")]
    starts = [r["trial"] for r in _records(tmp_path, "trial_start")]
    assert ends == [0] and starts == [0, 1]


def test_give_up_after_the_time_limit_is_logged_as_timed_out(tmp_path):
    session = _study(tmp_path, time_limit_s=5)
    session.sketch.start_mono -= 10
    assert session.give_up(session.token)
    (end,) = _records(tmp_path, "trial_end")
    assert end["outcome"] == "timed_out" and session.phase == "timed_out"


# --- ranker failure -----------------------------------------------------------------------------------
def test_a_ranker_that_fails_loses_no_stroke(tmp_path):
    session, rank = _study(tmp_path), CountingRank(fail=True)
    writer = JournalWriter(session.token)
    for i in range(3):
        with pytest.raises(RankingError, match="strokes are saved"):
            _send(session, writer, [_stroke(i)], rank)
    assert [r["seq"] for r in _records(tmp_path, "stroke")] == [1, 2, 3]
    assert all("error" in r for r in _records(tmp_path, "rank"))
    session.give_up(writer.trial)
    (end,) = _records(tmp_path, "trial_end")
    assert end["strokes_drawn"] == 3


def test_each_rank_record_carries_its_answers_snapshot_and_flags_an_interval(tmp_path):
    """The log's common snapshot is the one at start; a cluster redeployed mid-session answers with
    another, and a rank whose shards missed their deadline is an interval, never logged as exact."""
    session = DrawingSession()
    config = StudyConfig(num_trials=1, random_targets=1)
    session.begin_study(config, StudyLog.create(tmp_path, "P1", "S1", {"snapshot": "enc-old"}), GALLERY, {}, CODE)
    answers = iter([(5, True, None, "enc-old"), (7, False, (4, 29), "enc-new")])

    def rank(sketch, target_id):
        target_rank, exact, bounds, snapshot = next(answers)
        return RankResultStub(GALLERY[:3], [0.9, 0.5, 0.1], target_rank, {}, exact, bounds, snapshot)

    writer = JournalWriter(session.token)
    for i in range(2):
        _send(session, writer, [_stroke(i)], rank)
    first, second = _records(tmp_path, "rank")
    assert first["snapshot"] == "enc-old" and "rank_exact" not in first
    assert (second["snapshot"], second["rank_exact"], second["rank_bounds"]) == ("enc-new", False, [4, 29])
    assert all(r["snapshot"] == "enc-old" for r in _records(tmp_path, "stroke"))


# --- resume -------------------------------------------------------------------------------------------
def test_resume_needs_the_code_and_goes_on_at_the_first_unfinished_trial(tmp_path):
    session, rank = _study(tmp_path, num_trials=3), CountingRank()
    session.give_up(session.token)
    session.advance(session.token)  # trial 0 ended; trial 1 started, then the browser died
    _send(session, JournalWriter(session.token), [_stroke(1)], rank)
    records = read_log(tmp_path / "P1__S1.jsonl")
    assert "K7QFM" not in json.dumps(records), "the log holds only a hash of the code"
    for wrong in ("", "K7QFM-2XAB8"):
        with pytest.raises(ResumeRefusedError, match="does not match"):
            resume_point(records, wrong)

    resumed = DrawingSession()
    log = StudyLog.create(tmp_path, "P1", "S1", resume=True)
    resumed.resume_study(session.config, log, GALLERY, resume_point(records, " k7qfm 2xab9 "))
    assert resumed.trial == 1 and resumed.phase == "drawing"
    starts = [(r["trial"], r.get("resumed", False)) for r in _records(tmp_path, "trial_start")]
    assert starts == [(0, False), (1, False), (1, True)], "no second trial 0"
    assert [r["type"] for r in _records(tmp_path)].count("session_start") == 1
