"""PPO on the sketch head: ``python -m rl.train --checkpoint runs/supervised/best`` (data and split: its card's).

Reads top to bottom like a CleanRL script: config -> cached features -> environments -> PPO whose
action mean IS a progress-aware sketch head (``retrieval.model.progress_head.ProgressHead``: the
supervised linear head plus a zero-initialised residual MLP over feature and drawing progress)
-> train under a time budget while a callback scores the head on the validation split and keeps
the best -> export the encoder with that head.

Ablation (same budget, one flag): ``--reward rank`` vs ``rank+kendall`` vs ``rank+episode``; then
``rl.report.ablation_table([run_dir, ...])``. The fair control (same head, supervised gradient
descent, same minutes) is ``rl.control``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

from retrieval.cli import parse_config
from retrieval.model.progress_head import ProgressHead
from retrieval.runtime import set_threads
from rl.callbacks import HeadSelectionCallback
from rl.env import SketchRetrievalEnv
from rl.features import FeatureCache, cached_features
from rl.inputs import HeadInputs
from rl.report import plot_learning_curve
from rl.scoring import make_head


@dataclass
class RLConfig(HeadInputs):
    """Train the sketch head with PPO so the true photo ranks high at every drawing step."""

    out: str = "runs/rl"
    """output folder: eval.csv, progress.csv, learning_curve.png, head.npz, summary.json, encoder/"""
    step_mode: str = "points"
    """'points' (num_steps cuts, the on-the-fly protocol) or 'strokes' (one step per stroke)"""
    num_steps: int = 17
    """partial-sketch cuts per sketch in 'points' mode"""
    reward: str = "rank+kendall"
    """'rank' (gamma_rank / rank), 'rank+kendall' (adds the per-step rank-stability penalty) or
    'rank+episode' (adds the paper's episode-level rank-consistency reward at the last step)"""
    gamma_rank: float = 1.0
    """weight of 1/rank of the true photo"""
    gamma_kendall: float = 0.05
    """weight of the Kendall-tau stability term (tau - 1) / 2, in [-1, 0]. On Chair-V2 (270 train photos)
    the supervised head gets mean 1/rank 0.056 and a mean stability term of -0.17 (top-10): 0.05 makes the
    penalty ~15% of the rank reward"""
    gamma_episode: float = 0.1
    """weight of the episode-level rank-consistency reward C in [-1, 1] ('rank+episode'); a supervised
    Chair-V2 head earns about 1 per episode from 1/rank, so 0.1 makes C a tenth of it"""
    kendall_top_k: int = 10
    """the stability term compares the previous step's top-k photos"""
    hidden: int = 64
    """hidden width of the head's residual MLP over (feature, progress); 0 = the linear head only"""
    actor_only: bool = False
    """no critic (as in the paper): value fixed at 0, advantages = discounted returns, batch-normalised"""
    minutes: float = 10.0
    """wall-clock budget for PPO (feature caching not included)"""
    max_timesteps: int = 0
    """stop after this many env steps (0 = only the time budget)"""
    n_envs: int = 16
    """parallel environments (DummyVecEnv: an env step costs microseconds)"""
    n_steps: int = 64
    """steps per env per rollout (rollout = n_envs * n_steps)"""
    batch_size: int = 256
    """PPO minibatch size"""
    n_epochs: int = 10
    """PPO epochs per rollout (10: docs/results/chair-v2_ppo_sweep.md)"""
    learning_rate: float = 3e-5
    """Adam learning rate. Measured on Chair-V2 val (docs/results/chair-v2_ppo_sweep.md, 1 min runs): 3e-5
    and 1e-4 gave the only (within-noise) gains; from 3e-4 up PPO found nothing better than the
    supervised head (exploring a 128-d action with a 1/rank reward is a weak, noisy signal)"""
    gamma: float = 0.5
    """discount (the env never discounts): an action's own 1/rank is its step's reward; the stability
    term reaches one step back, the episode reward C reaches back gamma**(T-1-t)"""
    gae_lambda: float = 0.9
    """GAE lambda"""
    clip_range: float = 0.2
    """PPO clip range"""
    ent_coef: float = 0.0
    """entropy bonus"""
    target_kl: float = 0.0
    """stop a rollout's PPO epochs once the approximate KL to the rollout policy exceeds 1.5x this (0 = never;
    the sweep ran without it: with lr 3e-5 the clipped objective alone keeps updates small)"""
    log_std_init: float = -2.0
    """initial log std of the Gaussian policy (-2 beat -3 and -1 in docs/results/chair-v2_ppo_sweep.md)"""
    action_rms: float = 0.25
    """the head is rescaled so its outputs have this RMS per component (inside the [-1, 1] action box)"""
    critic_layers: tuple[int, ...] = (64, 64)
    """hidden sizes of the value network"""
    eval_every: int = 8192
    """env steps between validation evaluations"""
    select_metric: str = "m@A+m@B"
    """validation score that picks the best head: 'm@A', 'm@B' or 'm@A+m@B'"""
    seed: int = 0
    """seed of PPO, environments and torch (the split's seed is --split-seed)"""
    threads: int = 1
    """torch threads (the machine is shared)"""
    export: bool = True
    """write out/encoder (frozen backbone + best head) in the encoder checkpoint format"""
    progress: bool = True
    """show progress bars"""


@dataclass
class RLResult:
    """What a run produced: the best head, its metrics, and where things are."""

    head: ProgressHead
    baseline_metrics: dict
    best_metrics: dict
    best_timesteps: int
    timesteps: int
    seconds: dict
    out: Path
    encoder_path: Path | None = None


def action_scale(cache: FeatureCache, weight: np.ndarray, bias: np.ndarray, target_rms: float) -> float:
    """Factor that gives the head's raw outputs ``target_rms`` per component on the training features.

    The environment L2-normalises actions, so scaling the head changes nothing it ranks; it only
    keeps the Gaussian policy's actions inside the ``[-1, 1]`` box SB3 clips to.
    """
    raw = cache.features.reshape(-1, cache.feature_dim) @ weight.T + bias
    return float(target_rms / max(math.sqrt(float(np.mean(raw**2))), 1e-12))


def build_model(cfg: RLConfig, train_cache: FeatureCache, weight: np.ndarray, bias: np.ndarray) -> PPO:
    """Vectorised envs + PPO whose action mean is a ProgressHead that starts as the supervised head.

    ``net_arch pi=[]`` makes the actor's latent the observation itself ``[feature, progress]``;
    its ``action_net`` is then replaced by the head (scaled by :func:`action_scale`, which changes
    no ranking) and the optimiser rebuilt over the new parameters. ``actor_only`` zeroes the
    value head and its loss weight, so advantages are plain discounted returns.
    """
    env_kwargs = dict(
        reward=cfg.reward,
        gamma_rank=cfg.gamma_rank,
        gamma_kendall=cfg.gamma_kendall,
        gamma_episode=cfg.gamma_episode,
        kendall_top_k=cfg.kendall_top_k,
        ink_ref=train_cache.ink_ref(),
    )
    venv = DummyVecEnv([lambda: SketchRetrievalEnv(train_cache, **env_kwargs) for _ in range(cfg.n_envs)])
    venv.seed(cfg.seed)
    policy_kwargs = dict(
        net_arch=dict(pi=[], vf=list(cfg.critic_layers)),
        log_std_init=cfg.log_std_init,
        ortho_init=False,
        activation_fn=torch.nn.Tanh,
    )
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        learning_rate=cfg.learning_rate,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_range=cfg.clip_range,
        ent_coef=cfg.ent_coef,
        vf_coef=0.0 if cfg.actor_only else 0.5,
        target_kl=cfg.target_kl or None,
        policy_kwargs=policy_kwargs,
        seed=cfg.seed,
        device="cpu",
        verbose=0,
    )
    scale = action_scale(train_cache, weight, bias, cfg.action_rms)
    policy = model.policy
    policy.action_net = make_head(train_cache, weight * scale, bias * scale, cfg.hidden)
    if cfg.actor_only:
        torch.nn.init.zeros_(policy.value_net.weight)
        torch.nn.init.zeros_(policy.value_net.bias)
    policy.optimizer = policy.optimizer_class(policy.parameters(), lr=cfg.learning_rate, **policy.optimizer_kwargs)
    return model


