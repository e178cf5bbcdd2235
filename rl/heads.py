"""Candidate sketch heads trained from a supervised one: PPO per reward and the fair control, per seed.

Shared by ``rl.head_study`` (which compares them with the supervised head on a holdout and writes
the ship verdict) and ``pipeline.reproduce`` (which retrains a head the verdict named, on the product
model). Every head starts at the supervised head, trains on the cached train features and keeps
its best state on the val features; nothing here sees a holdout or test sketch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from retrieval.evaluation.metrics import selection_score
from retrieval.model.progress_head import ProgressHead
from rl.control import ControlConfig, train_control
from rl.features import FeatureCache
from rl.train import RLConfig
from rl.train import train as train_rl

CONTROL = "control"


@dataclass(frozen=True)
class HeadBudget:
    """How candidate heads are trained: which methods, how many seeds, how long, how wide."""

    rewards: tuple[str, ...] = ("rank", "rank+kendall", "rank+episode")
    """RL reward variants (rl.env.REWARD_MODES); the fair control always runs beside them"""
    seeds: int = 3
    """runs per method, seeds 0..seeds-1"""
    minutes: float = 1.0
    """wall-clock budget of each PPO run and each control run"""
    hidden: int = 64
    """hidden width of the progress-aware head's MLP (0 = linear head)"""
    threads: int = 2
    """torch threads"""
    smoke: bool = False
    """a few updates only (tests)"""
    progress: bool = True
    """progress bars"""


def method_name(reward: str) -> str:
    return f"RL {reward}"


def train_head(
    budget: HeadBudget, method: str, seed: int, caches: dict[str, FeatureCache], head: tuple, out: Path
) -> tuple[ProgressHead, dict]:
    """Train one candidate (``"RL <reward>"`` or ``"control"``) for one seed: ``(best head, its val metrics)``."""
    weight, bias = head
    if method == CONTROL:
        cfg = ControlConfig(
            out=str(out / f"control-s{seed}"),
            hidden=budget.hidden,
            minutes=budget.minutes,
            seed=seed,
            threads=budget.threads,
            progress=budget.progress,
        )
        cfg = replace(cfg, max_updates=40, eval_every=10) if budget.smoke else cfg
        result = train_control(cfg, caches["train"], caches["val"], weight, bias)
        return result.head, result.best_metrics
    reward = method.removeprefix("RL ")
    rl_cfg = RLConfig(
        out=str(out / f"rl-{reward}-s{seed}"),
        reward=reward,
        hidden=budget.hidden,
        minutes=budget.minutes,
        seed=seed,
        threads=budget.threads,
        progress=budget.progress,
        export=False,
    )
    if budget.smoke:
        rl_cfg = replace(rl_cfg, max_timesteps=1024, n_envs=4, n_steps=64, batch_size=64, eval_every=256)
    result = train_rl(rl_cfg, train_cache=caches["train"], val_cache=caches["val"], head=(weight, bias))
    return result.head, result.best_metrics


def train_heads(
    budget: HeadBudget, caches: dict[str, FeatureCache], head: tuple[np.ndarray, np.ndarray], out: Path
) -> tuple[dict[str, list[ProgressHead]], dict[str, list[float]]]:
    """Every method for every seed: ``({method: [head per seed]}, {method: [val score per seed]})``."""
    methods = [method_name(r) for r in budget.rewards] + [CONTROL]
    heads: dict[str, list[ProgressHead]] = {m: [] for m in methods}
    val_scores: dict[str, list[float]] = {m: [] for m in methods}
    for seed in range(budget.seeds):
        for method in methods:
            best, metrics = train_head(budget, method, seed, caches, head, out)
            heads[method].append(best)
            val_scores[method].append(selection_score(metrics, "m@A+m@B"))
    return heads, val_scores
