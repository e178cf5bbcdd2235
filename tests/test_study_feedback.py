"""Per-trial conditions through the real handlers: what the participant is shown in each feedback
mode, the rank shown or hidden, and strokes ranked (and logged) by the trial's own model."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.model.encoder import create_encoder
from retrieval.serving.retriever import Retriever
from retrieval.study.log import StudyLog, read_log
from retrieval.study.log_rankings import with_rankings
from retrieval.study.plan import StudyConfig
from retrieval.ui.backend import Backend, RankingModel, check_model_folders, load_backend
from retrieval.ui.config import AppConfig
from retrieval.ui.drawing_session import DrawingSession
from retrieval.ui.handlers import Handlers
from retrieval.ui.views import HIDDEN_RESULTS
from tests.test_study import GALLERY as STUDY_GALLERY
from tests.test_study import FakeRank, _send, _stroke
from tests.test_ui_contract import backend as backend  # noqa: F401 - the shared 30-photo fixture
from tests.test_ui_contract import draw, shown


def run_trial(handlers: Handlers, condition: dict, participant="P01"):
    study = StudyConfig(random_targets=1, num_trials=1, time_limit_s=0, conditions=({"name": "c", **condition},))
    handlers.study = study
    session = DrawingSession(mode="study")
    start = handlers.start(participant, "S1", "", session)
    return session, start


@pytest.fixture
def handlers(backend, tmp_path):
    return Handlers(AppConfig(mode="study", study="s.json", log_dir=tmp_path), backend, None)


def log_of(tmp_path, participant="P01"):
    """The session's records, each ranking folded into the event it ranked (as the analysis reads them)."""
    return with_rankings(read_log(tmp_path / f"{participant}__S1.jsonl"))


def test_every_stroke_shows_results_after_each_stroke(handlers, tmp_path):
    session, start = run_trial(handlers, {"feedback": "every_stroke", "found_k": 1, "show_k": 5})
    assert start.feedback == "every_stroke"
    answer = draw(handlers, session)
    assert len(answer["results"]["items"]) == 5 and answer["results"]["target_rank"] is not None
    assert [r["shown"] for r in log_of(tmp_path) if r["type"] == "stroke"] == [True]


def test_on_request_hides_results_until_search(handlers, tmp_path):
    session, start = run_trial(handlers, {"feedback": "on_request", "found_k": 30})
    assert start.feedback == "on_request"
    answer = draw(handlers, session)
    assert answer["results"]["items"] == [] and answer["results"]["curve"] == []
    assert answer["results"]["message"] == HIDDEN_RESULTS["on_request"] and answer["results"]["target_rank"] is None
    assert session.phase == "drawing", "a hidden ranking never ends the trial"
    update = handlers.search(shown(session.token), session)
    assert update.trial_ended and session.phase == "found", "found_k 30 of 30 photos: the search finds it"
    assert len(update.results["items"]) == 12 and update.results["curve"]
    records = log_of(tmp_path)
    stroke = next(r for r in records if r["type"] == "stroke")
    assert stroke["shown"] is False and stroke["target_rank"] is not None, "ranked and logged, not shown"
    search = next(r for r in records if r["type"] == "search")
    assert search["target_rank"] == stroke["target_rank"] and search["strokes_drawn"] == 1
    assert records[-1]["type"] == "trial_end" and records[-1]["searches"] == 1


def test_after_trial_shows_nothing_until_done(handlers, tmp_path):
    session, start = run_trial(handlers, {"feedback": "after_trial", "found_k": 30})
    assert start.feedback == "after_trial"
    for _ in range(2):
        answer = draw(handlers, session)
        assert answer["results"]["items"] == [] and answer["results"]["message"] == HIDDEN_RESULTS["after_trial"]
    update = handlers.submit(shown(session.token), session)
    assert update.trial_ended and session.phase == "found" and len(update.results["items"]) == 12
    assert len(update.results["curve"]) == 2, "the whole rank curve is shown once the trial ends"
    assert log_of(tmp_path)[-1]["outcome"] == "found"


def test_hidden_rank_shows_the_photos_but_not_the_rank(handlers, tmp_path):
    session, _ = run_trial(handlers, {"show_rank": False, "show_k": 4})
    answer = draw(handlers, session)
    assert len(answer["results"]["items"]) == 4
    assert answer["results"]["target_rank"] is None and answer["results"]["curve"] == []


def test_after_trial_done_with_the_target_outside_found_k_is_not_found(tmp_path):
    config = StudyConfig(
        num_trials=1, random_targets=1, time_limit_s=0, conditions=({"name": "x", "feedback": "after_trial"},)
    )
    session, rank = DrawingSession(), FakeRank()  # rank 10 after one stroke
    session.begin_study(config, StudyLog(tmp_path, "P", "S"), STUDY_GALLERY, {}, "CODE")
    _send(session, [_stroke(1)], rank)
    session.submit(session.token)
    assert session.phase == "not_found" and read_log(tmp_path / "P__S.jsonl")[-1]["outcome"] == "not_found"