def policy_head(model: PPO) -> ProgressHead:
    """A detached copy of the policy's action mean (a ProgressHead; its scale changes no ranking)."""
    return copy.deepcopy(model.policy.action_net).eval()


def rl_config_from(other: Any, **overrides: Any) -> RLConfig:
    """An ``RLConfig`` taking every field it shares with another config dataclass (data, split, cache...)."""
    shared = {k: v for k, v in asdict(other).items() if k in RLConfig.__dataclass_fields__}
    return RLConfig(**{**shared, **overrides})


def load_inputs(cfg: RLConfig) -> tuple[Any, Any, FeatureCache, FeatureCache]:
    """The supervised encoder, the dataset, and cached train/val features."""
    from retrieval.model.encoder import Encoder

    if not cfg.checkpoint:
        raise ValueError(
            "--checkpoint is required: the supervised encoder folder (python -m retrieval.train --out ...)"
        )
    encoder = Encoder.load(cfg.checkpoint)
    dataset = cfg.data_split(encoder.card.split).open()  # the encoder's own carve; other flags refused
    kwargs = dict(step_mode=cfg.step_mode, num_steps=cfg.num_steps, progress=cfg.progress)
    train_cache = cached_features(encoder, dataset, "train", cfg.cache_dir, **kwargs)
    val_cache = cached_features(encoder, dataset, "val", cfg.cache_dir, **kwargs)
    return encoder, dataset, train_cache, val_cache


