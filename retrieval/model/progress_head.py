"""A sketch head that also reads how far the drawing is: ``l2n(W f + b + U act(V [f_hat, p] + c))``.

The supervised sketch head is one ``Linear(F, D)``: the same map for a first stroke and for a
finished drawing. :class:`ProgressHead` adds a small residual MLP over the standardised backbone
feature ``f_hat`` and a drawing-progress signal ``p``, so the embedding can change with progress.
Its last layer ``U`` starts at zero, so a fresh head equals the linear head it was built from,
exactly.

``p`` must be something the app can measure while someone draws (the total length of a drawing is
unknown until it ends): the **ink share** of the rendered partial sketch divided by ``ink_ref``, the
median ink share of the complete training sketches (so ``p`` is about 1 for a finished drawing).
:func:`ink_share` computes it from the same uint8 raster the backbone sees.

The head is served by ``retrieval.model.encoder.Encoder`` (``meta["sketch_head"]["type"] ==
"progress_mlp"``); ``rl`` trains it (PPO, and the supervised control).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from retrieval.model.pooling import l2n

HEAD_TYPE = "progress_mlp"
STATE_PREFIX = "progress_head."  # key prefix of its tensors inside an encoder's model.safetensors


def ink_share(rasters: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """``(B, H, W)`` uint8 sketch rasters (white paper, black ink) -> ``(B,)`` float32 mean ink in [0, 1]."""
    arr = np.asarray(rasters)
    if arr.ndim == 2:
        arr = arr[None]
    return (1.0 - arr.reshape(len(arr), -1).astype(np.float32) / 255.0).mean(axis=1)


class ProgressHead(nn.Module):
    """Residual progress-aware sketch head; input ``(B, F + 1)`` = feature then progress ``p``.

    Args:
        weight: ``(D, F)`` initial linear weight (the supervised head).
        bias: ``(D,)`` initial linear bias.
        feature_mean: ``(F,)`` mean of the training features (standardises the MLP input).
        feature_std: ``(F,)`` their std.
        ink_ref: median ink share of complete training sketches (``p = ink / ink_ref``).
        hidden: width of the MLP's hidden layer (0: no MLP, the head is the linear map only).
    """

    def __init__(
        self,
        weight: np.ndarray | torch.Tensor,
        bias: np.ndarray | torch.Tensor,
        feature_mean: np.ndarray | torch.Tensor,
        feature_std: np.ndarray | torch.Tensor,
        ink_ref: float = 1.0,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        weight = torch.as_tensor(np.asarray(weight, np.float32))
        d, f = weight.shape
        self.linear = nn.Linear(f, d)
        self.hidden = int(hidden)
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(torch.as_tensor(np.asarray(bias, np.float32)))
        self.register_buffer("feature_mean", torch.as_tensor(np.asarray(feature_mean, np.float32)).clone())
        std = torch.as_tensor(np.asarray(feature_std, np.float32)).clamp_min(1e-6)
        self.register_buffer("feature_std", std.clone())
        self.register_buffer("ink_ref", torch.tensor(float(ink_ref)))
        self.mlp_in = nn.Linear(f + 1, max(self.hidden, 1))
        self.mlp_out = nn.Linear(max(self.hidden, 1), d)
        nn.init.zeros_(self.mlp_out.weight)  # residual init: the head starts as the linear map, exactly
        nn.init.zeros_(self.mlp_out.bias)
        if self.hidden == 0:
            self.mlp_in.requires_grad_(False)
            self.mlp_out.requires_grad_(False)

    @property
    def feature_dim(self) -> int:
        return self.linear.in_features

    @property
    def embed_dim(self) -> int:
        return self.linear.out_features

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, embed_dim={self.embed_dim}, hidden={self.hidden}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, F + 1)`` -> ``(B, D)`` raw (not normalised) embedding."""
        feat, progress = x[:, : self.feature_dim], x[:, self.feature_dim :]
        out = self.linear(feat)
        if self.hidden:
            z = torch.cat([(feat - self.feature_mean) / self.feature_std, progress], dim=1)
            out = out + self.mlp_out(torch.tanh(self.mlp_in(z)))
        return out

    def embed(self, features: np.ndarray | torch.Tensor, ink: np.ndarray | torch.Tensor) -> np.ndarray:
        """Features ``(..., F)`` and ink shares ``(...)`` -> unit embeddings ``(..., D)`` float32 (no grad)."""
        feats = torch.as_tensor(np.asarray(features, np.float32))
        lead = feats.shape[:-1]
        progress = torch.as_tensor(np.asarray(ink, np.float32)).reshape(-1, 1) / self.ink_ref
        with torch.inference_mode():
            out = l2n(self(torch.cat([feats.reshape(-1, self.feature_dim), progress], dim=1)))
        return out.reshape(*lead, self.embed_dim).numpy()

    def config(self) -> dict:
        """What :meth:`from_state` needs besides the tensors (goes into the checkpoint meta)."""
        return {"type": HEAD_TYPE, "hidden": self.hidden, "ink_ref": float(self.ink_ref)}

    @classmethod
    def from_state(cls, config: dict, state: dict[str, torch.Tensor]) -> ProgressHead:
        """Rebuild a head from :meth:`config` and its ``state_dict``."""
        weight = state["linear.weight"]
        head = cls(
            weight, state["linear.bias"], state["feature_mean"], state["feature_std"], 1.0, int(config["hidden"])
        )
        head.load_state_dict(state, strict=True)
        return head
