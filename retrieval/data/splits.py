"""Which photos a model may learn from, be selected on and be judged on: the data split as one value.

A ``DataSplit`` names the data and its carves (val, and an optional holdout taken as a fraction or
as one fold of a cross-validation), with one seed for the carves that is not the training seed.
Training records it in every model card (``record``: the settings plus photo and sketch counts per
split); a run that starts from a checkpoint rebuilds the split from the card and refuses a
checkpoint carved differently (``check_card``), so a head is never selected or compared on photos
its encoder trained on.

Pre-training data must stay off the evaluation photos too: procedural pre-training sketches get a
generator seed derived from the data's (``pretrain_spec``), and ``check_disjoint`` refuses any
overlap of their photo ids with val, holdout or test photos.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from retrieval.data.dataset_protocol import RetrievalDataset, SketchRecord
from retrieval.data.datasets import HOLDOUT, open_dataset, parse_procedural_spec

EVALUATION_SPLITS = ("val", HOLDOUT, "test")  # splits whose photos no training data may show
PRETRAIN_SEED_OFFSET = 1000  # procedural pre-training sketches: generator seed = data seed + this


class SplitMismatchError(ValueError):
    """A checkpoint was trained on a different carve of the data than the run using it asks for."""


@dataclass(frozen=True)
class DataSplit:
    """The data and how its train photos are carved; recorded in model cards, checked on reuse."""

    data: str = "procedural"
    """dataset spec (retrieval.data.datasets.open_dataset)"""
    val_fraction: float = 0.1
    """share of train photos carved out as val (checkpoint and head selection)"""
    holdout_fraction: float = 0.0
    """share of the remaining train photos carved out as 'holdout' (0 = none)"""
    holdout_folds: int = 0
    """cross-validation: the holdout is fold --holdout-fold of this many folds instead (0 = off)"""
    holdout_fold: int = 0
    """which fold is the holdout when --holdout-folds is set"""
    split_seed: int = 0
    """seed of the carves (and of a procedural dataset without its own seed); not the training seed"""

    def open(self) -> RetrievalDataset:
        fold = (self.holdout_fold, self.holdout_folds) if self.holdout_folds else None
        return open_dataset(
            self.data,
            val_fraction=self.val_fraction,
            seed=self.split_seed,
            holdout_fraction=self.holdout_fraction,
            holdout_fold=fold,
        )

    @property
    def has_holdout(self) -> bool:
        return self.holdout_fraction > 0 or self.holdout_folds > 0

    def record(self, dataset: RetrievalDataset | None) -> dict[str, Any]:
        """The card entry: these settings plus photo and sketch counts of every split."""
        counts = {}
        for split in dataset.splits() if dataset is not None else ():
            counts[split] = {"photos": len(dataset.photo_ids(split)), "sketches": len(dataset.sketches(split))}
        return {**asdict(self), "counts": counts}

    @classmethod
    def from_card(cls, card: dict) -> DataSplit:
        """The split a checkpoint was trained on, from its card's ``split`` record."""
        recorded = card.get("split")
        if not isinstance(recorded, dict):
            raise SplitMismatchError(
                "the checkpoint's card has no 'split' record (it predates split provenance), so its carve "
                "cannot be checked; retrain it with this version (python -m retrieval.train or make reproduce)"
            )
        return cls(**{f.name: recorded[f.name] for f in fields(cls) if f.name in recorded})

    def check_card(self, card: dict, what: str = "checkpoint") -> None:
        """Refuse a ``what`` whose recorded split differs from this one (data, fractions, folds, seed)."""
        trained = DataSplit.from_card(card)
        if trained.data != self.data:
            raise SplitMismatchError(f"the {what} was trained on data {trained.data!r}, this run uses {self.data!r}")
        # The holdout must be the same photos, and the val carve too: a head selected on val photos
        # the encoder trained on would be judged by a leak.
        differing = [
            f"{f.name} {getattr(trained, f.name)} (here {getattr(self, f.name)})"
            for f in fields(self)
            if f.name != "data" and getattr(trained, f.name) != getattr(self, f.name)
        ]
        if differing:
            raise SplitMismatchError(
                f"the {what} was carved differently: {', '.join(differing)}; pass the same split flags "
                "or train a checkpoint for this split"
            )


def generator_seed(dataset: RetrievalDataset, default: int) -> int:
    """The procedural generator seed of ``dataset`` (through a holdout wrapper), else ``default``."""
    while hasattr(dataset, "base"):
        dataset = dataset.base
    return int(getattr(dataset, "seed", default))


def pretrain_spec(spec: str, dataset: RetrievalDataset | None, split_seed: int) -> str:
    """``spec`` with a seed derived from the data's when it is procedural and names none.

    The procedural photo of index ``i`` depends only on ``(seed, i)``, so pre-training sketches
    drawn with the data's own seed would show the data's val and test photos.
    """
    if not spec or spec.split(":", 1)[0] != "procedural" or "seed" in parse_procedural_spec(spec.partition(":")[2]):
        return spec
    seed = (generator_seed(dataset, split_seed) if dataset is not None else split_seed) + PRETRAIN_SEED_OFFSET
    options = spec.partition(":")[2]
    return f"procedural:{options + ',' if options else ''}seed={seed}"


def check_disjoint(records: list[SketchRecord], dataset: RetrievalDataset | None, what: str) -> None:
    """Refuse pre-training ``records`` that show a photo of ``dataset``'s val, holdout or test split."""
    if dataset is None:
        return
    evaluation = {pid for split in EVALUATION_SPLITS if split in dataset.splits() for pid in dataset.photo_ids(split)}
    shared = sorted({r.photo_id for r in records} & evaluation)
    if shared:
        raise ValueError(
            f"{what} shows {len(shared)} photos of the evaluation splits (e.g. {shared[0]!r}): pre-training on "
            "them would leak; give it a different procedural seed (or leave the seed out to derive one)"
        )