def train(
    cfg: RLConfig,
    *,
    encoder: Any = None,
    train_cache: FeatureCache | None = None,
    val_cache: FeatureCache | None = None,
    head: tuple[np.ndarray, np.ndarray] | None = None,
) -> RLResult:
    """Run PPO from the supervised head and return the best head on validation.

    Pass ``encoder``/caches to reuse what a caller already computed (``pipeline.reproduce``); with
    caches and ``head`` but no encoder (synthetic problems) nothing is exported.
    """
    set_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    if train_cache is None or val_cache is None:
        encoder, _, train_cache, val_cache = load_inputs(cfg)
    seconds["features"] = time.monotonic() - t0
    if head is None:
        state = encoder.sketch_head_state()
        head = (state["weight"].numpy(), state["bias"].numpy())
    weight, bias = (np.asarray(a, dtype=np.float32) for a in head)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    # --- PPO whose action mean starts as the supervised head ---
    model = build_model(cfg, train_cache, weight, bias)
    callback, seconds["ppo"] = learn(cfg, model, train_cache, val_cache, out)

    best = callback.best_head
    torch.save(best.state_dict(), out / "head.pt")
    plot_learning_curve(out / "eval.csv", out / "learning_curve.png", title=f"PPO sketch head ({cfg.reward})")
    result = RLResult(
        head=best,
        baseline_metrics=callback.baseline_metrics,
        best_metrics=callback.best_metrics,
        best_timesteps=callback.best_timesteps,
        timesteps=int(model.num_timesteps),
        seconds=seconds,
        out=out,
    )
    if cfg.export and encoder is not None:
        from rl.export import export_encoder

        t0 = time.monotonic()
        result.encoder_path = export_encoder(encoder, best, out / "encoder", cfg, result)
        seconds["export"] = time.monotonic() - t0
    (out / "summary.json").write_text(json.dumps(summary_of(cfg, result), indent=2))
    return result


def learn(
    cfg: RLConfig, model: PPO, train_cache: FeatureCache, val_cache: FeatureCache, out: Path
) -> tuple[HeadSelectionCallback, float]:
    """Train ``model`` until the budget runs out, scoring its head on val: ``(callback, seconds of PPO)``.

    The callback holds the best head and its metrics.
    """
    model.set_logger(configure(str(out), ["csv"]))  # SB3's own training stats -> out/progress.csv
    callback = HeadSelectionCallback(
        val_cache,
        train_cache,
        lambda: policy_head(model),
        eval_every=cfg.eval_every,
        minutes=cfg.minutes,
        select_metric=cfg.select_metric,
        csv_path=out / "eval.csv",
        progress=cfg.progress,
    )
    t0 = time.monotonic()
    budget = cfg.max_timesteps or 10**12  # the callback's clock stops training first
    model.learn(total_timesteps=budget, callback=callback)
    if callback.last_eval_step != model.num_timesteps:
        callback.evaluate_now()  # the final head gets its chance too
    return callback, time.monotonic() - t0


def summary_of(cfg: RLConfig, result: RLResult) -> dict:
    """JSON-ready record of a run (what ``rl.report.ablation_table`` reads)."""

    def headline(m: dict) -> dict:
        return {k: v for k, v in m.items() if k != "curve"}

    return {
        "reward": cfg.reward,
        "gamma_rank": cfg.gamma_rank,
        "gamma_kendall": cfg.gamma_kendall,
        "gamma_episode": cfg.gamma_episode,
        "hidden": cfg.hidden,
        "actor_only": cfg.actor_only,
        "minutes": cfg.minutes,
        "timesteps": result.timesteps,
        "best_timesteps": result.best_timesteps,
        "val_baseline": headline(result.baseline_metrics),
        "val_best": headline(result.best_metrics),
        "seconds": result.seconds,
        "encoder": str(result.encoder_path) if result.encoder_path else None,
    }


def main(argv: list[str] | None = None) -> RLResult:
    cfg = parse_config(RLConfig, argv)
    result = train(cfg)
    from retrieval.evaluation.metrics import format_table

    print("validation, supervised head:\n" + format_table(result.baseline_metrics))
    print(
        f"validation, best RL head (at {result.best_timesteps} of {result.timesteps} steps):\n"
        + format_table(result.best_metrics)
    )
    print(f"outputs in {result.out}" + (f"; encoder at {result.encoder_path}" if result.encoder_path else ""))
    return result


if __name__ == "__main__":
    main()