def test_each_condition_ranks_with_its_own_model_and_logs_its_hash(backend, tmp_path):
    other = create_encoder(input_size=64, embed_dim=32, seed=1)  # same photo vectors, another sketch branch
    retriever = Retriever(other, backend.retriever.index)
    models = {"other": RankingModel("other", tmp_path, "other-hash", "other-snapshot", retriever, retriever)}
    two = Backend(**{**backend.__dict__, "models": models})
    handlers = Handlers(AppConfig(mode="study", study="s.json", log_dir=tmp_path), two, None)
    conditions = ({"name": "default_model"}, {"name": "other_model", "model": "other"})
    handlers.study = StudyConfig(
        random_targets=2,
        num_trials=2,
        time_limit_s=0,
        found_k=30,
        models={"other": str(tmp_path)},
        conditions=conditions,
    )
    session = DrawingSession(mode="study")
    handlers.start("P01", "S1", "", session)
    scores = []
    for _ in range(2):
        draw(handlers, session)
        scores.append(session.last.scores[0])
        handlers.next_trial(shown(session.token), session)
    records = log_of(tmp_path)
    for kind in ("stroke", "rank"):  # the stroke is logged before ranking, its rank record after: both name the model
        assert [(r["condition"], r["model_hash"], r["snapshot"]) for r in records if r["type"] == kind] == [
            ("default_model", "model-hash", backend.snapshot),
            ("other_model", "other-hash", "other-snapshot"),
        ]
    assert scores[0] != pytest.approx(scores[1]), "the two trials were ranked by different encoders"


def test_study_models_are_checked_at_start_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"study model 'rl': no checkpoint at .*missing"):
        check_model_folders({"rl": tmp_path / "missing"})


@pytest.mark.slow
def test_a_study_model_loads_once_with_its_own_index(tmp_path):
    """A tiny real checkpoint, saved and loaded like a trained one, indexes the same procedural photos."""
    default, second = tmp_path / "default", tmp_path / "second"
    create_encoder(input_size=64, embed_dim=32, seed=0).save(default)
    create_encoder(input_size=64, embed_dim=32, seed=1).save(second)
    config = AppConfig(model=default, gallery_size=8, cache_dir=str(tmp_path / "cache"), batch=1)
    backend = load_backend(config, {"second": second})
    assert set(backend.model_fields()) == {"", "second"}
    second_fields = backend.model_fields()["second"]
    assert second_fields["model_hash"] != backend.model_hash and second_fields["snapshot"] != backend.snapshot
    sketch = _sketch()
    first, other = backend.rank(sketch, backend.ids[0], 8), backend.rank(sketch, backend.ids[0], 8, "second")
    assert sorted(first.ids) == sorted(other.ids) == sorted(backend.ids)
    assert not np.allclose(first.scores, other.scores)


def _sketch():
    from retrieval.data.sketch import Sketch

    return Sketch((np.array([[10.0, 10.0, 0.0], [120.0, 90.0, 40.0], [60.0, 200.0, 90.0]]),))


def test_search_and_done_name_their_trial_and_act_once(handlers, tmp_path):
    session, _ = run_trial(handlers, {"feedback": "after_trial", "found_k": 30})
    draw(handlers, session)
    stale = shown("0" * 32)  # another trial's token (an old page, a forged request): nothing changes
    assert handlers.submit(stale, session).trial_ended is False and session.phase == "drawing"
    handlers.submit(shown(session.token), session)
    handlers.submit(shown(session.token), session)  # a double click, or a retry after a lost answer
    assert [r["type"] for r in log_of(tmp_path)].count("trial_end") == 1
    late_search = handlers.search(shown(session.token), session)  # not this condition's button, and too late
    assert late_search.trial_ended and not [r for r in log_of(tmp_path) if r["type"] == "search"]


def test_a_resumed_session_keeps_its_conditions_and_model_hashes(handlers, tmp_path):
    study = StudyConfig(
        random_targets=2,
        num_trials=2,
        time_limit_s=0,
        found_k=30,
        conditions=({"name": "live"}, {"name": "asked", "feedback": "on_request"}),
        counterbalance="participant_number",
    )
    handlers.study = study
    first = DrawingSession(mode="study")
    handlers.start("P01", "S1", "", first)
    draw(handlers, first)  # found at once (every_stroke): the first trial ends
    later = DrawingSession(mode="study")  # the browser was closed; the participant resumes with the code
    resumed = handlers.start("P01", "S1", first.resume_code, later)
    assert later.trial == 1 and later.condition.name == "asked" and resumed.feedback == "on_request"
    assert draw(handlers, later)["results"]["items"] == [], "the resumed trial hides its results too"
    starts = [r for r in log_of(tmp_path) if r["type"] == "trial_start"]
    assert [(r["condition"], r["model_hash"], r["settings"]["feedback"]) for r in starts] == [
        ("live", "model-hash", "every_stroke"),
        ("asked", "model-hash", "on_request"),
    ]
