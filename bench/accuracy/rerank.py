"""Query-time and offline re-ranking on L2-normalised embeddings (cnnimageretrieval-pytorch style).

- :func:`alpha_query_expansion` (alpha-QE, Radenovic et al. TPAMI'19): the query is replaced by
  the normalised sum of itself and its top-``k`` gallery neighbours weighted by ``sim ** alpha``.
  Per stroke it costs one extra search over the gallery.
- :func:`database_augmentation` (DBA): the same on the gallery side, once, offline: each photo
  embedding becomes a weighted mean of itself and its nearest photos. Nothing per stroke.

Both are measured by ``bench/accuracy/bench_ablation.py`` (``--rerank``); they moved m@B by under a point
(docs/results/chair-v2_encoder_sweep.md), so they live beside that bench, not in the library:
the app never re-ranks.
"""

from __future__ import annotations

import numpy as np

from retrieval.model.pooling import l2n
from retrieval.types import Embeddings


def _weighted_neighbours(query: Embeddings, gallery: Embeddings, k: int, alpha: float, skip_self: bool) -> np.ndarray:
    """``sum_i max(s_i, 0) ** alpha * g_i`` over each query's top-``k`` gallery rows."""
    sims = query @ gallery.T  # size: Q, N
    order = np.argsort(-sims, axis=1, kind="stable")[:, int(skip_self) : int(skip_self) + k]
    weights = np.clip(np.take_along_axis(sims, order, axis=1), 0.0, None) ** alpha  # size: Q, k
    return np.einsum("qk,qkd->qd", weights, gallery[order])


def alpha_query_expansion(query: Embeddings, gallery: Embeddings, k: int = 2, alpha: float = 3.0) -> Embeddings:
    """``(Q, D)`` expanded queries (unit rows); ``k = 0`` returns the queries unchanged."""
    if k <= 0:
        return query
    return l2n(query + _weighted_neighbours(query, gallery, k, alpha, skip_self=False)).astype(np.float32)


def database_augmentation(gallery: Embeddings, k: int = 2, alpha: float = 3.0) -> Embeddings:
    """``(N, D)`` augmented gallery (unit rows): each photo plus its ``k`` nearest other photos."""
    if k <= 0:
        return gallery
    return l2n(gallery + _weighted_neighbours(gallery, gallery, k, alpha, skip_self=True)).astype(np.float32)
