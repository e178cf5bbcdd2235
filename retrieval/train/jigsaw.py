"""Mixed-modal jigsaw pre-training (Pang et al., "Solving Mixed-modal Jigsaw Puzzle for Fine-Grained
Sketch-Based Image Retrieval", CVPR 2020): the ``jigsaw`` stage of ``retrieval.train.pipeline``.

A photo and a randomised edge map of it are cut into the same ``grid x grid`` tiles; each cell of
the puzzle takes the photo tile or the edge tile at random (the *mixed-modal* part), then the cells
are shuffled by a permutation from a fixed, seeded set of maximal-Hamming permutations (no tile
left in place, the permutations far apart). The shared trunk sees the whole shuffled image (the
paper's way: one forward, not one per tile); its feature map, pooled to one cell per tile, gives
per-cell logits over the original positions, and Sinkhorn iterations turn them into a doubly
stochastic matrix whose log-likelihood of the true permutation is the loss (the paper found this
beats classifying over a fixed permutation set).

Permutation convention: ``shuffled cell j`` holds ``tile perm[j]`` of the mixed image, so
``unshuffle(shuffle(x, perm), perm) == x``.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import torch
from torch import nn

GRID = 3
SINKHORN_ITERS = 10


@functools.lru_cache(maxsize=8)
def hamming_permutations(count: int, seed: int = 0, grid: int = GRID) -> np.ndarray:
    """``(count, grid*grid)`` distinct permutations picked greedily for the largest minimum Hamming distance.

    Only derangements (no tile left in place) are candidates. Seeded: the first is drawn at random,
    each next one is a random choice among the candidates farthest from all chosen ones.
    """
    cells = grid * grid
    if cells > 9:
        raise ValueError(f"grid {grid} is too large to enumerate its permutations; use grid <= 3")
    every = np.array(list(itertools.permutations(range(cells))), dtype=np.int8)  # size: cells!, cells
    every = every[(every != np.arange(cells, dtype=np.int8)).all(1)]  # derangements only
    if not 1 <= count <= len(every):
        raise ValueError(f"count must be in [1, {len(every)}] for a {grid}x{grid} grid, got {count}")
    rng = np.random.default_rng(seed)
    nearest = np.full(len(every), cells)  # distance to the chosen set
    chosen: list[int] = []
    for _ in range(count):
        far = np.flatnonzero(nearest == nearest.max())
        pick = int(rng.choice(far))
        chosen.append(pick)
        nearest = np.minimum(nearest, (every != every[pick]).sum(1))
    perms = every[chosen].astype(np.int64)
    perms.setflags(write=False)  # cached: shared by every caller
    return perms


def to_tiles(images: torch.Tensor, grid: int = GRID) -> torch.Tensor:
    """``(B, C, H, W) -> (B, grid*grid, C, H/grid, W/grid)``, cells in row-major order (H, W multiples of grid)."""
    b, c, h, w = images.shape
    th, tw = h // grid, w // grid
    tiles = images.reshape(b, c, grid, th, grid, tw).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(b, grid * grid, c, th, tw)


def from_tiles(tiles: torch.Tensor, grid: int = GRID) -> torch.Tensor:
    """Inverse of :func:`to_tiles`."""
    b, _, c, th, tw = tiles.shape
    return tiles.reshape(b, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, grid * th, grid * tw)


def shuffle(images: torch.Tensor, perms: torch.Tensor, grid: int = GRID) -> torch.Tensor:
    """Cell ``j`` of image ``i`` gets tile ``perms[i, j]``; ``perms`` is ``(B, grid*grid)`` long."""
    tiles = to_tiles(images, grid)
    index = perms.to(images.device)[:, :, None, None, None].expand_as(tiles)
    return from_tiles(torch.gather(tiles, 1, index), grid)


def unshuffle(images: torch.Tensor, perms: torch.Tensor, grid: int = GRID) -> torch.Tensor:
    """Inverse of :func:`shuffle`."""
    return shuffle(images, torch.argsort(perms, dim=1), grid)


def crop_to_grid(images: torch.Tensor, grid: int = GRID) -> torch.Tensor:
    """Centre crop of ``(B, C, S, S)`` to the largest multiple of ``grid`` (tiles must be equal to be swapped)."""
    size = images.shape[-1] // grid * grid
    top, left = (images.shape[-2] - size) // 2, (images.shape[-1] - size) // 2
    return images[..., top : top + size, left : left + size]


def mixed_puzzle(
    photos: torch.Tensor,
    edges: torch.Tensor,
    perm_set: np.ndarray,
    rng: np.random.Generator,
    photo_share: float = 0.5,
    grid: int = GRID,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of mixed-modal puzzles from ``(B, C, S, S)`` photo and edge-map tensors of the same photos.

    Returns ``(shuffled, perms, mixed)``: the network input, the ``(B, grid*grid)`` permutation of
    each, and the unshuffled mixed image (each cell the photo tile with probability ``photo_share``,
    else the edge tile).
    """
    photos, edges = crop_to_grid(photos, grid), crop_to_grid(edges, grid)
    b = len(photos)
    take_photo = torch.from_numpy(rng.random((b, grid * grid)) < photo_share).to(photos.device)
    mask = take_photo[:, :, None, None, None]
    mixed = from_tiles(torch.where(mask, to_tiles(photos, grid), to_tiles(edges, grid)), grid)
    perms = torch.from_numpy(perm_set[rng.integers(len(perm_set), size=b)])
    return shuffle(mixed, perms, grid), perms, mixed


def log_sinkhorn(logits: torch.Tensor, iters: int = SINKHORN_ITERS) -> torch.Tensor:
    """``(B, N, N)`` logits -> log of a (nearly) doubly stochastic matrix by alternating row/column normalisation."""
    log_p = logits
    for _ in range(iters):
        log_p = log_p - torch.logsumexp(log_p, dim=2, keepdim=True)
        log_p = log_p - torch.logsumexp(log_p, dim=1, keepdim=True)
    return log_p


def jigsaw_loss(logits: torch.Tensor, perms: torch.Tensor, iters: int = SINKHORN_ITERS) -> torch.Tensor:
    """Mean negative log-likelihood of the true permutation matrix under Sinkhorn(``logits``).

    ``logits[b, j, k]``: score that shuffled cell ``j`` holds original tile ``k``; the truth is
    ``k = perms[b, j]``. Chance level is ``log(grid*grid)``.
    """
    log_p = log_sinkhorn(logits, iters)
    return -torch.gather(log_p, 2, perms.to(logits.device)[:, :, None]).mean()


class JigsawHead(nn.Module):
    """Feature map ``(B, F, h, w)`` -> per-cell position logits ``(B, grid*grid, grid*grid)``.

    The map is average-pooled to one cell per tile and a shared linear layer scores, for each cell,
    the original position its content came from. It lives only during the ``jigsaw`` stage: it is
    never part of the encoder, so checkpoints keep the format of a model trained without it.
    """

    def __init__(self, feature_dim: int, grid: int = GRID) -> None:
        super().__init__()
        self.grid = grid
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.position = nn.Linear(feature_dim, grid * grid)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        cells = self.pool(feature_map).flatten(2).transpose(1, 2)  # size: B, grid*grid, F
        return self.position(cells)


def trunk_feature_map(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The shared trunk's ``(B, F, h, w)`` map of network-ready images (one-trunk ``SketchPhotoNet`` only)."""
    if not hasattr(net, "trunk"):
        raise ValueError("the jigsaw stage needs one shared trunk (no --photo-arch two-tower model)")
    return net.trunk(net.photo_stem(images))
