"""Study-grade integrity of one session (issues 14, 22): bounded work per request, validated fields,
events applied in order exactly once under a lock, strokes racing Next logged under their trial,
a journal checked against what was applied, records durable before state moves on.

A real :class:`Retriever` (small untrained encoder, 40-photo index) does the ranking; a spy on
the encoder counts forwards.
"""

from __future__ import annotations

import copy
import errno
import json
import threading

import numpy as np
import pytest

from retrieval.serving.index import PhotoIndex
from retrieval.serving.retriever import Retriever
from retrieval.study import log as study_log
from retrieval.study.log import StudyLog, read_log
from retrieval.study.payload import MAX_NEW_EVENTS, CanvasPayloadError, JournalWriter, parse_stroke_batch
from retrieval.study.plan import StudyConfig
from retrieval.ui.drawing_session import MAX_CURVE, DrawingSession, TrialClosedError

GALLERY = [f"photo_{i:03d}" for i in range(40)]


@pytest.fixture(scope="module")
def retriever(encoder):
    vectors = np.random.default_rng(0).standard_normal((len(GALLERY), encoder.meta["embed_dim"])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return Retriever(encoder, PhotoIndex.build(vectors, GALLERY))


@pytest.fixture
def forwards(retriever, monkeypatch):
    """Counts encoder forwards (the real forward still runs)."""
    calls = []
    real = retriever.encoder.embed_sketches
    monkeypatch.setattr(
        retriever.encoder, "embed_sketches", lambda rasters: (calls.append(len(rasters)), real(rasters))[1]
    )
    return calls


def _rank(retriever):
    return lambda sketch, target: retriever.rank(sketch, k=5, target_id=target)


def _stroke(seq, n=4, **extra):
    t = 100.0 * seq
    return {
        "type": "stroke",
        "pointer": "mouse",
        "t_down": t,
        "t_up": t + 40,
        "points": [[10.0 + 7 * i + seq, 20.0 + 5 * i, t + 10 * i, 0.5] for i in range(n)],
        **extra,
    }


def _send(session, writer: JournalWriter, events, rank, base=None):
    """Draw ``events`` and send the unacknowledged ones as one batch, as canvas.js does."""
    for event in events:
        writer.add(event)
    changed = session.apply(parse_stroke_batch(writer.batch(base)), rank)
    writer.acknowledge(session.acknowledged(writer.trial)[0])
    return changed


def _study(tmp_path, num_trials=3, found_k=1) -> DrawingSession:
    session = DrawingSession()
    config = StudyConfig(num_trials=num_trials, random_targets=num_trials, found_k=found_k, time_limit_s=0)
    session.begin_study(config, StudyLog.create(tmp_path, "P1", "S1"), GALLERY, {}, "CODE1-CODE2")
    return session


def _records(tmp_path, kind=None):
    records = read_log(tmp_path / "P1__S1.jsonl")
    return [r for r in records if kind is None or r["type"] == kind]


def test_a_crafted_2000_event_batch_costs_no_forward_and_the_largest_allowed_costs_one(tmp_path, retriever, forwards):
    session = _study(tmp_path)
    writer = JournalWriter(session.token)
    for seq in range(1, 2001):  # stroke, then (stroke, undo) pairs: never an empty canvas
        writer.add(_stroke(seq, n=3) if seq % 2 else {"type": "undo", "t": 1.0})
    crafted = writer.batch() | {"events": list(writer.texts.values())}
    with pytest.raises(CanvasPayloadError, match=f"at most {MAX_NEW_EVENTS} event texts"):
        session.apply(parse_stroke_batch(crafted), _rank(retriever))
    assert forwards == [] and _records(tmp_path, "stroke") == [], "a refused batch costs no forward, logs nothing"

    writer = JournalWriter(session.token)
    assert _send(session, writer, [_stroke(seq) for seq in range(1, MAX_NEW_EVENTS + 1)], _rank(retriever))
    assert forwards == [1], "however many events a request carries, the latest state is ranked once"
    strokes = _records(tmp_path, "stroke")
    assert [r["seq"] for r in strokes] == list(range(1, MAX_NEW_EVENTS + 1)), "each event logged exactly once"
    assert [r["ranked"] for r in strokes] == [False] * (MAX_NEW_EVENTS - 1) + [True]
    (ranking,) = _records(tmp_path, "rank")
    assert ranking["strokes_on_canvas"] == MAX_NEW_EVENTS and isinstance(ranking["target_rank"], int)
    session.apply(parse_stroke_batch(writer.batch(base=0)), _rank(retriever))
    assert forwards == [1] and len(_records(tmp_path, "stroke")) == MAX_NEW_EVENTS, "a re-sent batch adds nothing"


HOSTILE = {
    "10 MB dpr": ({"dpr": "9" * 10_000_000}, "dpr must be a number"),
    "huge dpr": ({"dpr": 1e300}, "dpr must be a number"),
    "string clock": ({"t0_utc_ms": "yesterday"}, "t0_utc_ms must be a number"),
    "token object": ({"trial": {"a": 1}}, "trial must be a token string"),
    "nested pointer": ([_stroke(1, pointer=[[[[]]]])], "pointer must be one of"),
    "long pointer": ([_stroke(1, pointer="pen" * 100_000)], "pointer must be one of"),
    "list t_down": ([_stroke(1, t_down=[1, 2])], "t_down must be a number"),
    "NaN t_up": ([_stroke(1, t_up=float("nan"))], "t_up must be a number"),
    "undo time object": ([_stroke(1), {"type": "undo", "t": {"x": 1}}], "t must be a number"),
    "float seq": ([_stroke(1) | {"seq": 1.5}], "seq must be 1"),
    "bool seq": ([_stroke(1) | {"seq": True}], "seq must be 1"),
    "seq repeats": ([_stroke(1), _stroke(2) | {"seq": 1}], "seq must be 2"),
    "seq jumps": ([_stroke(1), _stroke(2) | {"seq": 10**9}], "seq must be 2"),
    "batch starts late": ({"base": 4, "events": [json.dumps({"seq": 5, **_stroke(5)})]}, "events after 0 are missing"),
    "made-up history": ({"chain": "0badc0de"}, "differs from what the server applied"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_fields_are_refused_with_a_clear_message_and_nothing_is_logged(tmp_path, retriever, name):
    session = _study(tmp_path)
    change, message = HOSTILE[name]
    writer = JournalWriter(session.token)
    if isinstance(change, list):  # events as a client may write them (seq overrides in the event)
        texts = [json.dumps({"seq": i, **event}) for i, event in enumerate(change, start=1)]
        payload = writer.batch() | {"events": texts}
    else:
        writer.add(_stroke(1))
        payload = writer.batch() | change
    with pytest.raises(ValueError, match=message):
        session.apply(parse_stroke_batch(payload), _rank(retriever))
    assert _records(tmp_path, "stroke") == []
    assert _send(session, JournalWriter(session.token), [_stroke(1)], _rank(retriever)), "the session keeps working"


def test_deeply_nested_json_text_is_a_clear_error_not_a_recursion_error():
    with pytest.raises(CanvasPayloadError, match="not valid JSON"):
        parse_stroke_batch("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CanvasPayloadError, match="event 0 is not valid JSON"):
        parse_stroke_batch({"trial": "t", "events": ["[" * 100_000 + "]" * 100_000]})


def test_unknown_fields_never_reach_the_log(tmp_path, retriever):
    session = _study(tmp_path)
    deep: list = []
    for _ in range(5000):  # deeper than json.dumps can write
        deep = [deep]
    writer = JournalWriter(session.token)
    text = json.dumps({"seq": 1, **_stroke(1, brush=4, extra={"blob": "x" * 1000})})
    session.apply(parse_stroke_batch(writer.batch() | {"events": [text], "evil": deep}), _rank(retriever))
    (record,) = _records(tmp_path, "stroke")
    assert "evil" not in record and "blob" not in str(record) and "brush" not in record
    assert record["points"][0] == [11.0, 20.0, 100.0, 0.5] and record["pointer"] == "mouse"


class WatchedLock:
    """The session's re-entrant lock, telling when another thread had to wait for it."""

    def __init__(self, lock) -> None:
        self.lock, self.contended = lock, threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self.lock.acquire(blocking=False):
            return True
        self.contended.set()
        return blocking and self.lock.acquire(True, timeout)

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def test_next_waits_for_a_stroke_being_ranked_which_is_logged_under_its_own_trial(tmp_path, retriever):
    session = _study(tmp_path)
    first_trial = session.current
    token = session.token
    ranking, release = threading.Event(), threading.Event()

    def slow_rank(sketch, target):
        ranking.set()
        release.wait(10)
        return retriever.rank(sketch, k=5, target_id=target)

    session.lock = watched = WatchedLock(session.lock)
    stroke = threading.Thread(target=_send, args=(session, JournalWriter(token), [_stroke(1)], slow_rank))
    stroke.start()
    assert ranking.wait(10)

    def give_up_and_next():  # what the app's Give up + Next handlers do
        session.give_up(token)
        session.advance(token)

    buttons = threading.Thread(target=give_up_and_next)
    buttons.start()
    assert watched.contended.wait(10), "Give up should have to wait for the stroke being ranked"
    release.set()
    stroke.join(10)
    buttons.join(10)
    assert not stroke.is_alive() and not buttons.is_alive()
    records = _records(tmp_path)
    kinds = ["session_start", "trial_start", "stroke", "rank", "trial_end", "trial_start"]
    assert [r["type"] for r in records] == kinds
    logged = records[2]
    assert logged["trial"] == first_trial.index and logged["target_id"] == first_trial.target_id
    assert logged["trial_token"] == token and logged["phase"] == "drawing"
    assert session.trial == 1 and session.phase == "drawing" and session.strokes_drawn == 0


def test_a_stroke_that_reaches_the_server_after_next_is_logged_under_its_trial_not_lost(tmp_path, retriever):
    session = _study(tmp_path)
    first_trial, old = session.current, JournalWriter(session.token)
    _send(session, old, [_stroke(1)], _rank(retriever))
    session.give_up(old.trial)
    session.advance(old.trial)
    changed = _send(session, old, [_stroke(2)], _rank(retriever))
    assert not changed, "a late stroke of the previous trial does not touch the current one"
    assert session.strokes_drawn == 0 and session.last is None and session.phase == "drawing"
    late = _records(tmp_path, "stroke")[-1]
    assert late["seq"] == 2 and late["stroke_index"] == 1 and late["trial"] == first_trial.index
    assert late["target_id"] == first_trial.target_id and late["phase"] == "gave_up" and not late["ranked"]
    with pytest.raises(TrialClosedError):
        _send(session, JournalWriter("unknown-token"), [_stroke(1)], _rank(retriever))


@pytest.mark.slow
def test_the_rank_curve_kept_and_sent_is_bounded(retriever):
    session = DrawingSession()
    session.new_sketch(GALLERY[0])
    writer = JournalWriter(session.token)
    for seq in range(1, MAX_CURVE + 41):
        _send(session, writer, [_stroke(seq, n=2)], _rank(retriever))
    assert len(session.curve) == MAX_CURVE


def test_a_session_copies_with_its_own_lock():
    session = DrawingSession()
    clone = copy.deepcopy(session)
    assert clone.lock is not session.lock and clone.token == session.token
    with session.lock:
        assert clone.lock.acquire(timeout=1), "the copy's lock is independent"
        clone.lock.release()


def _disk_full(fd, data, path):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def test_a_stroke_whose_record_could_not_be_written_is_logged_when_the_batch_comes_again(
    tmp_path, retriever, monkeypatch
):
    session = _study(tmp_path)
    writer = JournalWriter(session.token)
    # every write fails with ENOSPC, as on a full disk (a link to /dev/full would be refused as a link)
    with monkeypatch.context() as patch:
        patch.setattr(study_log, "_write_all", _disk_full)
        with pytest.raises(OSError, match="No space left"):
            _send(session, writer, [_stroke(1)], _rank(retriever))
    assert session.acknowledged(writer.trial) == (0, "00000000"), "nothing applied without its record"
    _send(session, writer, [_stroke(2)], _rank(retriever))
    assert [(r["seq"], r["stroke_index"]) for r in _records(tmp_path, "stroke")] == [(1, 0), (2, 1)]
