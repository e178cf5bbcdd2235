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
