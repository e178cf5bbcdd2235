"""SketchRetrievalEnv: API conformance, determinism, and reward values on hand-made galleries."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from scipy.stats import kendalltau
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import rl
from rl.env import SketchRetrievalEnv
from rl.features import FeatureCache, synthetic_cache
from rl.scoring import kendall_tau_topk


def tiny_cache(true_index: int = 0, steps: tuple[int, ...] = (3,)) -> FeatureCache:
    """4 photos on the axes of R^4; sketches whose true photo is ``true_index``; ink 0.01 per step."""
    t = max(steps)
    ink = np.minimum(np.arange(1, t + 1)[None, :], np.asarray(steps)[:, None]) * 0.01
    return FeatureCache(
        features=np.ones((len(steps), t, 2), np.float32),
        ink=ink.astype(np.float32),
        num_steps=np.asarray(steps, np.int64),
        photo_embeddings=np.eye(4, dtype=np.float32),
        true_index=np.full(len(steps), true_index, np.int64),
        photo_ids=["a", "b", "c", "d"],
        sketch_keys=[f"/train/a_{i}" for i in range(len(steps))],
    )


@pytest.mark.parametrize("reward", ["rank", "rank+kendall", "rank+episode"])
@pytest.mark.parametrize("progress_in_obs", [True, False])
def test_passes_gymnasium_and_sb3_checkers(reward, progress_in_obs):
    env = gym.make(rl.ENV_ID, reward=reward, progress_in_obs=progress_in_obs).unwrapped  # with a spec
    check_env(env, skip_render_check=False)
    sb3_check_env(SketchRetrievalEnv(reward=reward, progress_in_obs=progress_in_obs), warn=True)


def test_registered_id_makes_env_with_and_without_features():
    env = gym.make(rl.ENV_ID)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    cache = tiny_cache()
    env = gym.make(rl.ENV_ID, features=cache, reward="rank")
    assert env.unwrapped.cache is cache
    assert env.action_space.shape == (4,) and env.observation_space.shape == (3,)


def rollout(seed: int, steps: int = 60) -> list:
    env = SketchRetrievalEnv(synthetic_cache(num_sketches=10, max_steps=5)[0])
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    trace = [(obs.copy(), info["sketch"])]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        trace.append((obs.copy(), reward, info["rank"], terminated))
        if terminated:
            obs, info = env.reset()
            trace.append((obs.copy(), info["sketch"]))
    return trace


def _same(a, b) -> bool:
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(np.array_equal(a, b))


def test_same_seed_same_rollout_and_other_seed_differs():
    assert _same(rollout(3), rollout(3))
    assert not _same(rollout(3), rollout(4))


@pytest.mark.parametrize("rank", [1, 2, 3, 4])
def test_rank_reward_is_reciprocal_rank(rank):
    env = SketchRetrievalEnv(tiny_cache(true_index=0), reward="rank")
    env.reset(seed=0, options={"sketch": 0})
    # Decreasing scores for photos b, c, d with the true photo (a) inserted at position `rank`.
    order = [1, 2, 3]
    order.insert(rank - 1, 0)
    action = np.zeros(4, np.float32)
    action[order] = np.linspace(0.9, 0.1, 4)
    _, reward, _, _, info = env.step(action)
    assert info["rank"] == rank
    assert reward == pytest.approx(1.0 / rank)


def test_ties_count_against_the_query():
    env = SketchRetrievalEnv(tiny_cache(true_index=2), reward="rank")
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.full(4, 0.5, np.float32))  # all photos tie
    assert info["rank"] == 4 and reward == pytest.approx(0.25)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros(4, np.float32))  # a zero action ranks nothing first
    assert info["rank"] == 4


def test_kendall_term_is_zero_when_order_kept_and_negative_when_it_flips():
    env = SketchRetrievalEnv(
        tiny_cache(true_index=0, steps=(3,)), reward="rank+kendall", gamma_kendall=0.5, kendall_top_k=4
    )
    env.reset(seed=0)
    ascending = np.asarray([0.9, 0.6, 0.3, 0.1], np.float32)
    _, r1, _, _, i1 = env.step(ascending)
    assert r1 == pytest.approx(1.0) and i1["kendall"] == 1.0  # no previous ranking yet: no term
    _, r2, _, _, i2 = env.step(ascending * 2)  # same order (and scale is irrelevant)
    assert i2["kendall"] == pytest.approx(1.0) and r2 == pytest.approx(1.0)
    flipped = np.asarray([0.9, 0.1, 0.3, 0.6], np.float32)  # true photo stays first, the rest reverses
    _, r3, terminated, _, i3 = env.step(flipped)
    assert i3["rank"] == 1 and i3["kendall"] < 1.0
    assert r3 == pytest.approx(1.0 + 0.5 * (i3["kendall"] - 1.0) / 2.0) and r3 < 1.0
    assert terminated


def test_kendall_matches_scipy_on_full_rankings():
    rng = np.random.default_rng(0)
    prev, cur = rng.standard_normal((5, 12)), rng.standard_normal((5, 12))
    ours = kendall_tau_topk(prev, cur, k=12)
    for p, c, t in zip(prev, cur, ours):
        assert t == pytest.approx(kendalltau(p, c).statistic)
    assert kendall_tau_topk(prev[0], prev[0] * 3, k=5) == pytest.approx(1.0)
    assert kendall_tau_topk(prev[0], -prev[0], k=5) == pytest.approx(-1.0)


def test_episode_length_follows_each_sketch_and_obs_shows_ink_progress():
    env = SketchRetrievalEnv(tiny_cache(steps=(2, 5)), reward="rank")
    assert env.ink_ref == pytest.approx(0.035)  # median final ink of the two sketches: (0.02 + 0.05) / 2
    for sketch, length in ((0, 2), (1, 5)):
        obs, info = env.reset(seed=0, options={"sketch": sketch})
        assert info["num_steps"] == length and obs[-1] == pytest.approx(0.01 / 0.035)
        for t in range(length):
            obs, _, terminated, truncated, info = env.step(env.action_space.sample())
            assert terminated == (t == length - 1) and not truncated and info["step"] == t
            assert obs[-1] == pytest.approx(0.01 * min(t + 2, length) / 0.035)  # the next step's ink
    with pytest.raises(ValueError, match="options"):
        env.reset(options={"sketch": 9})


def test_render_ansi_names_the_rank():
    env = SketchRetrievalEnv(tiny_cache(), render_mode="ansi")
    env.reset(seed=0)
    env.step(np.eye(4, dtype=np.float32)[0])
    assert "rank 1" in env.render()


def _play(env: SketchRetrievalEnv, true_rank_per_step: list[int]) -> list[tuple[float, dict]]:
    """Step through one episode with actions that put the true photo (a) at the given ranks."""
    env.reset(seed=0, options={"sketch": 0})
    out = []
    for rank in true_rank_per_step:
        order = [1, 2, 3]
        order.insert(rank - 1, 0)
        action = np.zeros(4, np.float32)
        action[order] = np.linspace(0.9, 0.1, 4)
        _, reward, terminated, _, info = env.step(action)
        out.append((reward, info, terminated))
    return out


@pytest.mark.parametrize(
    ("ranks", "consistency"),
    [
        ([4, 2, 1], 1.0),  # improves throughout: ideal order
        ([2, 2, 2], 1.0),  # holds: non-increasing is ideal too
        ([1, 2, 4], -1.0),  # falls back at every pair
        ([2, 1, 3], -1 / 3),  # pairs (2,1) +1, (2,3) -1, (1,3) -1
    ],
)
def test_episode_reward_is_rank_consistency_at_the_last_step_only(ranks, consistency):
    env = SketchRetrievalEnv(tiny_cache(true_index=0, steps=(3,)), reward="rank+episode", gamma_episode=0.5)
    steps = _play(env, ranks)
    for (reward, info, terminated), rank in zip(steps[:-1], ranks):
        assert reward == pytest.approx(1.0 / rank) and not terminated and "consistency" not in info
    reward, info, terminated = steps[-1]
    assert terminated and info["consistency"] == pytest.approx(consistency)
    assert reward == pytest.approx(1.0 / ranks[-1] + 0.5 * consistency)
    # Other reward modes report C but are not paid it.
    plain = _play(SketchRetrievalEnv(tiny_cache(true_index=0, steps=(3,)), reward="rank"), ranks)
    assert plain[-1][0] == pytest.approx(1.0 / ranks[-1]) and plain[-1][1]["consistency"] == pytest.approx(consistency)
