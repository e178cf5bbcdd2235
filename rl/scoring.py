"""Vectorised scoring shared by the environment, the evaluation callback, the control and the export.

A sketch head is a ``retrieval.model.progress_head.ProgressHead``: ``l2n(W f + b + MLP(f, progress))``
(with the MLP at zero it is the supervised linear head). Everything here works on cached features
(``rl.features.FeatureCache``), so scoring a whole split at all 17 steps is a few matrix products.
"""

from __future__ import annotations

import numpy as np

from retrieval.evaluation.protocol import ranks_from_embeddings, score_embeddings
from retrieval.model.progress_head import ProgressHead
from rl.features import FeatureCache


def make_head(cache: FeatureCache, weight: np.ndarray, bias: np.ndarray, hidden: int = 0) -> ProgressHead:
    """A :class:`ProgressHead` that starts as the linear head ``(weight, bias)``, standardised on ``cache``.

    ``cache`` should be the training features: their mean/std standardise the MLP input and their
    median final ink share defines progress 1.
    """
    flat = cache.features.reshape(-1, cache.feature_dim)
    return ProgressHead(weight, bias, flat.mean(axis=0), flat.std(axis=0), cache.ink_ref(), hidden)


def head_embeddings(cache: FeatureCache, head: ProgressHead) -> np.ndarray:
    """``(S, T, D)`` embeddings of every cached step under ``head``, NaN after a sketch's last step."""
    emb = head.embed(cache.features, cache.ink)
    emb[np.arange(cache.max_steps)[None, :] >= cache.num_steps[:, None]] = np.nan  # padded steps: not ranked
    return emb


def step_ranks(cache: FeatureCache, head: ProgressHead) -> np.ndarray:
    """``(S, T)`` rank of each sketch's true photo at every step, NaN after a sketch's last step.

    Ranking is ``retrieval.evaluation.protocol.ranks_from_embeddings``: the same code scores the supervised
    model, so RL and baseline numbers are comparable.
    """
    return ranks_from_embeddings(head_embeddings(cache, head), cache.photo_embeddings, cache.true_index).astype(
        np.float64
    )


def evaluate_head(cache: FeatureCache, head: ProgressHead) -> dict:
    """Metrics of the head on a cached split (gallery = that split's photos).

    ``retrieval.evaluation.protocol.score_embeddings``, the step every evaluation shares; the
    sketch-less figure counts step ``s`` of ``n`` as ``s / n`` of the points (the cache keeps no
    point shares).
    """
    return score_embeddings(head_embeddings(cache, head), cache.photo_embeddings, cache.true_index).summary


def episode_consistency(ranks: np.ndarray) -> float:
    """Kendall tau between an episode's true-photo ranks and the ideal non-increasing order, in [-1, 1].

    Over all step pairs ``i < j``: +1 when ``rank_i >= rank_j`` (the photo held or climbed), -1
    when ``rank_i < rank_j`` (it fell back); the mean over pairs. +1 for any non-increasing rank
    sequence, -1 for a strictly increasing one; 0 (by convention) for a one-step episode.
    """
    r = np.asarray(ranks, dtype=np.float64)
    if len(r) < 2:
        return 0.0
    i, j = np.triu_indices(len(r), k=1)
    return float(np.mean(np.where(r[i] >= r[j], 1.0, -1.0)))


def kendall_tau_topk(previous: np.ndarray, current: np.ndarray, k: int) -> np.ndarray:
    """Kendall tau-a between two score vectors, over the previous ranking's top ``k`` items.

    Asks "did the photos that led the previous ranking keep their order?": +1 when all pairs keep
    their order, -1 when all flip. ``k`` is clipped to the gallery size.

    Args:
        previous: ``(B, N)`` or ``(N,)`` scores of the previous step.
        current: same shape, scores of this step.
        k: how many top items of ``previous`` to compare.

    Returns:
        ``(B,)`` (or a scalar for 1-D input) taus in ``[-1, 1]``.
    """
    single = np.ndim(previous) == 1
    previous, current = np.atleast_2d(previous), np.atleast_2d(current)
    k = int(min(max(k, 2), previous.shape[1]))
    if k < 2:
        return np.zeros(()) if single else np.zeros(len(previous))
    top = np.argpartition(-previous, k - 1, axis=1)[:, :k]
    p = np.take_along_axis(previous, top, axis=1)
    c = np.take_along_axis(current, top, axis=1)
    agree = np.sign(p[:, :, None] - p[:, None, :]) * np.sign(c[:, :, None] - c[:, None, :])  # (B, k, k)
    tau = agree.sum(axis=(1, 2)) / (k * (k - 1))  # each unordered pair counted twice
    return tau[0] if single else tau
