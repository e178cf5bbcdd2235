"""Study config, trial planning, stroke batch parsing and the trial state machine."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from retrieval.provenance import PROJECT_ROOT as REPO_ROOT
from retrieval.study.log import StudyLog, read_log
from retrieval.study.log_rankings import with_rankings
from retrieval.study.payload import JournalWriter, chain_after, parse_stroke_batch, replay, strokes_to_sketch
from retrieval.study.plan import StudyConfig, plan_trials
from retrieval.ui.drawing_session import DrawingSession, TrialClosedError
from tests.rank_stub import RankResultStub

GALLERY = [f"photo_{i:03d}" for i in range(40)]


@dataclass
class FakeRank:
    """Stands in for Retriever.rank: the target rises by 3 places per stroke (10, 7, 4, 1)."""

    calls: list = field(default_factory=list)

    def __call__(self, sketch, target_id):
        self.calls.append(sketch.num_strokes)
        rank = max(1, 13 - 3 * sketch.num_strokes) if target_id else None
        ids = [target_id] if rank == 1 else GALLERY[:3]
        return RankResultStub(ids=ids, scores=[0.9, 0.5, 0.1][: len(ids)], target_rank=rank, timings_ms={"embed": 1.0})


def _stroke(seq, n=5, t=0.0):
    return {
        "type": "stroke",
        "pointer": "mouse",
        "t_down": t,
        "t_up": t + 50,
        "points": [[10.0 + i, 20.0 + i, t + 10 * i, 0.5] for i in range(n)],
    }


def _send(session, events, rank, writer=None):
    """Draw ``events`` on the session's canvas and send them as one batch (what canvas.js does)."""
    writer = writer or _writers.setdefault(session.token, JournalWriter(session.token, 400, 300, dpr=2))
    for event in events:
        writer.add(event)
    changed = session.apply(parse_stroke_batch(writer.batch()), rank)
    writer.acknowledge(session.acknowledged(writer.trial)[0])
    return changed


_writers: dict[str, JournalWriter] = {}


def test_example_config_loads_and_plans_deterministically():
    config = StudyConfig.load(REPO_ROOT / "assets" / "study_example.json")
    plan_a = plan_trials(config, GALLERY, "P01")
    assert plan_a == plan_trials(config, GALLERY, "P01")
    assert len(plan_a) == config.num_trials and {p.target_id for p in plan_a} <= set(GALLERY)
    assert [p.target_id for p in plan_a] != [p.target_id for p in plan_trials(config, GALLERY, "P02")]


def test_config_rejects_typos_and_unknown_targets(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"num_trails": 3}))
    with pytest.raises(ValueError, match="unknown study config keys"):
        StudyConfig.load(bad)
    with pytest.raises(ValueError, match="not in the gallery"):
        plan_trials(StudyConfig(targets=("nope",)), GALLERY, "P")
    with pytest.raises(ValueError, match="time_limit_s"):
        StudyConfig(time_limit_s=float("nan"))


def _batch(*events, **fields):
    texts = [e if isinstance(e, str) else json.dumps(e) for e in events]
    return {"trial": "t", "events": texts, **fields}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2], "JSON object"),
        ({"events": []}, "trial must be a token"),
        (_batch({"seq": 1, "type": "draw"}), "type in"),
        (_batch({"seq": 1, "type": "stroke", "points": []}), "empty"),
        (_batch({"seq": 1, "type": "stroke", "points": [[1, float("nan"), 0]]}), "NaN"),
        (_batch({"seq": 1, "type": "stroke", "points": [[1, 2]]}), "must be"),
        (_batch({"seq": 1, "type": "stroke", "points": [[0, 0, 0]] * 60_000}), "over the limit"),
        (_batch({"seq": "x", "type": "undo"}), "seq must be 1"),
        (_batch({"seq": 1, "type": "undo"}, base=3), "seq must be 4"),
        (_batch("{not json"), "event 0 is not valid JSON"),
        (_batch({"seq": 1, "type": "undo"}, chain="XYZ"), "chain must be 8 lowercase hex"),
        (_batch(width=-1), "width must be a number in"),
        (_batch(*[{"seq": i, "type": "undo"} for i in range(1, 62)]), "at most 60 event texts"),
    ],
)
def test_bad_stroke_batches_say_what_is_wrong(payload, message):
    with pytest.raises(ValueError, match=message):
        parse_stroke_batch(payload)


