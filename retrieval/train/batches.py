"""In-memory training data: cached photos and edge maps, batch samplers, and the validation protocol.

The datasets are small (Chair-V2: ~270 train photos, ~860 sketches), so photos are decoded once and
kept as uint8 squares, edge maps are cached as they are drawn, and validation rasters are rendered
once per run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from retrieval.data.augment import PhotoAugment, augment_photo, flip_photo
from retrieval.data.dataset_protocol import RetrievalDataset, SketchRecord
from retrieval.data.edges import edge_map
from retrieval.data.images import as_rgb, fit_square
from retrieval.data.pseudo_sketch import pseudo_sketch
from retrieval.data.raster import render_steps
from retrieval.data.sketch import Sketch, step_cuts
from retrieval.evaluation.protocol import gallery_photo_ids, score_embeddings, step_shares, true_photo_index
from retrieval.model.encoder import Encoder
from retrieval.model.pooling import l2n
from retrieval.model.progress_head import ink_share
from retrieval.types import GrayImage, RGBImage


def bank_square_size(meta: dict) -> int:
    """Side of the photo squares a :class:`PhotoBank` keeps for a model: its photo input plus a margin
    that random crops take away."""
    return round(meta.get("photo_input_size", meta["input_size"]) * 1.25)


class PhotoBank:
    """Photos as uint8 squares of ``cache_size`` plus up to ``edges_per_photo`` cached edge maps each
    (and ``sketches_per_photo`` pseudo-sketches, drawn only by stages that ask for them).

    New edge maps are drawn until a photo has ``edges_per_photo`` of them, then cached ones are
    reused: fresh variety early, bounded cost later (one map costs ~10 ms).
    """

    def __init__(
        self,
        ids: Sequence[str],
        load: Callable[[str], RGBImage],
        cache_size: int,
        raster_size: int,
        edges_per_photo: int = 8,
        sketches_per_photo: int = 4,
    ) -> None:
        self.ids = list(ids)
        self.photos = np.stack([fit_square(as_rgb(load(i)), cache_size) for i in self.ids])  # size: N, S, S, 3
        self.raster_size = raster_size
        self.edges_per_photo = edges_per_photo
        self._edges: list[list[GrayImage]] = [[] for _ in self.ids]
        self.sketches_per_photo = sketches_per_photo
        self._sketches: list[list[Sketch]] = [[] for _ in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def edge(self, index: int, rng: np.random.Generator) -> GrayImage:
        cached = self._edges[index]
        if len(cached) < self.edges_per_photo:
            cached.append(edge_map(self.photos[index], rng, size=self.raster_size))
            return cached[-1]
        return cached[int(rng.integers(len(cached)))]

    def pseudo_sketch(self, index: int, rng: np.random.Generator) -> Sketch:
        """A pseudo-sketch of the photo (``retrieval.data.pseudo_sketch``), cached like edge maps (~0.2 s each)."""
        cached = self._sketches[index]
        if len(cached) < self.sketches_per_photo:
            cached.append(pseudo_sketch(self.photos[index], rng))
            return cached[-1]
        return cached[int(rng.integers(len(cached)))]


def hard_batch(
    bank_embeddings: np.ndarray | None,
    batch_size: int,
    rng: np.random.Generator,
    candidates: np.ndarray,
    neighbours: int = 5,
) -> np.ndarray:
    """Indices (into ``candidates``' index space) of a batch with hard negatives.

    Half the batch are random seeds; each brings one of its ``neighbours`` nearest photos (by the
    cached photo embeddings), so in-batch negatives are similar items, not easy random ones.
    Without embeddings this is a plain random batch. Indices are distinct.
    """
    batch_size = min(batch_size, len(candidates))
    if bank_embeddings is None or batch_size < 4:
        return rng.choice(candidates, size=batch_size, replace=False)
    emb = bank_embeddings[candidates]
    chosen: list[int] = []
    taken = np.zeros(len(candidates), dtype=bool)
    for seed in rng.permutation(len(candidates)):
        if len(chosen) >= batch_size:
            break
        if taken[seed]:
            continue
        taken[seed] = True
        chosen.append(seed)
        sims = emb @ emb[seed]
        sims[taken] = -np.inf
        near = np.argsort(-sims)[:neighbours]
        near = near[np.isfinite(sims[near])]
        if len(near) and len(chosen) < batch_size:
            pick = int(rng.choice(near))
            taken[pick] = True
            chosen.append(pick)
    return candidates[np.asarray(chosen[:batch_size])]


@dataclass
class ValidationSet:
    """Rendered partial sketches of one split and its photo gallery, ready to score a model.

    The rasters are rendered once per run because validation runs every ``eval_every`` steps; the
    ranks and metrics come from ``retrieval.evaluation.protocol.score_embeddings``, the path every
    evaluation takes, so these numbers are those of ``python -m retrieval.evaluation``.
    """

    rasters: np.ndarray  # size: Q * T, r, r (the 17 point cuts of each sketch, in order)
    true_idx: np.ndarray  # size: Q, row of each sketch's photo in the gallery
    shares: np.ndarray  # size: Q, T, share of each sketch's points drawn at each step
    photos: list[RGBImage]
    gallery_ids: list[str]

    @classmethod
    def build(
        cls,
        dataset: RetrievalDataset,
        raster_size: int,
        line_width: int,
        split: str = "val",
        gallery: str = "split",
    ) -> ValidationSet | None:
        """``None`` when the dataset has no sketches in ``split`` (then no model selection is possible).

        ``gallery`` as in ``retrieval.evaluation.protocol.gallery_photo_ids``. Sketches without
        points are left out rather than failing a training run.
        """
        if split not in dataset.splits():
            return None
        records: list[SketchRecord] = [r for r in dataset.sketches(split) if r.sketch.num_points > 0]
        if not records:
            return None
        gallery_ids = gallery_photo_ids(dataset, split, gallery)
        rasters = [render_steps(r.sketch, step_cuts(r.sketch, "points"), raster_size, line_width) for r in records]
        return cls(
            np.concatenate(rasters),
            true_photo_index(records, gallery_ids),
            step_shares(records, "points"),
            [dataset.load_photo(pid) for pid in gallery_ids],
            gallery_ids,
        )

    def evaluate(self, encoder: Encoder) -> dict:
        """``retrieval.evaluation.metrics.summarize`` of the true photo's rank at each step."""
        sketches = encoder.embed_sketches(self.rasters).reshape(*self.shares.shape, -1)
        return score_embeddings(sketches, encoder.embed_photos(self.photos), self.true_idx, self.shares).summary


class PhotoSide:
    """The photo half of training pairs.

    Normally an augmented (and paired-flipped) photo goes through the photo branch at every step.
    With a locked photo tower (:mod:`retrieval.model.two_tower`, LiT) the tower's output never changes,
    so ``views`` augmented views of every photo and their mirror images are embedded once here, and
    a step costs only the photo head on cached features: the ImageNet backbone is paid for once per
    run instead of once per pair. View 0 is the plain photo (what the gallery index sees).
    """

    def __init__(
        self, encoder: Encoder, bank: PhotoBank, views: int, rng: np.random.Generator, progress: bool = False
    ) -> None:
        self.encoder, self.bank = encoder, bank
        self.size = encoder.meta.get("photo_input_size", encoder.meta["input_size"])
        tower = getattr(encoder.net, "photo_tower", None)
        self.features: torch.Tensor | None = None  # size: N, views, 2 (plain, mirrored), Fp
        if tower is not None and tower.locked:
            self.features = self._embed_views(max(1, views), rng, progress)

    @property
    def locked(self) -> bool:
        return self.features is not None

    def _embed_views(self, views: int, rng: np.random.Generator, progress: bool) -> torch.Tensor:
        rows = []
        for photo in tqdm(self.bank.photos, desc="photo features (locked tower)", disable=not progress):
            images = [fit_square(photo, self.size)]
            images += [augment_photo(photo, PhotoAugment(), rng, self.size) for _ in range(views - 1)]
            images += [flip_photo(image) for image in images]
            with torch.inference_mode():
                feats = self.encoder.net.photo_features(self.encoder.photo_batch(images))
            rows.append(feats.reshape(2, views, -1).transpose(0, 1))
        return torch.stack(rows).clone()

    def sample(self, index: int, flip: bool, rng: np.random.Generator) -> RGBImage | tuple[int, int, int]:
        """One pair's photo: an augmented image, or (index, view, flip) into the locked features."""
        if self.locked:
            return index, int(rng.integers(self.features.shape[1])), int(flip)
        photo = augment_photo(self.bank.photos[index], PhotoAugment(), rng, self.size)
        return flip_photo(photo) if flip else photo

    def embed_pair(self, sketches: Sequence[np.ndarray], photos: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, D)`` sketch and photo embeddings of a batch, with gradients.

        Sketches go through the head the app serves: the encoder's progress head when it has one
        (``retrieval.model.progress_head``, reading the rasters' ink share), else the linear head.
        """
        net, sketch_x = self.encoder.net, self.encoder.sketch_batch(np.stack(sketches))
        if not self.locked:
            sketch_feats, photo_feats = net.features_pair(sketch_x, self.encoder.photo_batch(photos))
            return self.sketch_head(sketch_feats, sketches), l2n(net.photo_head(photo_feats))
        index, view, flip = (list(column) for column in zip(*photos))
        photo_emb = l2n(net.photo_head(self.features[index, view, flip]))
        return self.sketch_head(net.sketch_features(sketch_x), sketches), photo_emb

    def sketch_head(self, features: torch.Tensor, rasters: Sequence[np.ndarray]) -> torch.Tensor:
        """Unit sketch embeddings of backbone ``features`` through the served head, with gradients."""
        head = self.encoder.progress_head
        if head is None:
            return l2n(self.encoder.net.sketch_head(features))
        progress = torch.as_tensor(ink_share(np.stack(rasters)), device=features.device).reshape(-1, 1) / head.ink_ref
        return l2n(head(torch.cat([features, progress], dim=1)))

    def bank_embeddings(self, indices: np.ndarray) -> np.ndarray:
        """Current embeddings of the plain photos at ``indices`` (for hard-negative mining)."""
        if not self.locked:
            return self.encoder.embed_photos(self.bank.photos[indices])
        with torch.inference_mode():
            return l2n(self.encoder.net.photo_head(self.features[indices, 0, 0])).cpu().numpy()
