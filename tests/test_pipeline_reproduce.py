"""pipeline.reproduce (the product pipeline) and rl.head_study (the ship verdict), each at smoke scale on procedural data."""

from __future__ import annotations

import json

import pytest

from pipeline import reproduce
from retrieval.data.splits import DataSplit, SplitMismatchError
from retrieval.model.encoder import Encoder
from retrieval.train.config import pipeline_config
from rl import head_study

pytestmark = pytest.mark.slow  # the product pipeline and the head study, end to end

TINY_DATA = "procedural:photos=40,sketches=2"


@pytest.fixture(scope="module")
def study_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    head_study.main(["--tiny", "--out", str(out), "--no-progress", "--threads", "1", "--seeds", "2"])
    return out


@pytest.mark.timeout(420)  # ~1 min on an idle 2-core machine; several times that when the cores are shared
def test_the_head_study_judges_every_candidate_on_the_holdout_and_writes_a_verdict(study_out, capsys):
    comparison = json.loads((study_out / "comparison.json").read_text())
    verdict = json.loads((study_out / "verdict.json").read_text())
    assert set(comparison["methods"]) == {"RL rank", "RL rank+kendall", "RL rank+episode", "control"}
    assert set(verdict["candidates"]) == set(comparison["methods"])
    holdout = DataSplit(TINY_DATA, 0.2, 0.2).open()
    assert comparison["n_gallery"] == len(holdout.photo_ids("holdout"))
    assert verdict["split"]["counts"]["holdout"]["photos"] == len(holdout.photo_ids("holdout"))
    # The supervised model of the study never saw a holdout photo: its card records the carve.
    assert Encoder.load(study_out / "supervised" / "best").card.split == DataSplit(TINY_DATA, 0.2, 0.2)
    for entry in verdict["candidates"].values():
        m_b = entry["vs_supervised"]["m@B"]
        assert m_b["low"] <= m_b["delta"] <= m_b["high"] and m_b["n_runs"] == 2
        assert isinstance(entry["passed"], bool) and entry["reason"]
    shipping = [name for name, e in verdict["candidates"].items() if e["passed"]]
    assert verdict["ship"] == "supervised" if not shipping else verdict["ship"] in shipping
    assert "Ships:" in (study_out / "comparison.md").read_text()


@pytest.mark.timeout(420)
def test_reproduce_trains_on_every_train_photo_and_ships_the_supervised_head_without_a_verdict(tmp_path):
    out = tmp_path / "repro"
    results = reproduce.main(["--tiny", "--out", str(out), "--no-progress", "--threads", "1"])
    assert results["shipped"] == "supervised" and (out / "shipped.txt").read_text().strip() == "supervised"
    card = Encoder.load(out / "shipped" / "encoder").meta["card"]
    product = DataSplit(TINY_DATA, 0.2).open()
    assert card["split"]["holdout_fraction"] == 0.0
    assert card["split"]["counts"]["train"]["photos"] == len(product.photo_ids("train"))  # every train photo
    assert card["ship_decision"]["verdict"] is None
    # The procedural data has a test split: both models are scored there, and the files say so.
    for name in ("supervised", "shipped"):
        metrics = json.loads((out / "test" / name / "metrics.json").read_text())
        assert metrics["split"] == "test" and metrics["n_gallery"] == len(product.photo_ids("test"))
    assert "| test | shipped |" in (out / "summary.md").read_text()


