"""The on-the-fly retrieval environment: draw one training sketch step by step, rank the photos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from retrieval.model.pooling import l2n
from retrieval.serving.exact_rank import true_ranks
from rl.features import FeatureCache, synthetic_cache
from rl.scoring import episode_consistency, kendall_tau_topk

REWARD_MODES = ("rank", "rank+kendall", "rank+episode")


class SketchRetrievalEnv(gym.Env[np.ndarray, np.ndarray]):
    """Embed a partial sketch at every step of its drawing so its true photo ranks high early.

    ## Description
    An episode is one training sketch drawn step by step (17 point cuts, or one step per stroke,
    as cached by ``rl.features``). At each step the agent sees the frozen backbone feature of the
    sketch drawn so far and its drawing progress, and answers with a query embedding; the
    environment ranks the training gallery's fixed photo embeddings by cosine similarity to it.
    The agent's action does not change what is drawn next: the sequential part of the problem is
    in the rewards that score the episode's sequence of ranks (``rank+kendall``, ``rank+episode``).

    ## Observation space
    ``Box(low, high, (F,) or (F + 1,), float32)``: the cached feature of the partial sketch, then
    (when ``progress_in_obs``) its drawing progress ``p_t = ink_t / ink_ref``: the ink share of the
    step's raster over the median ink share of the cache's complete sketches (``ink_ref`` unless
    given), so ``p`` is about 1 for a finished drawing. The app can measure this while someone
    draws (``retrieval.model.progress_head``); the true fraction ``(t + 1) / T`` it could not, since the
    total is unknown until the drawing ends. Synthetic caches store ``(t + 1) / T`` as their ink.
    Bounds: the cache's own min and max, rounded outward (``[0, max(2, max p)]`` for ``p``).

    ## Action space
    ``Box(-action_bound, action_bound, (D,), float32)``: an embedding. The environment
    L2-normalises it, so only its direction matters (a zero action ranks all photos tied).

    ## Rewards
    With ``rank_t`` the true photo's rank (``1 + #photos scoring >= it``, ties against the query)::

        reward_t = gamma_rank / rank_t                                   (every reward mode)
                 + gamma_kendall * (tau_t - 1) / 2                       ("rank+kendall")
                 + gamma_episode * C  at the last step only, 0 before    ("rank+episode")

    * ``tau_t``: Kendall tau-a between this step's and the previous step's scores over the
      previous step's top ``kendall_top_k`` photos (0 penalty at the first step). In
      ``[-gamma_kendall, 0]``: a per-step penalty as the leading photos churn.
    * ``C``: the paper's global rank-consistency reward (Bhunia et al., CVPR 2020), Kendall tau
      between the episode's rank sequence ``rank_1..rank_T`` and the ideal non-increasing order:
      the mean over step pairs ``i < j`` of +1 if ``rank_i >= rank_j`` else -1
      (``rl.scoring.episode_consistency``). In ``[-1, 1]``, +1 when the photo never falls back.

    Discounting: the environment never discounts. The learner does: PPO's ``gamma``
    (``rl.train.RLConfig.gamma``) weighs the episode-level ``C`` by ``gamma ** (T - 1 - t)`` in
    the return of the action at step ``t``, so with ``gamma = 1`` every action of the episode
    shares the credit for ``C`` equally and with ``gamma < 1`` late actions get most of it. The
    per-step ``1 / rank_t`` depends on the action at step ``t`` only (a contextual bandit);
    ``gamma`` adds later steps' rewards to its return as variance, which the critic (or the
    batch mean, actor-only) has to remove.

    ## Starting state
    A training sketch drawn uniformly with ``self.np_random``, at its first step;
    ``reset(options={"sketch": i})`` picks sketch ``i``.

    ## Episode end
    Terminated after the sketch's last step (``T`` steps; 17 in ``"points"`` mode). There is no
    truncation.

    ## Info
    ``rank`` (true photo's rank at the step just scored), ``kendall`` (tau_t), ``step``, ``sketch``,
    ``num_steps``; at the last step also ``consistency`` (``C``, whatever the reward mode);
    ``reset`` returns ``sketch`` and ``num_steps``.

    ## Arguments
    ``features``: a ``FeatureCache``, the path of a saved one, or ``None`` for a small synthetic
    problem (handy for checks). ``reward``, ``gamma_rank``, ``gamma_kendall``, ``gamma_episode``,
    ``kendall_top_k``, ``progress_in_obs``, ``ink_ref``, ``action_bound``, ``render_mode``
    (``"ansi"``).

    ## Version history
    * v0: initial version; progress = ink share / ``ink_ref`` (was ``(t + 1) / T``), and the
      ``rank+episode`` reward added, within v0 (no released policy depends on the old inputs).

    ## Example
    >>> import gymnasium as gym, numpy as np
    >>> import rl  # registers the id
    >>> env = gym.make("EarlySketch/SketchRetrieval-v0")  # synthetic features
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> 1 <= info["rank"] <= 16
    True
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        features: FeatureCache | str | Path | None = None,
        *,
        reward: str = "rank+kendall",
        gamma_rank: float = 1.0,
        gamma_kendall: float = 0.05,
        gamma_episode: float = 0.1,
        kendall_top_k: int = 10,
        progress_in_obs: bool = True,
        ink_ref: float | None = None,
        action_bound: float = 1.0,
        render_mode: str | None = None,
    ) -> None:
        if reward not in REWARD_MODES:
            raise ValueError(f"reward must be one of {REWARD_MODES}, got {reward!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}")
        if features is None:
            features = synthetic_cache()[0]
        elif not isinstance(features, FeatureCache):
            features = FeatureCache.load(features)
        self.cache = features
        self.reward_mode = reward
        self.gamma_rank = float(gamma_rank)
        self.gamma_kendall = float(gamma_kendall) if reward == "rank+kendall" else 0.0
        self.gamma_episode = float(gamma_episode) if reward == "rank+episode" else 0.0
        self.ink_ref = float(ink_ref) if ink_ref else features.ink_ref()
        self.kendall_top_k = int(kendall_top_k)
        self.progress_in_obs = bool(progress_in_obs)
        self.render_mode = render_mode

        # Finite bounds from the cached features themselves (every observation comes from them).
        low = np.full(features.feature_dim + int(self.progress_in_obs), np.floor(features.features.min()), np.float32)
        high = np.full_like(low, max(np.ceil(features.features.max()), low[0] + 1.0))  # never an empty box
        if self.progress_in_obs:
            low[-1], high[-1] = 0.0, max(2.0, float(np.ceil(features.ink.max() / self.ink_ref)))
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Box(-action_bound, action_bound, shape=(features.embed_dim,), dtype=np.float32)
        self._sketch = 0
        self._step = 0
        self._previous_scores: np.ndarray | None = None
        self._ranks: list[int] = []
        self._last_rank = 0

    def _observation(self) -> np.ndarray:
        feature = self.cache.features[self._sketch, self._step]
        if not self.progress_in_obs:
            return feature.copy()
        progress = self.cache.ink[self._sketch, self._step] / self.ink_ref
        return np.append(feature, np.float32(progress)).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if options and "sketch" in options:
            self._sketch = int(options["sketch"])
            if not 0 <= self._sketch < self.cache.num_sketches:
                raise ValueError(f"options['sketch'] must be in [0, {self.cache.num_sketches}), got {self._sketch}")
        else:
            self._sketch = int(self.np_random.integers(self.cache.num_sketches))
        self._step = 0
        self._previous_scores = None
        self._ranks = []
        return self._observation(), {"sketch": self._sketch, "num_steps": int(self.cache.num_steps[self._sketch])}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        query = l2n(np.asarray(action, dtype=np.float32).reshape(-1))
        scores = self.cache.photo_embeddings @ query  # (N,)
        rank = int(true_ranks(scores[None, :], self.cache.true_index[self._sketch : self._sketch + 1])[0])
        tau = 1.0
        if self._previous_scores is not None and self.gamma_kendall:
            tau = float(kendall_tau_topk(self._previous_scores, scores, self.kendall_top_k))
        reward = self.gamma_rank / rank + self.gamma_kendall * (tau - 1.0) / 2.0
        self._previous_scores = scores
        self._last_rank = rank
        self._ranks.append(rank)
        info = {
            "rank": rank,
            "kendall": tau,
            "step": self._step,
            "sketch": self._sketch,
            "num_steps": int(self.cache.num_steps[self._sketch]),
        }
        terminated = self._step + 1 >= self.cache.num_steps[self._sketch]
        if terminated:
            info["consistency"] = episode_consistency(self._ranks)
            reward += self.gamma_episode * info["consistency"]
        else:
            self._step += 1
        return self._observation(), float(reward), bool(terminated), False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return (
            f"sketch {self.cache.sketch_keys[self._sketch]} step {self._step + 1}/"
            f"{self.cache.num_steps[self._sketch]} true-photo rank {self._last_rank}"
        )
