"""rl.reproduce --tiny: raw procedural data -> supervised model -> RL heads + control -> holdout comparison."""

from __future__ import annotations

import json

import pytest

from retrieval.data.datasets import open_dataset
from retrieval.model.encoder import Encoder
from rl.reproduce import main


@pytest.mark.timeout(420)  # ~1 min on an idle 2-core machine; several times that when the cores are shared
def test_reproduce_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "repro"
    results = main(["--tiny", "--out", str(out), "--no-progress", "--threads", "1", "--seeds", "2"])
    comparison = json.loads((out / "comparison.json").read_text())
    assert set(comparison["methods"]) == {"RL rank", "RL rank+kendall", "RL rank+episode", "control"}
    assert comparison["n_sketches"] > 0
    # sketch-less figure: top-10 counts can only grow with k, and every share is a percentage of the drawing
    less = comparison["supervised"]["sketch_less"]
    assert less["1"]["n"] <= less["5"]["n"] <= less["10"]["n"] <= comparison["n_sketches"]
    assert all(v["share"] is None or 0 < v["share"] <= 100 for v in less.values())
    rl = comparison["methods"]["RL rank"]
    assert len(rl["seeds"]) == 2 and {"vs_supervised", "vs_control"} <= set(rl["seeds"][0])
    for d in rl["vs_supervised"].values():
        assert d["low"] <= d["delta"] <= d["high"]
    assert "vs_control" not in comparison["methods"]["control"]
    # The supervised checkpoint never saw a holdout photo, and the table says which split it is on.
    data = open_dataset("procedural:photos=40,sketches=2", val_fraction=0.2, holdout_fraction=0.2)
    assert Encoder.load(out / "supervised" / "best").meta["card"]["n_train_photos"] == len(data.photo_ids("train"))
    assert comparison["n_gallery"] == len(data.photo_ids("holdout"))
    table = (out / "comparison.md").read_text()
    assert "**holdout**" in table and "RL rank − supervised" in table and "RL rank − control" in table
    assert "seed-mean" in table and table in capsys.readouterr().out
    shipped = (out / "shipped.txt").read_text().strip()
    assert shipped in {"supervised", *comparison["methods"]} and shipped in results["evaluated"]
    assert Encoder.load(out / "shipped" / "encoder").meta["embed_dim"] == 32
    if shipped != "supervised":
        kind = Encoder.load(out / "shipped" / "encoder").meta["card"]["sketch_head"]
        assert kind == ("control" if shipped == "control" else "rl")
    assert (out / "comparison.png").stat().st_size > 1000
    timings = json.loads((out / "timings.json").read_text())
    assert {"supervised training", "RL features", "RL training", "control training", "evaluation"} <= set(timings)


def test_the_jigsaw_stage_runs_first_by_default_and_spends_the_same_budget(tmp_path):
    from rl.reproduce import ReproduceConfig, supervised_config

    jig = supervised_config(ReproduceConfig(quickdraw="", minutes_supervised=30.0), tmp_path)
    plain = supervised_config(ReproduceConfig(quickdraw="", minutes_supervised=30.0, jigsaw=False), tmp_path)
    assert plain.stages == ("edges", "finegrained") and jig.stages == ("jigsaw", "edges", "finegrained")
    assert jig.minutes_finegrained == plain.minutes_finegrained, "jigsaw's time comes out of the edges stage"
    assert jig.minutes_jigsaw + jig.minutes_edges == pytest.approx(plain.minutes_edges)


def test_a_two_tower_layout_runs_without_the_jigsaw_stage(tmp_path):
    from rl.reproduce import ReproduceConfig, supervised_config

    lit = supervised_config(ReproduceConfig(quickdraw="", encoder="lit-mobilenet"), tmp_path)
    assert lit.photo_arch and lit.stages == ("edges", "finegrained")  # no shared trunk for the puzzle to train
