"""The dataset protocol: what every retrieval dataset is made of (sketch records, the interface, the carves).

Kept apart from ``retrieval.data.datasets`` (which opens datasets, the procedural one included) so
the procedural generator can build records without importing the module that imports it. The carves
(``split_validation``, ``split_fold``) live here rather than in ``splits`` for the same reason:
``splits`` opens datasets, and every dataset carves its val photos.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from retrieval.data.sketch import Sketch
from retrieval.types import RGBImage


@dataclass(frozen=True)
class SketchRecord:
    """One sketch of a dataset: its file key, the split it belongs to and the photo it depicts."""

    key: str
    split: str
    photo_id: str
    sketch: Sketch


@runtime_checkable
class RetrievalDataset(Protocol):
    """What training, evaluation, RL and the app need from a dataset."""

    name: str

    def splits(self) -> list[str]:
        """``['train', 'val']`` plus ``'test'`` when the source has one."""
        ...

    def photo_ids(self, split: str) -> list[str]:
        """Sorted ids of that split's photos."""
        ...

    def sketches(self, split: str) -> list[SketchRecord]:
        """That split's sketches, sorted by key."""
        ...

    def load_photo(self, photo_id: str) -> RGBImage:
        """The photo as an ``(H, W, 3)`` uint8 RGB array."""
        ...


def split_validation(
    photo_ids: Iterable[str], fraction: float = 0.1, seed: int | str = 0
) -> tuple[list[str], list[str]]:
    """Carve a validation set out of photo ids, deterministically and independent of input order.

    Photos are ranked by a seeded hash of their id, so the split does not depend on the order ids
    arrive in, and adding a photo moves at most one other across the boundary.

    Args:
        photo_ids: ids (duplicates are ignored).
        fraction: share of photos for validation, ``0 <= fraction < 1``; rounded, but at least one
            photo when ``fraction > 0``, and at least one photo left for training.
        seed: changes which photos are drawn.

    Returns:
        ``(train_ids, val_ids)``, each sorted.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    ids = sorted(set(photo_ids))
    n_val = round(fraction * len(ids))
    if fraction > 0 and len(ids) >= 2:
        n_val = min(max(n_val, 1), len(ids) - 1)
    ranked = sorted(ids, key=lambda pid: hashlib.sha256(f"{seed}\0{pid}".encode()).digest())
    return sorted(ranked[n_val:]), sorted(ranked[:n_val])


def split_fold(photo_ids: Iterable[str], fold: int, folds: int, seed: int | str = 0) -> tuple[list[str], list[str]]:
    """Fold ``fold`` of ``folds`` seeded, near-equal folds of ``photo_ids``: ``(other photos, this fold)``.

    Photos are ranked by the same seeded hash as :func:`split_validation` and dealt into folds in
    turn, so the ``folds`` folds of one seed partition the photos and each is used once for testing.
    """
    if not 0 <= fold < folds or folds < 2:
        raise ValueError(f"fold must be in [0, folds) with folds >= 2, got fold {fold} of {folds}")
    ids = sorted(set(photo_ids))
    if len(ids) < folds:
        raise ValueError(f"{len(ids)} photos cannot fill {folds} folds")
    ranked = sorted(ids, key=lambda pid: hashlib.sha256(f"{seed}\0{pid}".encode()).digest())
    chosen = set(ranked[fold::folds])
    return sorted(set(ids) - chosen), sorted(chosen)
