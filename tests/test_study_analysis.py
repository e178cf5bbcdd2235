"""The study analysis on synthetic logs written by the real session engine: a known effect between
conditions must be found, no effect must not be, and an unbalanced design must be reported."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retrieval.stats import bootstrap_mean, bootstrap_mean_difference, first_entry_share
from retrieval.study.analysis import AnalysisConfig, analyse
from retrieval.study.log import StudyLog
from retrieval.study.plan import StudyConfig
from retrieval.ui.drawing_session import DrawingSession
from tests.rank_stub import RankResultStub
from tests.test_study import GALLERY, _send, _stroke

CONDITIONS = ({"name": "a_fast", "feedback": "every_stroke"}, {"name": "b_slow", "feedback": "every_stroke"})


def simulate(
    log_dir,
    strokes_needed,
    participants=12,
    trials=4,
    conditions=CONDITIONS,
    max_strokes=15,
    assignment="within_interleaved",
    ranker=None,
):
    """Each participant draws until the target reaches rank 1 after ``strokes_needed(rng, participant, condition)``
    strokes (the synthetic ranker: rank 20 before, 1 from then on, unless ``ranker(sketch, target_id,
    needed)`` answers), every trial through DrawingSession."""
    rng = np.random.default_rng(1234)
    config = StudyConfig(
        num_trials=trials,
        random_targets=trials,
        time_limit_s=0,
        conditions=conditions,
        assignment=assignment,
        counterbalance="participant_number",
    )
    for p in range(1, participants + 1):
        session = DrawingSession()
        session.begin_study(config, StudyLog(log_dir, f"P{p:02d}", "S1"), GALLERY, {}, "CODE")
        while session.current is not None:
            needed = strokes_needed(rng, p, session.condition.name)

            def rank(sketch, target_id, needed=needed):
                if ranker:
                    return ranker(sketch, target_id, needed)
                found = sketch.num_strokes >= needed
                return RankResultStub([target_id], [0.9], 1 if found else 20, {"embed": 1.0})

            for n in range(1, max_strokes + 1):
                _send(session, [_stroke(n, n=4 + n % 3, t=300.0 * n)], rank)
                if session.phase != "drawing":
                    break
            if session.phase == "drawing":
                session.end_trial("gave_up")
            session.advance(session.token)


@pytest.mark.slow
def test_a_known_effect_is_found(tmp_path):
    # b_slow needs 3 strokes more than a_fast, on top of trial noise (0-3) and a participant offset (0-2)
    def needed(rng, p, condition):
        return 2 + p % 3 + int(rng.integers(0, 4)) + (3 if condition == "b_slow" else 0)

    simulate(tmp_path, needed)
    tables = analyse(AnalysisConfig(tmp_path, tmp_path / "out", n_boot=2000))
    diff = tables["differences"].set_index("metric").loc["strokes_to_found"]
    assert diff["design"] == "paired" and diff["n"] == 12 and not diff["few"]
    assert diff["excludes_zero"] and diff["low"] > 1.5 and diff["high"] < 4.5
    assert diff["delta"] == pytest.approx(3.0, abs=1.0)
    conditions = tables["conditions"].set_index("condition")
    assert list(conditions["found_pct"]) == [100.0, 100.0]
    assert conditions.loc["b_slow", "median_strokes_to_found"] > conditions.loc["a_fast", "median_strokes_to_found"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Balance check: balanced" in report
    for name in ("strokes_to_found.png", "rank_vs_stroke.png", "conditions.csv", "differences.csv", "balance.csv"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name


@pytest.mark.slow
def test_no_effect_is_not_found(tmp_path):
    # both conditions draw from one distribution with the same noise as above: the differences vary
    def needed(rng, p, condition):
        return 2 + p % 3 + int(rng.integers(0, 4))

    simulate(tmp_path, needed)
    tables = analyse(AnalysisConfig(tmp_path, tmp_path / "out", n_boot=2000))
    diff = tables["differences"].set_index("metric").loc["strokes_to_found"]
    assert diff["high"] - diff["low"] > 0.5, "the null case must have noise, or the test passes by construction"
    assert diff["low"] < 0 < diff["high"] and not diff["excludes_zero"]


def test_on_request_ink_share_counts_the_drawing_after_the_hidden_entry(tmp_path):
    conditions = ({"name": "on_request", "feedback": "on_request"},)
    simulate(tmp_path, lambda rng, p, c: 2, participants=1, trials=1, conditions=conditions, max_strokes=4)
    trials = analyse(AnalysisConfig(tmp_path, tmp_path / "out", n_boot=200))["conditions"]
    # rank 1 from stroke 2 of 4 while nobody searched: gave up at the end, last rank 1; ink of strokes 1-2
    points = [4 + n % 3 for n in range(1, 5)]
    assert trials.loc[0, "ink_top1_pct"] == pytest.approx(100.0 * sum(points[:2]) / sum(points))
    assert trials.loc[0, "gave_up"] == 1


def estimate_then_exact(sketch, target_id, needed):
    """Rank 20 at stroke 1; at stroke 2 an estimate of 1 whose certified interval reaches 1,500
    (shards missed their deadline); exactly 1 from stroke 3."""
    if sketch.num_strokes < 2:
        return RankResultStub([target_id], [0.9], 20, {})
    exact = sketch.num_strokes >= 3
    return RankResultStub([target_id], [0.9], 1, {}, rank_exact=exact, rank_bounds=(1, 1 if exact else 1500))


def test_an_estimated_rank_in_the_top_k_is_not_counted_as_an_entry(tmp_path):
    conditions = ({"name": "on_request", "feedback": "on_request"},)  # nobody searches: 4 strokes, then gave up
    simulate(tmp_path, lambda *_: 0, 1, 1, conditions, max_strokes=4, ranker=estimate_then_exact)
    result = analyse(AnalysisConfig(tmp_path, tmp_path / "out", n_boot=200))
    points = [4 + n % 3 for n in range(1, 5)]
    assert result["conditions"].loc[0, "ink_top1_pct"] == pytest.approx(100.0 * sum(points[:3]) / sum(points))
    strokes = pd.read_csv(tmp_path / "out" / "strokes.csv")
    assert strokes["rank_exact"].tolist() == [True, False, True, True]
    assert strokes["rank_upper"].tolist() == [20, 1500, 1, 1]


def test_a_trial_ends_found_on_a_proven_rank_not_on_an_estimate(tmp_path):
    conditions = ({"name": "every_stroke", "feedback": "every_stroke"},)
    simulate(tmp_path, lambda *_: 0, 1, 1, conditions, max_strokes=4, ranker=estimate_then_exact)
    analyse(AnalysisConfig(tmp_path, tmp_path / "out", n_boot=200))
    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert trials.loc[0, "outcome"] == "found" and trials.loc[0, "strokes_drawn"] == 3


def test_an_unbalanced_design_is_reported(tmp_path):
    simulate(tmp_path, lambda rng, p, c: 3, participants=3)  # rows 0, 1, 0: a_fast first twice
    analyse(AnalysisConfig(tmp_path, tmp_path / "out", n_boot=200))
    report = (tmp_path / "out" / "report.md").read_text()
    assert "NOT balanced" in report and "position 0: conditions met unequally often (a_fast 4, b_slow 2)" in report
    balance = pd.read_csv(tmp_path / "out" / "balance.csv")
    assert balance.set_index("condition").loc["a_fast", "0"] == 4


@pytest.mark.slow
def test_between_subject_differences_resample_groups_independently(tmp_path):
    def needed(rng, p, condition):
        return 2 + int(rng.integers(0, 3)) + (4 if condition == "b_slow" else 0)

    simulate(tmp_path, needed, participants=8, trials=2, assignment="between")
    tables = analyse(AnalysisConfig(tmp_path, tmp_path / "out", n_boot=2000))
    row = tables["differences"].set_index("metric").loc["strokes_to_found"]
    assert row["design"] == "independent" and row["n"] == 8 and row["excludes_zero"]
    assert list(tables["conditions"]["participants"]) == [4, 4]


def test_bootstrap_helpers_by_hand():
    out = bootstrap_mean({"d": [1.0, 2.0, 3.0]}, n_boot=500, seed=0)["d"]
    assert out["delta"] == pytest.approx(2.0) and 1.0 <= out["low"] < 2.0 < out["high"] <= 3.0
    assert bootstrap_mean({"d": [2.0, 2.0]}, n_boot=50)["d"] == {"delta": 2.0, "low": 2.0, "high": 2.0}
    with pytest.raises(ValueError, match="one length"):
        bootstrap_mean({"a": [1.0], "b": [1.0, 2.0]})
    two = bootstrap_mean_difference([5.0, 5.0], [1.0, 3.0], n_boot=500)
    assert two["delta"] == pytest.approx(3.0) and 2.0 <= two["low"] <= two["high"] <= 4.0
    ranks = np.array([[9.0, 4.0, 1.0, 1.0], [3.0, 8.0, np.nan, np.nan], [2.0, 1.0, 6.0, np.nan]])
    shares = np.array([[0.1, 0.5, 0.7, 1.0], [0.5, 1.0, 1.0, 1.0], [0.2, 0.6, 1.0, 1.0]])
    np.testing.assert_allclose(first_entry_share(ranks, shares, 1), [0.7, np.nan, np.nan])
    np.testing.assert_allclose(first_entry_share(ranks, shares, 5), [0.5, np.nan, np.nan])
    np.testing.assert_allclose(first_entry_share(ranks, shares, 8), [0.5, 0.5, 0.2])


def test_comparisons_of_few_participants_are_flagged(tmp_path):
    simulate(tmp_path, lambda rng, p, c: 2 + (3 if c == "b_slow" else 0) + int(rng.integers(0, 2)), participants=4)
    diff = analyse(AnalysisConfig(tmp_path, tmp_path / "out", n_boot=500))["differences"]
    assert diff["few"].all() and diff["n"].eq(4).all()
    assert "Rows marked `few` compare fewer than 8 participants" in (tmp_path / "out" / "report.md").read_text()