@pytest.mark.timeout(420)
def test_reproduce_follows_a_verdict_and_refuses_one_from_other_data(tmp_path, study_out):
    verdict = json.loads((study_out / "verdict.json").read_text())
    verdict["ship"] = "control"  # as if the control had passed the rule
    forced = tmp_path / "verdict.json"
    forced.write_text(json.dumps(verdict))
    out = tmp_path / "repro"
    results = reproduce.main(["--tiny", "--out", str(out), "--no-progress", "--threads", "1", "--verdict", str(forced)])
    assert results["shipped"] == "control"
    card = Encoder.load(out / "shipped" / "encoder").meta["card"]
    assert card["sketch_head"] == "control" and card["ship_decision"]["verdict"]["ship"] == "control"
    verdict["split"]["data"] = "procedural:photos=80"
    forced.write_text(json.dumps(verdict))
    with pytest.raises(ValueError, match="measured on another data or val carve"):
        reproduce.main(["--tiny", "--out", str(tmp_path / "other"), "--no-progress", "--verdict", str(forced)])


def test_a_checkpoint_carved_for_a_study_is_refused_by_the_product_pipeline(study_out, tmp_path):
    with pytest.raises(SplitMismatchError, match=r"no holdout \(holdout_fraction 0.2"):
        reproduce.main(["--tiny", "--out", str(tmp_path), "--checkpoint", str(study_out / "supervised" / "best")])


def test_a_study_on_a_checkpoint_takes_its_cards_split_and_refuses_flags_that_carve_otherwise(study_out, tmp_path):
    from retrieval.train.pipeline import with_checkpoint_split

    checkpoint = str(study_out / "supervised" / "best")
    card_split = Encoder.load(checkpoint).card.split
    # --holdout-fraction left at the study's default, --split-seed at 0: the card's carve either way
    adopted = with_checkpoint_split(head_study.HeadStudyConfig(data=TINY_DATA, checkpoint=checkpoint))
    assert adopted.data_split == card_split == DataSplit(TINY_DATA, 0.2, 0.2)
    with pytest.raises(SplitMismatchError, match=r"split_seed 0 \(here 5\)"):
        with_checkpoint_split(head_study.HeadStudyConfig(data=TINY_DATA, checkpoint=checkpoint, split_seed=5))


def test_the_jigsaw_stage_is_off_by_default_and_when_on_runs_first_on_the_same_budget(tmp_path):
    split = DataSplit()
    jig = pipeline_config(split, tmp_path, 30.0, quickdraw="", jigsaw=True)
    plain = pipeline_config(split, tmp_path, 30.0, quickdraw="")
    assert plain.stages == ("edges", "finegrained") and jig.stages == ("jigsaw", "edges", "finegrained")
    assert jig.minutes_finegrained == plain.minutes_finegrained, "jigsaw's time comes out of the edges stage"
    assert jig.minutes_jigsaw + jig.minutes_edges == pytest.approx(plain.minutes_edges)


def test_a_two_tower_layout_runs_without_the_jigsaw_stage(tmp_path):
    lit = pipeline_config(DataSplit(), tmp_path, 30.0, quickdraw="", encoder="lit-mobilenet", jigsaw=True)
    assert lit.photo_arch and lit.stages == ("edges", "finegrained")  # no shared trunk for the puzzle to train


def test_rl_train_takes_the_split_from_the_checkpoint_card_not_from_its_ppo_seed(study_out, tmp_path):
    from rl.train import RLConfig, load_inputs

    flags = dict(checkpoint=str(study_out / "supervised" / "best"), cache_dir=str(tmp_path), progress=False)
    _, dataset, _, val = load_inputs(RLConfig(**flags, seed=1))  # PPO seed 1; no split flag: the card's carve
    assert val.photo_ids == DataSplit(TINY_DATA, 0.2, 0.2).open().photo_ids("val")
    with pytest.raises(SplitMismatchError, match="holdout_fraction 0.2"):
        load_inputs(
            RLConfig(**flags, holdout_fraction=0.0)
        )  # no holdout: the encoder's holdout photos would be trained on
    with pytest.raises(SplitMismatchError, match="split_seed"):
        load_inputs(RLConfig(**flags, split_seed=1))


def test_the_product_pipeline_refuses_a_holdout_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main(["--tiny", "--holdout-fraction", "0.2"])
    assert exit_info.value.code == 2 and "a holdout belongs to make rl-study" in capsys.readouterr().err
