"""Smoke runs of the training entry point: a few real steps on a tiny dataset, checkpoints that load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from retrieval.data.datasets import open_dataset
from retrieval.data.splits import DataSplit
from retrieval.model.encoder import Encoder
from retrieval.model.losses import hardest_triplet, info_nce, recall_at_k_loss
from retrieval.model.pooling import l2n
from retrieval.train.batches import hard_batch
from retrieval.train.config import Config, from_json
from retrieval.train.pipeline import parse_args, run
from retrieval.train.steps import finegrained_loss

pytestmark = pytest.mark.slow  # training smoke runs

TINY = "procedural:photos=24,sketches=2"


@pytest.fixture(scope="module")
def tiny_dataset():
    return open_dataset(TINY, val_fraction=0.2, seed=0)


def _config(tmp_path, **kw) -> Config:
    base = dict(
        data=TINY,
        out=tmp_path,
        run_name="smoke",
        stages=("edges", "finegrained"),
        max_steps=3,
        eval_every=2,
        save_every=2,
        batch_size=6,
        input_size=64,
        embed_dim=32,
        threads=1,
        progress=False,
        edges_per_photo=2,
        bank_every=2,
        val_fraction=0.2,
    )
    return Config(**{**base, **kw})


def test_losses_prefer_matching_pairs():
    a = l2n(torch.randn(8, 16))
    assert info_nce(a, a) < info_nce(a, a.roll(1, dims=0))
    assert hardest_triplet(a, a, margin=0.2) < hardest_triplet(a, a.roll(1, dims=0), margin=0.2)


def test_hard_batch_distinct_and_neighbourly():
    rng = np.random.default_rng(0)
    emb = l2n(torch.randn(20, 8)).numpy()
    idx = hard_batch(emb, 8, rng, np.arange(20))
    assert len(idx) == 8 and len(set(idx.tolist())) == 8
    assert len(hard_batch(None, 50, rng, np.arange(5))) == 5


def test_cli_parses_into_config():
    cfg = parse_args(["--data", "x", "--stages", "finegrained", "--no-hard-negatives", "--minutes-edges", "2"])
    assert cfg.data == "x" and cfg.stages == ("finegrained",) and cfg.hard_negatives is False
    assert cfg.minutes_edges == 2.0


def test_smoke_run_writes_loadable_checkpoint_log_and_resumes(tmp_path, tiny_dataset):
    run_dir = run(_config(tmp_path), dataset=tiny_dataset)
    best = Encoder.load(run_dir / "best")
    card = best.meta["card"]
    assert card["seed"] == 0 and card["val"]["n_gallery"] == len(tiny_dataset.photo_ids("val"))
    assert {"m@A", "m@B", "A@1"} <= set(card["val"]) and "git_commit" in card
    emb = best.embed_sketches(np.full((2, 64, 64), 255, np.uint8))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    log = pd.read_csv(run_dir / "log.csv")
    assert set(log["stage"]) == {"edges", "finegrained"} and log["loss"].notna().sum() == 6
    assert (run_dir / "curve.png").stat().st_size > 1000
    state = json.loads((run_dir / "last" / "state.json").read_text())
    assert state["done_stages"] == ["edges", "finegrained"] and state["global_step"] == 6

    # resume with a larger step cap: the stages are done, so nothing reruns and the state is kept
    run(_config(tmp_path, resume=str(run_dir), max_steps=4), dataset=tiny_dataset)
    assert json.loads((run_dir / "last" / "state.json").read_text())["global_step"] == 6


def test_quickdraw_stage_with_procedural_sketches_only(tmp_path, tiny_dataset):
    cfg = _config(tmp_path, stages=("quickdraw",), quickdraw="", pretrain_sketches="procedural:photos=8,seed=5")
    run_dir = run(cfg, dataset=tiny_dataset)
    log = pd.read_csv(run_dir / "log.csv").dropna(subset=["loss"])
    assert log["stage"].tolist() == ["quickdraw"] * 3 and np.isfinite(log["loss"]).all()


def test_resume_mid_stage_continues_step_count(tmp_path, tiny_dataset):
    run_dir = run(_config(tmp_path, stages=("finegrained",), max_steps=2), dataset=tiny_dataset)
    state_path = run_dir / "last" / "state.json"
    state = json.loads(state_path.read_text())
    state["done_stages"] = []  # pretend the run was cut off after step 2
    state_path.write_text(json.dumps(state))
    run(_config(tmp_path, resume=str(run_dir), stages=("finegrained",), max_steps=4), dataset=tiny_dataset)
    log = pd.read_csv(run_dir / "log.csv").dropna(subset=["loss"])
    assert log["stage_step"].tolist() == [1, 2, 3, 4]


def test_unknown_loss_is_refused_before_a_run_folder_exists(tmp_path, tiny_dataset):
    cfg = parse_args(["--loss", "recall@k", "--out", str(tmp_path), "--run-name", "smoke"])
    with pytest.raises(ValueError, match=r"unknown --loss 'recall@k'; choose from infonce, recall, infonce\+recall"):
        run(cfg, dataset=tiny_dataset)
    assert not (tmp_path / "smoke").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where there is no GPU")
def test_cuda_device_is_refused_clearly_without_a_gpu(tmp_path, tiny_dataset):
    with pytest.raises(ValueError, match="use --device cpu"):
        run(_config(tmp_path, device="cuda"), dataset=tiny_dataset)


def test_finegrained_loss_options_compose_as_documented():
    torch.manual_seed(0)
    s, p = l2n(torch.randn(8, 16)), l2n(torch.randn(8, 16))
    base = info_nce(s, p, 0.07) + 0.5 * hardest_triplet(s, p, 0.2)
    recall = recall_at_k_loss(s, p)
    assert torch.isclose(finegrained_loss(Config(), s, p), base)
    assert torch.isclose(finegrained_loss(Config(loss="recall"), s, p), recall)
    assert torch.isclose(finegrained_loss(Config(loss="infonce+recall", recall_weight=2.0), s, p), base + 2 * recall)


@pytest.mark.parametrize("loss", ["recall", "infonce+recall"])
def test_smoke_run_with_the_recall_loss(tmp_path, tiny_dataset, loss):
    run_dir = run(_config(tmp_path, stages=("finegrained",), loss=loss), dataset=tiny_dataset)
    log = pd.read_csv(run_dir / "log.csv").dropna(subset=["loss"])
    assert len(log) == 3 and np.isfinite(log["loss"]).all()
    assert Encoder.load(run_dir / "best").meta["card"]["config"]["loss"] == loss


def test_split_seed_carves_val_apart_from_the_training_seed(tmp_path):
    other_seed = run(_config(tmp_path, seed=3, stages=("finegrained",), max_steps=1))
    split = Encoder.load(other_seed / "best").card.split
    assert split == DataSplit(TINY, val_fraction=0.2, split_seed=0)  # training seed 3, carve seed 0
    # The card records the carve the run really used: its counts are those of the opened split.
    dataset = split.open()
    counts = Encoder.load(other_seed / "best").card.split_counts
    assert counts["val"] == {"photos": len(dataset.photo_ids("val")), "sketches": len(dataset.sketches("val"))}


def test_the_split_seed_no_longer_follows_the_training_seed():
    with pytest.raises(ValueError, match="split seed is its own setting"):
        _config(Path("runs"), split_seed=-1)
    with pytest.raises(SystemExit):  # the command line refuses it as a usage error
        parse_args(["--split-seed", "-1"])
    # A run saved when -1 meant "the training seed" resumes with the carve it was trained on.
    assert from_json({"seed": 3, "split_seed": -1})["split_seed"] == 3
