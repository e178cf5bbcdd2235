"""ALGO LOGIC of ``retrieval.train.pipeline``: one optimisation step of each stage (a batch -> a loss).

Each function reads the batch material :class:`~retrieval.train.loop.StageLoop` holds (photo bank,
sketches, Quick, Draw! drawings) and returns the loss the loop back-propagates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from retrieval.data.augment import SketchAugment, flip_sketch, render_augmented
from retrieval.data.sketch import Sketch
from retrieval.model.losses import hardest_triplet, info_nce, recall_at_k_loss
from retrieval.train.batches import hard_batch
from retrieval.train.jigsaw import hamming_permutations, jigsaw_loss, mixed_puzzle, trunk_feature_map
from retrieval.train.loop import StageLoop


def edges_step(loop: StageLoop) -> torch.Tensor:
    cfg, bank, rng = loop.cfg, loop.bank, loop.rng
    idx = rng.choice(len(bank), size=min(cfg.batch_size, len(bank)), replace=False)
    sketches, photos = [], []
    for i in idx:
        edge = bank.edge(i, rng)
        flip = rng.random() < 0.5  # paired flip keeps the fine-grained correspondence
        sketches.append(np.ascontiguousarray(edge[:, ::-1]) if flip else edge)
        photos.append(loop.photo_side.sample(i, flip, rng))
    s, p = loop.photo_side.embed_pair(sketches, photos)
    return info_nce(s, p, cfg.temperature)


def jigsaw_step(loop: StageLoop) -> torch.Tensor:
    """Mixed-modal jigsaw (``retrieval.train.jigsaw``): photo and edge-map tiles of a photo, shuffled, put back."""
    cfg, bank, rng = loop.cfg, loop.bank, loop.rng
    idx = rng.choice(len(bank), size=min(cfg.batch_size, len(bank)), replace=False)
    edges, photos = [], []
    for i in idx:
        edge = bank.edge(i, rng)
        flip = rng.random() < 0.5  # paired flip: the tiles of both modalities must line up
        edges.append(np.ascontiguousarray(edge[:, ::-1]) if flip else edge)
        photos.append(loop.photo_side.sample(i, flip, rng))
    photo_x, edge_x = loop.encoder.photo_batch(photos), loop.encoder.sketch_batch(np.stack(edges))
    perm_set = hamming_permutations(cfg.jigsaw_permutations, cfg.seed)
    puzzle, perms, _ = mixed_puzzle(photo_x, edge_x, perm_set, rng)
    logits = loop.heads["jigsaw"](trunk_feature_map(loop.net, puzzle))
    return jigsaw_loss(logits, perms)


def quickdraw_step(loop: StageLoop) -> torch.Tensor:
    cfg, rng, size, drawings = loop.cfg, loop.rng, loop.size, loop.quickdraw
    idx = rng.choice(len(drawings), size=min(cfg.batch_size, len(drawings)), replace=False)
    aug = SketchAugment(min_fraction=cfg.min_fraction)
    full = [render_augmented(drawings[i], aug, rng, size, partial=False) for i in idx]
    part = [render_augmented(drawings[i], aug, rng, size, partial=True) for i in idx]
    emb = loop.net.embed_sketches(loop.encoder.sketch_batch(np.stack(full + part)))
    return info_nce(emb[len(idx) :], emb[: len(idx)], cfg.temperature)


def finegrained_step(loop: StageLoop) -> torch.Tensor:
    cfg, bank, rng = loop.cfg, loop.bank, loop.rng
    if cfg.hard_negatives and loop.step % cfg.bank_every == 0:
        loop.bank_embeddings = np.zeros((len(bank), loop.encoder.meta["embed_dim"]), np.float32)
        loop.bank_embeddings[loop.sketched] = loop.photo_side.bank_embeddings(loop.sketched)
    idx = hard_batch(loop.bank_embeddings if cfg.hard_negatives else None, cfg.batch_size, rng, loop.sketched)

    def human_sketch(i: int) -> Sketch:
        records = loop.sketches_of[i]
        return records[int(rng.integers(len(records)))].sketch

    sketches, photos = training_pairs(loop, idx, human_sketch)
    s, p = loop.photo_side.embed_pair(sketches, photos)
    return finegrained_loss(cfg, s, p)


def gallery_step(loop: StageLoop) -> torch.Tensor:
    """Sketch-free adaptation to the photo folder (``python -m retrieval.adapt``).

    Pairs are a gallery photo (augmented, paired flip) and a pseudo-sketch of it (edge map traced
    into ordered strokes, ``retrieval.data.pseudo_sketch``), cut at a random point like a drawing in
    progress, or now and then a plain edge map; batches are built around each photo's nearest
    gallery neighbours (hard negatives: fine-grained means telling near-identical photos apart).
    The finegrained loss is added to a distillation term that keeps the sketch embeddings of
    rehearsal drawings (Quick, Draw! + procedural) where the frozen start model puts them.
    """
    cfg, bank, rng = loop.cfg, loop.bank, loop.rng
    if cfg.hard_negatives and loop.step % cfg.bank_every == 0:
        loop.bank_embeddings = loop.photo_side.bank_embeddings(np.arange(len(bank)))
    idx = hard_batch(loop.bank_embeddings if cfg.hard_negatives else None, cfg.batch_size, rng, np.arange(len(bank)))
    sketches, photos = training_pairs(loop, idx, lambda i: bank.pseudo_sketch(i, rng))
    rehearsal = rehearsal_rasters(loop) if loop.teacher is not None else []
    s, p = loop.photo_side.embed_pair(sketches + rehearsal, photos)  # one pass: batch-norm sees both
    loss = finegrained_loss(cfg, s[: len(idx)], p)
    if rehearsal:
        teacher = torch.as_tensor(loop.teacher.embed_sketches(np.stack(rehearsal)), device=s.device)
        loss = loss + cfg.distill_weight * (1.0 - (s[len(idx) :] * teacher).sum(dim=1)).mean()
    return loss


def training_pairs(loop: StageLoop, idx: np.ndarray, sketch_of: Callable[[int], Sketch]) -> tuple[list, list]:
    """Sketch rasters and photos of the pairs of bank photos ``idx``, mirrored together half of the time.

    Each sketch is ``sketch_of(i)`` augmented (cut at a random point with ``cfg.partial_prob``), or
    with ``cfg.edge_mix`` an edge map of photo ``i`` (a regulariser).
    """
    cfg, bank, rng = loop.cfg, loop.bank, loop.rng
    aug = SketchAugment(partial_prob=cfg.partial_prob, min_fraction=cfg.min_fraction)
    sketches, photos = [], []
    for i in idx:
        flip = rng.random() < 0.5  # paired flip keeps the fine-grained correspondence
        photos.append(loop.photo_side.sample(i, flip, rng))
        if rng.random() < cfg.edge_mix:
            raster = bank.edge(i, rng)
            raster = np.ascontiguousarray(raster[:, ::-1]) if flip else raster
        else:
            sketch = sketch_of(i)
            raster = render_augmented(flip_sketch(sketch) if flip else sketch, aug, rng, loop.size)
        sketches.append(raster)
    return sketches, photos


def rehearsal_rasters(loop: StageLoop) -> list[np.ndarray]:
    """Augmented views (half of them partial) of ``cfg.rehearsal_batch`` of the start model's kind of drawings."""
    cfg, rng, drawings = loop.cfg, loop.rng, loop.quickdraw
    idx = rng.choice(len(drawings), size=min(cfg.rehearsal_batch, len(drawings)), replace=False)
    aug = SketchAugment(min_fraction=cfg.min_fraction)
    return [render_augmented(drawings[i], aug, rng, loop.size) for i in idx]


def finegrained_loss(cfg: Any, sketches: torch.Tensor, photos: torch.Tensor) -> torch.Tensor:
    """The finegrained stage's ``cfg.loss`` on ``(B, D)`` unit rows, ``sketches[i]`` matching ``photos[i]``."""
    if cfg.loss == "recall":
        return recall_at_k_loss(sketches, photos)
    loss = info_nce(sketches, photos, cfg.temperature)
    loss = loss + cfg.triplet_weight * hardest_triplet(sketches, photos, cfg.triplet_margin)
    if cfg.loss == "infonce+recall":
        loss = loss + cfg.recall_weight * recall_at_k_loss(sketches, photos)
    return loss


STEP_FNS = {
    "jigsaw": jigsaw_step,
    "edges": edges_step,
    "quickdraw": quickdraw_step,
    "finegrained": finegrained_step,
    "gallery": gallery_step,
}