def test_the_chain_is_a_running_crc32_of_the_event_texts():
    import zlib

    texts = ['{"seq":1,"type":"undo"}', '{"seq":2,"type":"clear","t":5}']
    batch = parse_stroke_batch({"trial": "t", "events": texts})
    whole = zlib.crc32("".join(t + "\n" for t in texts).encode())
    assert batch.chains == (chain_after("00000000", texts[0]), f"{whole:08x}")


def test_replay_undo_clear_and_sketch_times():
    undo, clear = {"seq": 3, "type": "undo"}, {"seq": 4, "type": "clear"}
    with_seq = [{"seq": 1, **_stroke(1, t=100)}, {"seq": 2, **_stroke(2, t=300)}]
    events = parse_stroke_batch(_batch(*with_seq, undo)).events
    strokes = replay(events)
    assert len(strokes) == 1
    sketch = strokes_to_sketch(strokes, 400, 300)
    assert sketch.num_points == 5 and sketch.strokes[0][0, 2] == 0.0 and sketch.canvas_width == 400
    assert replay(parse_stroke_batch(_batch(*with_seq, undo, clear)).events) == []


def test_free_mode_ranks_only_the_latest_state_of_coalesced_events():
    session, rank = DrawingSession(), FakeRank()
    writer = JournalWriter(session.token)
    assert _send(session, [_stroke(1), _stroke(2)], rank, writer)
    assert rank.calls == [2] and session.strokes_drawn == 2
    assert not session.apply(parse_stroke_batch(writer.batch(base=0)), rank), "nothing new: no ranking"
    assert rank.calls == [2]
    session.new_sketch()
    with pytest.raises(TrialClosedError):
        _send(session, [_stroke(3)], rank, writer)  # a stale canvas is refused


def test_study_session_logs_every_stroke_and_finds_the_target(tmp_path):
    config = StudyConfig(num_trials=2, random_targets=2, found_k=1, time_limit_s=0)
    session, rank = DrawingSession(), FakeRank()
    log = StudyLog(tmp_path, "P1", "S1", {"code_version": "t"})
    session.begin_study(config, log, GALLERY, {"gallery_size": 40}, code="ABCDE-FGHJK")
    assert session.phase == "drawing" and session.target_id == session.plan[0].target_id
    # strokes 1+2 coalesced into one update, then an undo, then strokes 3 and 4
    _send(session, [_stroke(1), _stroke(2, t=200)], rank)
    assert rank.calls == [2], "coalesced strokes are each logged but ranked once, in their latest state"
    _send(session, [{"type": "undo", "t": 400}], rank)
    _send(session, [_stroke(4, t=500), _stroke(5, t=700), _stroke(6, t=900)], rank)
    assert session.phase == "found"
    assert [p.target_rank for p in session.curve] == [7, 10, 1]
    session.advance(session.token)
    session.give_up(session.token)
    assert session.advance(session.token) is None and session.phase == "done"

    records = read_log(tmp_path / "P1__S1.jsonl")
    types = [r["type"] for r in records]
    assert types == [
        "session_start",
        "trial_start",
        "stroke",
        "stroke",
        "rank",
        "undo",
        "rank",
        "stroke",
        "stroke",
        "stroke",
        "rank",
        "trial_end",
        "trial_start",
        "trial_end",
        "session_end",
    ]
    strokes = [r for r in records if r["type"] == "stroke"]
    assert [r["stroke_index"] for r in strokes] == [0, 1, 2, 3, 4]
    assert all(r["target_id"] == session.plan[0].target_id and r["condition"] == "default" for r in strokes)
    assert strokes[0]["points"][0] == [10.0, 20.0, 0.0, 0.5] and strokes[0]["dpr"] == 2
    assert strokes[-1]["ranked"] and not strokes[-2]["ranked"] and "target_rank" not in strokes[-1]
    ranking = [r for r in records if r["type"] == "rank"][-1]
    assert ranking["seq"] == strokes[-1]["seq"] and ranking["trial_token"] == strokes[-1]["trial_token"]
    assert ranking["target_rank"] == 1 and ranking["top_ids"][0] == session.plan[0].target_id
    merged = [r for r in with_rankings(records) if r["type"] == "stroke"]
    assert merged[-1]["target_rank"] == 1 and not merged[-2]["ranked"], "with_rankings reads it as schema 1 did"
    found, gave_up = [r for r in records if r["type"] == "trial_end"]
    assert found["found"] and found["strokes_drawn"] == 5 and found["final_rank"] == 1
    assert gave_up["outcome"] == "gave_up" and gave_up["trial"] == 1


