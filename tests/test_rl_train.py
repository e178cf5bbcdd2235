"""rl.train / rl.export: PPO starts exactly at the supervised head, trains, and exports a loadable encoder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from retrieval.cli import parse_config
from retrieval.encoder import Encoder
from rl.features import compute_features, synthetic_cache
from rl.report import ablation_table
from rl.scoring import evaluate_head
from rl.toy import ToyDataset, calibrated_encoder
from rl.train import RLConfig, build_model, policy_head, train


@pytest.fixture(scope="module")
def toy():
    dataset = ToyDataset(num_photos=12, sketches_per_photo=2, strokes=3, seed=3)
    encoder = calibrated_encoder(dataset, seed=3)
    return (
        encoder,
        compute_features(encoder, dataset, "train", progress=False),
        compute_features(encoder, dataset, "val", progress=False),
    )


def supervised_head(encoder) -> tuple[np.ndarray, np.ndarray]:
    state = encoder.sketch_head_state()
    return state["weight"].numpy(), state["bias"].numpy()


@pytest.mark.parametrize("progress_in_obs", [True, False])
def test_policy_mean_is_the_supervised_head_before_training(toy, progress_in_obs):
    encoder, train_cache, _ = toy
    cfg = RLConfig(progress_in_obs=progress_in_obs, n_envs=2, batch_size=64)
    model, scale = build_model(cfg, train_cache, *supervised_head(encoder))
    feats = train_cache.features.reshape(-1, train_cache.feature_dim)
    obs = np.c_[feats, np.linspace(0, 1, len(feats))] if progress_in_obs else feats  # progress must not matter
    with torch.no_grad():
        mean = model.policy.get_distribution(torch.as_tensor(obs, dtype=torch.float32)).distribution.mean.numpy()
    mean_dirs = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    np.testing.assert_allclose(mean_dirs, encoder.sketch_head_apply(feats), atol=1e-5)
    # Typical actions sit inside the [-1, 1] box SB3 clips to, and the policy starts nearly deterministic.
    assert np.sqrt(np.mean(mean**2)) == pytest.approx(cfg.action_rms, rel=1e-3)
    assert float(model.policy.log_std.detach().exp().max()) == pytest.approx(np.exp(cfg.log_std_init))
    w, b = policy_head(model, train_cache.feature_dim, scale)
    np.testing.assert_allclose(w, supervised_head(encoder)[0], rtol=1e-5, atol=1e-7)


def test_actor_ignores_progress_unless_asked(toy):
    encoder, train_cache, _ = toy
    for actor_uses_progress in (False, True):
        cfg = RLConfig(n_envs=4, n_steps=32, batch_size=64, learning_rate=1e-2, actor_uses_progress=actor_uses_progress)
        model, _ = build_model(cfg, train_cache, *supervised_head(encoder))
        before = model.policy.action_net.weight.detach().clone()
        model.learn(256)
        after = model.policy.action_net.weight.detach()
        assert not torch.equal(after[:, :-1], before[:, :-1])  # the head itself learns
        assert bool(torch.all(after[:, -1] == 0)) != actor_uses_progress


def test_ppo_run_exports_loadable_encoder(toy, tmp_path):
    encoder, train_cache, val_cache = toy
    cfg = RLConfig(
        out=str(tmp_path / "run"),
        minutes=1.0,
        max_timesteps=512,
        n_envs=4,
        n_steps=32,
        batch_size=64,
        eval_every=128,
        learning_rate=1e-3,
        progress=False,
    )
    result = train(cfg, encoder=encoder, train_cache=train_cache, val_cache=val_cache)
    assert result.timesteps >= 512
    log = pd.read_csv(tmp_path / "run" / "eval.csv")
    assert log["timesteps"].iloc[0] == 0 and len(log) >= 4 and log["is_best"].iloc[0] == 1
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000
    assert pd.read_csv(tmp_path / "run" / "progress.csv").shape[0] >= 1  # SB3's own training stats
    # The exported checkpoint is an ordinary encoder whose head is the selected one.
    loaded = Encoder.load(result.encoder_path)
    np.testing.assert_allclose(loaded.sketch_head_state()["weight"].numpy(), result.weight, atol=1e-6)
    card = loaded.meta["card"]
    assert card["sketch_head"] == "rl" and card["rl"]["config"]["reward"] == "rank+kendall"
    assert card["rl"]["val_rl"]["m@A"] == pytest.approx(result.best_metrics["m@A"])
    # Its sketch embeddings are the head applied to the frozen features: the backbone did not move.
    feats = val_cache.features[:, -1]
    np.testing.assert_allclose(loaded.sketch_head_apply(feats), evaluate_head_embed(result, feats), atol=1e-5)
    photos_before = encoder.embed_photos(np.full((1, 64, 64, 3), 128, np.uint8))
    np.testing.assert_allclose(loaded.embed_photos(np.full((1, 64, 64, 3), 128, np.uint8)), photos_before, atol=1e-6)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (
        summary["val_best"]["m@A"] + summary["val_best"]["m@B"]
        >= summary["val_baseline"]["m@A"] + summary["val_baseline"]["m@B"]
    )
    assert "supervised head" in ablation_table([tmp_path / "run"])


def evaluate_head_embed(result, feats):
    raw = feats @ result.weight.T + result.bias
    return raw / np.linalg.norm(raw, axis=1, keepdims=True)


def test_zero_learning_rate_hands_back_the_baseline_head(tmp_path):
    cache, weight, bias = synthetic_cache(num_sketches=32, num_photos=8, seed=5)
    cfg = RLConfig(
        out=str(tmp_path),
        minutes=1.0,
        max_timesteps=256,
        n_envs=2,
        n_steps=64,
        batch_size=64,
        eval_every=64,
        learning_rate=0.0,
        progress=False,
        export=False,
    )
    result = train(cfg, train_cache=cache, val_cache=cache, head=(weight, bias))
    np.testing.assert_allclose(result.weight, weight, rtol=1e-6)
    assert result.best_timesteps == 0 and result.encoder_path is None
    assert result.best_metrics["m@B"] == pytest.approx(evaluate_head(cache, weight, bias)["m@B"])


def test_ppo_improves_a_weak_head_on_a_synthetic_problem(tmp_path):
    """The learning signal is real: from a badly perturbed head, PPO raises validation m@B."""
    cache, weight, bias = synthetic_cache(num_sketches=128, num_photos=16, seed=7, noise=1.5)
    rng = np.random.default_rng(0)
    weak = weight + 1.5 * np.abs(weight).mean() * rng.standard_normal(weight.shape).astype(np.float32)
    cfg = RLConfig(
        out=str(tmp_path),
        minutes=1.0,
        max_timesteps=30_000,
        n_envs=16,
        n_steps=64,
        batch_size=256,
        eval_every=5000,
        learning_rate=3e-3,
        log_std_init=-2.0,
        progress=False,
        export=False,
    )
    result = train(cfg, train_cache=cache, val_cache=cache, head=(weak, bias))
    assert result.best_metrics["m@B"] > result.baseline_metrics["m@B"] + 2.0


def test_cli_flags_come_from_the_config_fields():
    cfg = parse_config(
        RLConfig, ["--reward", "rank", "--minutes", "2.5", "--no-progress-in-obs", "--critic-layers", "32", "16"]
    )
    assert cfg.reward == "rank" and cfg.minutes == 2.5 and cfg.progress_in_obs is False
    assert cfg.critic_layers == (32, 16)
