"""Study conditions: validation at load, balanced Latin squares, assignment, and what each trial records."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import pytest

from retrieval.provenance import PROJECT_ROOT
from retrieval.study.conditions import FEEDBACK_MODES, balanced_latin_square, participant_number
from retrieval.study.plan import StudyConfig, plan_trials

GALLERY = [f"photo_{i:03d}" for i in range(40)]
TWO = [{"name": "on_the_fly", "feedback": "every_stroke"}, {"name": "on_request", "feedback": "on_request"}]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_latin_square_puts_each_condition_once_in_each_position(n):
    rows = balanced_latin_square(n)
    assert len(rows) == (2 * n if n % 2 else n)
    for row in rows:
        assert sorted(row) == list(range(n))
    for position in range(n):
        column = Counter(row[position] for row in rows)
        assert set(column.values()) == {len(rows) // n}, f"position {position} is unbalanced: {column}"


@pytest.mark.parametrize("n", [2, 3, 4, 6])
def test_latin_square_balances_which_condition_follows_which(n):
    rows = balanced_latin_square(n)
    pairs = Counter((a, b) for row in rows for a, b in itertools.pairwise(row))
    assert set(pairs) == {(a, b) for a in range(n) for b in range(n) if a != b}
    assert len(set(pairs.values())) == 1, f"carry-over is unbalanced: {pairs}"


def test_conditions_inherit_the_study_defaults_and_override_them():
    config = StudyConfig(
        num_trials=4, show_k=8, found_k=3, time_limit_s=30, conditions=("plain", {"name": "fast", "show_k": 4})
    )
    plain, fast = config.conditions
    assert (plain.show_k, plain.found_k, plain.time_limit_s, plain.feedback) == (8, 3, 30, "every_stroke")
    assert (fast.show_k, fast.found_k, fast.time_limit_s) == (4, 3, 30)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"conditions": [{"name": "a", "feedback": "sometimes"}]}, "feedback is 'sometimes'; allowed: every_stroke"),
        ({"conditions": [{"name": "a", "colour": "red"}]}, r"conditions\[0\] has unknown keys \['colour'\]"),
        ({"conditions": [{"feedback": "on_request"}]}, r"conditions\[0\] needs a 'name'"),
        ({"conditions": [{"name": "a", "show_k": 0}]}, r"conditions\[0\].show_k must be an integer >= 1"),
        ({"conditions": [{"name": "a", "show_rank": "yes"}]}, "show_rank must be true or false"),
        ({"conditions": [{"name": "a", "time_limit_s": -1}]}, "time_limit_s must be a finite number"),
        ({"conditions": [{"name": "a", "model": "rl"}]}, "model is 'rl': not a key of 'models'"),
        ({"conditions": ["a", "a"]}, "condition names must differ"),
        ({"assignment": "mixed"}, "assignment is 'mixed'; allowed: within_interleaved, within_blocked, between"),
        ({"counterbalance": "coin"}, "counterbalance is 'coin'; allowed: participant_number, hash"),
        ({"num_trials": 3, "conditions": ["a", "b"]}, "must be a multiple of the 2 conditions"),
        ({"feedback": "never"}, "study config.feedback is 'never'"),
        ({"models": ["assets/model"]}, "'models' maps a key to a checkpoint folder"),
    ],
)
def test_bad_conditions_fail_at_load_naming_the_key_and_allowed_values(tmp_path, config, message):
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"num_trials": 4, **config}))
    with pytest.raises(ValueError, match=message):
        StudyConfig.load(path)


def test_within_interleaved_alternates_and_counterbalances_by_participant_number():
    config = StudyConfig(num_trials=4, conditions=TWO, counterbalance="participant_number")
    first = [p.condition.name for p in plan_trials(config, GALLERY, "P01")]
    second = [p.condition.name for p in plan_trials(config, GALLERY, "P02")]
    assert first == ["on_the_fly", "on_request"] * 2
    assert second == ["on_request", "on_the_fly"] * 2
    assert [p.condition_position for p in plan_trials(config, GALLERY, "P02")] == [0, 1, 0, 1]


def test_within_blocked_gives_each_condition_one_block():
    config = StudyConfig(num_trials=6, conditions=("a", "b", "c"), assignment="within_blocked", counterbalance="hash")
    plan = plan_trials(config, GALLERY, "anyone")
    names = [p.condition.name for p in plan]
    assert [names[i] for i in (0, 2, 4)] == list(plan[0].condition_order)
    assert names[0::2] == names[1::2], "blocks of two"
    assert [p.condition_position for p in plan] == [0, 0, 1, 1, 2, 2]


def test_between_subject_gives_one_condition_and_balances_participants():
    config = StudyConfig(num_trials=3, conditions=TWO, assignment="between", counterbalance="participant_number")
    per_participant = [{p.condition.name for p in plan_trials(config, GALLERY, f"P{i:02d}")} for i in range(1, 9)]
    assert all(len(s) == 1 for s in per_participant)
    assert Counter(next(iter(s)) for s in per_participant) == {"on_the_fly": 4, "on_request": 4}


def test_hash_counterbalancing_is_deterministic_and_uses_every_row():
    config = StudyConfig(num_trials=4, conditions=("a", "b", "c", "d"))
    rows = [plan_trials(config, GALLERY, f"user-{i}")[0].latin_row for i in range(60)]
    assert rows == [plan_trials(config, GALLERY, f"user-{i}")[0].latin_row for i in range(60)]
    assert set(rows) == {0, 1, 2, 3}


def test_participant_number_counterbalancing_needs_a_number():
    assert participant_number("P07") == 7 and participant_number("group2-p13") == 13
    config = StudyConfig(num_trials=2, conditions=TWO, counterbalance="participant_number")
    with pytest.raises(ValueError, match="has no number"):
        plan_trials(config, GALLERY, "alice")


def test_every_feedback_mode_is_documented_in_the_config_docs():
    docs = (PROJECT_ROOT / "docs" / "app.md").read_text()
    assert all(f"`{mode}`" in docs for mode in FEEDBACK_MODES)


def test_trial_records_carry_condition_order_and_position():
    config = StudyConfig(num_trials=2, conditions=TWO, counterbalance="participant_number")
    plan = plan_trials(config, GALLERY, "P02")[1]
    assert plan.log_fields() == {
        "trial": 1,
        "condition": "on_the_fly",
        "condition_position": 1,
        "condition_order": ["on_request", "on_the_fly"],
        "latin_row": 1,
        "target_id": plan.target_id,
    }
    assert json.loads(json.dumps(config.as_record()))["conditions"][1]["feedback"] == "on_request"


def test_the_examples_are_a_two_condition_feedback_design_and_a_two_model_design():
    from retrieval.ui.backend import check_model_folders

    feedback = StudyConfig.load(PROJECT_ROOT / "assets" / "study_example.json")
    assert [c.feedback for c in feedback.conditions] == ["every_stroke", "on_request"]
    assert feedback.models_used() == {}, "runs offline on the default model"
    models = StudyConfig.load(PROJECT_ROOT / "assets" / "study_two_models.json")
    assert [c.model for c in models.conditions] == ["", "candidate"]
    assert set(models.models_used()) == {"candidate"}
    if not (PROJECT_ROOT / models.models["candidate"] / "model.safetensors").exists():
        with pytest.raises(ValueError, match="study model 'candidate': no checkpoint at"):
            check_model_folders(models.models_used())