def test_time_limit_ends_the_trial(tmp_path):
    session, rank = DrawingSession(), FakeRank()
    session.begin_study(StudyConfig(num_trials=1, time_limit_s=5), StudyLog(tmp_path, "P", "S"), GALLERY, {}, "C")
    session.sketch.start_mono -= 10  # as if ten seconds had passed
    _send(session, [_stroke(1)], rank)
    assert session.phase == "timed_out"
    types = [r["type"] for r in read_log(tmp_path / "P__S.jsonl")]
    assert types[-2:] == ["trial_end", "stroke"], "a stroke that arrives late is still logged"


def _analysed_study(tmp_path, participants: tuple[str, ...]):
    """Two trials of four strokes per participant, then the analysis entry point into ``tmp_path/out``."""
    from retrieval.study.analysis import main

    for participant in participants:
        session, rank = DrawingSession(), FakeRank()
        session.begin_study(
            StudyConfig(num_trials=2, random_targets=2, time_limit_s=0),
            StudyLog(tmp_path, participant, "S1"),
            GALLERY,
            {},
            "CODE",
        )
        for _ in range(2):
            _send(session, [_stroke(i, t=100.0 * i) for i in range(1, 5)], rank)
            session.advance(session.token)
    main([str(tmp_path), "--out", str(tmp_path / "out")])
    return tmp_path / "out"


def test_analysis_summarises_participants_and_writes_plots(tmp_path, capsys):
    _analysed_study(tmp_path, ("P1", "P2"))
    printed = capsys.readouterr().out
    assert "P1" in printed and "P2" in printed
    out = tmp_path / "out"
    for name in (
        "records.csv",
        "strokes.csv",
        "trials.csv",
        "participants.csv",
        "rank_vs_stroke.png",
        "rank_vs_time.png",
    ):
        assert (out / name).stat().st_size > 0, name
    import pandas as pd

    summary = pd.read_csv(out / "participants.csv")
    assert list(summary["found_pct"]) == [100.0, 100.0]
    assert list(summary["median_strokes_to_find"]) == [4.0, 4.0]
    assert len(pd.read_csv(out / "strokes.csv")) == 16


def test_analysis_tables_escape_formula_cells_and_keep_numbers(tmp_path):
    import pandas as pd

    out = _analysed_study(tmp_path, ("=cmd", "-P2"))
    for name in ("strokes.csv", "trials.csv", "participants.csv"):
        table = pd.read_csv(out / name)
        assert set(table["participant"]) == {"'=cmd", "'-P2"}, f"{name} lets a spreadsheet run an id as a formula"
    summary = pd.read_csv(out / "participants.csv")
    assert summary["found_pct"].dtype == float and list(summary["found_pct"]) == [100.0, 100.0]
