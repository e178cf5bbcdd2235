"""Two-tower sketch/photo network: each domain its own backbone, optionally ImageNet-initialised.

Layout::

    sketch raster -> sketch tower (blocks -> GeM, size Fs) -> sketch_head Linear(Fs, D) -> L2
    photo         -> photo tower  (blocks -> GeM, size Fp) -> photo_head  Linear(Fp, D) -> L2

Why a second layout beside :class:`~retrieval.model.network.SketchPhotoNet` (one shared trunk): on two
CPU cores the accuracy per CPU-minute decides, and the ImageNet weights pay off where they cost
little. A *locked* photo tower (LiT, Zhai et al. CVPR'22) keeps the pretrained photo backbone
frozen, so photo features are computed once and cached by training code; only the small photo
head and the sketch tower train, and the per-stroke path runs the sketch tower alone. The first
``frozen_blocks`` blocks of a tower run without gradients and with their batch-norm statistics
frozen (eval mode even while the rest trains).
"""

from __future__ import annotations

import torch
from torch import nn

from retrieval.model.network import backbone_blocks
from retrieval.model.pooling import GeM, l2n


class Tower(nn.Module):
    """Backbone blocks + GeM: ``(B, 3, S, S) -> (B, F)``; leading ``frozen_blocks`` blocks stay fixed."""

    def __init__(self, blocks: list[nn.Module], gem_p: float = 3.0, frozen_blocks: int = 0) -> None:
        super().__init__()
        if not 0 <= frozen_blocks <= len(blocks):
            raise ValueError(f"frozen_blocks must be in [0, {len(blocks)}], got {frozen_blocks}")
        self.blocks = nn.Sequential(*blocks)
        self.pool = GeM(gem_p)
        self.frozen_blocks = frozen_blocks
        for block in blocks[:frozen_blocks]:
            block.requires_grad_(False)
        if frozen_blocks == len(blocks):  # a locked tower: its pooling is part of the fixed features
            self.pool.requires_grad_(False)
        with torch.no_grad():  # dummy forward to size the head (works for any backbone)
            was_training = self.training
            self.eval()
            self.feature_dim = int(self.blocks(torch.zeros(1, 3, 64, 64)).shape[1])
            self.train(was_training)

    @property
    def locked(self) -> bool:
        return self.frozen_blocks == len(self.blocks)

    def train(self, mode: bool = True) -> Tower:
        super().train(mode)
        for block in self.blocks[: self.frozen_blocks]:
            block.eval()  # frozen blocks keep their (pretrained) batch-norm statistics
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.blocks[: self.frozen_blocks](x)
        return self.pool(self.blocks[self.frozen_blocks :](x))


class TwoTowerNet(nn.Module):
    """Separate sketch and photo backbones meeting in one embedding space; see the module docstring.

    Same interface as :class:`~retrieval.model.network.SketchPhotoNet` (``sketch_features``,
    ``sketch_head``, ``embed_pair``, ``pool``, ``feature_dim``), so the encoder, the RL features and
    the app use either unchanged.
    """

    def __init__(
        self,
        sketch_arch: str,
        photo_arch: str,
        embed_dim: int = 128,
        gem_p: float = 3.0,
        pretrained: tuple[str, ...] = (),
        sketch_frozen_blocks: int = 0,
        lock_photo: bool = False,
    ) -> None:
        super().__init__()
        unknown = set(pretrained) - {"sketch", "photo"}
        if unknown:
            raise ValueError(f"pretrained names towers: 'sketch' and/or 'photo', got {sorted(unknown)}")
        sketch_blocks, sketch_sha = backbone_blocks(sketch_arch, pretrained="sketch" in pretrained)
        photo_blocks, photo_sha = backbone_blocks(photo_arch, pretrained="photo" in pretrained)
        self.weights_sha256 = {"sketch": sketch_sha, "photo": photo_sha}
        self.sketch_tower = Tower(sketch_blocks, gem_p, sketch_frozen_blocks)
        self.photo_tower = Tower(photo_blocks, gem_p, len(photo_blocks) if lock_photo else 0)
        self.feature_dim = self.sketch_tower.feature_dim
        self.photo_feature_dim = self.photo_tower.feature_dim
        self.sketch_head = nn.Linear(self.feature_dim, embed_dim)
        self.photo_head = nn.Linear(self.photo_feature_dim, embed_dim)

    @property
    def pool(self) -> GeM:
        """The sketch tower's GeM (its learnable p is what training logs and the card records)."""
        return self.sketch_tower.pool

    def sketch_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S) -> (B, Fs)`` GeM-pooled sketch-tower feature (the RL observation)."""
        return self.sketch_tower(x)

    def photo_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S) -> (B, Fp)``; with a locked photo tower this is what training caches."""
        return self.photo_tower(x)

    def embed_sketches(self, x: torch.Tensor) -> torch.Tensor:
        return l2n(self.sketch_head(self.sketch_features(x)))

    def embed_photos(self, x: torch.Tensor) -> torch.Tensor:
        return l2n(self.photo_head(self.photo_features(x)))

    def embed_pair(self, sketches: torch.Tensor, photos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both domains (training); separate towers, so there is no shared batch-norm to mix."""
        return self.embed_sketches(sketches), self.embed_photos(photos)

    def features_pair(self, sketches: torch.Tensor, photos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GeM features of both domains (training)."""
        return self.sketch_features(sketches), self.photo_features(photos)
