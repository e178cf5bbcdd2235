"""Contrastive losses on L2-normalised embeddings (rows of ``(B, D)``; row i of both sides match)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    queries: torch.Tensor, keys: torch.Tensor, temperature: float = 0.07, symmetric: bool = True
) -> torch.Tensor:
    """InfoNCE with in-batch negatives: query i should pick key i among all keys.

    Args:
        queries, keys: ``(B, D)`` unit rows; ``queries[i]`` matches ``keys[i]``.
        temperature: softmax temperature on cosine similarities.
        symmetric: also average the key -> query direction (CLIP style).
    """
    logits = queries @ keys.T / temperature  # size: B, B
    target = torch.arange(len(queries), device=queries.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T, target)) / 2
    return loss


def hardest_triplet(anchors: torch.Tensor, positives: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """Triplet loss with the hardest in-batch negative per anchor (batch-hard, cosine distance).

    ``positives[i]`` is anchor i's match; every other row of ``positives`` is a negative.
    """
    sim = anchors @ positives.T  # size: B, B
    pos = sim.diagonal()
    neg = sim.masked_fill(torch.eye(len(sim), dtype=torch.bool, device=sim.device), float("-inf")).amax(dim=1)
    return F.relu(neg - pos + margin).mean()


def recall_at_k_loss(
    queries: torch.Tensor,
    keys: torch.Tensor,
    ks: tuple[int, ...] = (1, 2, 4, 8, 16),
    rank_temperature: float = 0.01,
    recall_temperature: float = 1.0,
) -> torch.Tensor:
    """One minus a smooth Recall@k, averaged over ``ks`` and the queries (Patel, Tolias, Matas, CVPR'22).

    Why: the product is judged by the true photo's rank (A@k, m@A, m@B), while InfoNCE and the
    triplet only pull scores apart. This loss is a differentiable stand-in for the recall itself.
    With one matching key per query (row i of both sides), the paper's surrogate reduces to

        rank_i   = 1 + sum_{j != i} sigmoid((s_ij - s_ii) / rank_temperature)
        recall_i = sigmoid((k + 1/2 - rank_i) / (recall_temperature * k))      for each k in ``ks``

    where ``s = queries @ keys.T``. The recall step's temperature grows with k as in the authors'
    defaults (1, 2, 4, 8, 16 for k = 1..16 when ``recall_temperature`` is 1). The step sits at
    k + 1/2 rather than the paper's k so that, as both temperatures go to 0, the surrogate equals
    the true recall@k on integer ranks (the paper's step gives 1/2 at rank k).

    Args:
        queries, keys: ``(B, D)`` unit rows; ``queries[i]`` matches ``keys[i]``, every other key is a negative.
        ks: the k of each recall term.
        rank_temperature: sigmoid temperature of the smooth rank, on cosine differences (tau1).
        recall_temperature: base temperature of the recall step, scaled by k (tau2 = this * k).

    Returns:
        A scalar in [0, 1] of the input dtype: 0 when every match ranks first at small temperatures.
    """
    if queries.ndim != 2 or queries.shape != keys.shape:
        raise ValueError(
            f"queries and keys must be (B, D) of one shape, got {tuple(queries.shape)} and {tuple(keys.shape)}"
        )
    if not ks or min(ks) < 1 or rank_temperature <= 0 or recall_temperature <= 0:
        raise ValueError(
            f"need ks >= 1 and positive temperatures, got ks={ks}, {rank_temperature}, {recall_temperature}"
        )
    sim = queries @ keys.T  # size: B, B
    above = torch.sigmoid((sim - sim.diagonal().unsqueeze(1)) / rank_temperature)  # size: B, B
    eye = torch.eye(len(sim), dtype=torch.bool, device=sim.device)
    rank = 1 + above.masked_fill(eye, 0).sum(dim=1)  # size: B
    k = torch.as_tensor(ks, dtype=sim.dtype, device=sim.device)  # size: K
    recall = torch.sigmoid((k + 0.5 - rank.unsqueeze(1)) / (recall_temperature * k))  # size: B, K
    return 1 - recall.mean()
