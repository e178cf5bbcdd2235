"""rl.reproduce --tiny: raw procedural data -> supervised model -> RL head -> evaluated comparison."""

from __future__ import annotations

import json

import pytest

from retrieval.encoder import Encoder
from rl.reproduce import main


@pytest.mark.timeout(420)  # ~1 min on an idle 2-core machine; several times that when the cores are shared
def test_reproduce_tiny_end_to_end(tmp_path):
    out = tmp_path / "repro"
    results = main(["--tiny", "--out", str(out), "--no-progress", "--threads", "1"])
    baseline = json.loads((out / "baseline" / "metrics.json").read_text())
    rl = json.loads((out / "rl" / "metrics.json").read_text())
    assert set(baseline) == set(rl) >= {"A@1", "A@5", "A@10", "m@A", "m@B", "curve", "n_gallery", "n_sketches"}
    assert baseline["split"] == rl["split"] == "val" and baseline["n_gallery"] == rl["n_gallery"]
    assert set(results["baseline"]) == {"val", "test"}  # the procedural data has a test split
    assert (out / "rl" / "test" / "metrics.json").is_file() and (out / "baseline" / "test" / "ranks.csv").is_file()
    deployed = Encoder.load(out / "rl" / "encoder")
    assert deployed.meta["card"]["sketch_head"] == "rl"
    assert deployed.meta["embed_dim"] == Encoder.load(out / "supervised" / "best").meta["embed_dim"]
    table = (out / "comparison.md").read_text()
    assert "supervised (baseline)" in table and "RL head" in table and "## test" in table
    assert (out / "comparison.png").stat().st_size > 1000
    timings = json.loads((out / "timings.json").read_text())
    assert {"supervised training", "RL features", "RL training + export", "evaluation", "total"} <= set(timings)
