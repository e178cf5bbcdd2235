"""Global pooling and normalisation, cnnimageretrieval-pytorch style.

Pure functions (:func:`gem`, :func:`l2n`) do the maths; :class:`GeM` and :class:`L2N` are tiny
``nn.Module`` wrappers so they appear in the network and its ``repr``.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)


def gem(x: torch.Tensor, p: torch.Tensor | float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling over the spatial dims: ``(B, C, H, W) -> (B, C)``.

    ``p = 1`` is average pooling; ``p -> inf`` tends to max pooling. Activations are clamped to
    ``eps`` first because a fractional power of a negative number is undefined.
    """
    pooled = F.avg_pool2d(x.clamp(min=eps).pow(p), (x.size(-2), x.size(-1)))  # size: B, C, 1, 1
    return pooled.pow(1.0 / p).flatten(1)


def l2n(x: ArrayT, eps: float = 1e-6) -> ArrayT:
    """Scale each row (the last axis) to unit L2 norm: ``(B, D) -> (B, D)``, a tensor or a numpy array.

    Divides by ``max(norm, eps)`` rather than ``norm + eps`` so rows come out exactly unit length
    (faiss inner product = cosine) while an all-zero row stays finite. One ``eps`` for the whole
    project: 1e-6 is far below the norm of any real embedding or action row (so it never changes
    one), and a row shorter than that is noise that should stay short, not be blown up to unit length.
    """
    if isinstance(x, np.ndarray):
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(eps)


class GeM(nn.Module):
    """GeM pooling with a learnable exponent ``p`` (one scalar shared by all channels)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem(x, p=self.p, eps=self.eps)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


class L2N(nn.Module):
    """Row-wise L2 normalisation as a module."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2n(x, eps=self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"
