"""Which photos a model may learn from, be selected on and be judged on: the data split as one value.

A ``DataSplit`` names the data and its carves (val, and an optional holdout taken as a fraction or
as one fold of a cross-validation), with one seed for the carves that is not the training seed.
It is the one definition of the split flags: every config that defines a split extends it
(``retrieval.train.Config``, the product pipeline's ``SupervisedRecipe``), and every config that
uses a trained checkpoint extends :class:`CardSplitFlags`, the same fields made optional, whose
default is the split the checkpoint's card records.

Training records the split in every model card (``record``: the settings plus photo and sketch
counts per split); a run that starts from a checkpoint takes the split from the card and refuses
flags that carve differently (``CardSplitFlags.checkpoint_split``, ``check_card``), so a head is
never selected or compared on photos its encoder trained on.

Pre-training data must stay off the evaluation photos too: procedural pre-training sketches get a
generator seed derived from the data's (``pretrain_spec``), and ``check_disjoint`` refuses any
overlap of their photo ids with val, holdout or test photos.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields, make_dataclass, replace
from typing import Any

from retrieval.cli import field_docs
from retrieval.data.dataset_protocol import RetrievalDataset, SketchRecord
from retrieval.data.datasets import HOLDOUT, open_dataset, parse_procedural_spec

EVALUATION_SPLITS = ("val", HOLDOUT, "test")  # splits whose photos no training data may show
PRETRAIN_SEED_OFFSET = 1000  # procedural pre-training sketches: generator seed = data seed + this


class SplitMismatchError(ValueError):
    """A checkpoint was trained on a different carve of the data than the run using it asks for."""


# Not frozen, so that configs can extend it (a mutable dataclass cannot inherit a frozen one); a
# DataSplit value itself is never mutated (``replace`` makes new ones) and hashes by its fields.
@dataclass(unsafe_hash=True)
class DataSplit:
    """The data and how its train photos are carved; recorded in model cards, checked on reuse."""

    data: str = "procedural"
    """dataset spec for retrieval.data.datasets.open_dataset: a QMUL-layout folder or 'procedural[:k=v,...]'"""
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

    def __post_init__(self) -> None:
        if self.split_seed < 0:
            raise ValueError(
                f"split_seed {self.split_seed}: the split seed is its own setting (it no longer follows the training "
                "seed); pass --split-seed N >= 0, the seed the data was carved with"
            )
        if self.holdout_folds and not 0 <= self.holdout_fold < self.holdout_folds:
            raise ValueError(f"holdout_fold {self.holdout_fold} must be in [0, {self.holdout_folds})")

    @property
    def data_split(self) -> DataSplit:
        """The split alone: a config that extends ``DataSplit`` carries its other settings too."""
        return DataSplit(**{name: getattr(self, name) for name in SPLIT_FIELDS})

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
        return {**{name: getattr(self, name) for name in SPLIT_FIELDS}, "counts": counts}

    @classmethod
    def from_record(cls, recorded: Any) -> DataSplit | None:
        """The split of a card's ``split`` record (see ``record``); None for a card that has none."""
        if not isinstance(recorded, dict):
            return None
        return cls(**{name: recorded[name] for name in SPLIT_FIELDS if name in recorded})

    @classmethod
    def from_card(cls, card: dict) -> DataSplit:
        """The split a checkpoint was trained on, from its card's ``split`` record (refused without one)."""
        return _recorded_or_refuse(cls.from_record(card.get("split")))

    def check_card(self, card: dict, what: str = "checkpoint") -> None:
        """Refuse a ``what`` whose recorded split differs from this one (data, fractions, folds, seed)."""
        self.check_against(DataSplit.from_record(card.get("split")), what)

    def adopt(self, trained: DataSplit | None, what: str = "checkpoint") -> DataSplit:
        """The split of a run that starts from a ``what`` trained on ``trained`` (its card's split).

        A split field left at its default (this class's: a config may set its own) takes ``trained``'s
        value; a field set otherwise must agree with it (``SplitMismatchError``): any other carve
        could put the ``what``'s training photos into val or the holdout.
        """
        trained = _recorded_or_refuse(trained)
        defaults = {f.name: f.default for f in fields(self) if f.name in SPLIT_FIELDS}
        chosen = {name: getattr(self, name) for name in SPLIT_FIELDS if getattr(self, name) != defaults[name]}
        replace(trained, **chosen).check_against(trained, what)
        return trained

    def check_against(self, trained: DataSplit | None, what: str = "checkpoint") -> None:
        """Refuse a ``what`` trained on ``trained`` (None: its card records no split) unless it is this very split."""
        trained = _recorded_or_refuse(trained)
        if trained.data != self.data:
            raise SplitMismatchError(f"the {what} was trained on data {trained.data!r}, this run uses {self.data!r}")
        # The holdout must be the same photos, and the val carve too: a head selected on val photos
        # the encoder trained on would be judged by a leak.
        differing = [
            f"{name} {getattr(trained, name)} (here {getattr(self, name)})"
            for name in SPLIT_FIELDS
            if name != "data" and getattr(trained, name) != getattr(self, name)
        ]
        if differing:
            raise SplitMismatchError(
                f"the {what} was carved differently: {', '.join(differing)}; leave the split flags out (the "
                "card's split is the default) or train a checkpoint for this split"
            )


SPLIT_FIELDS = tuple(f.name for f in fields(DataSplit))


def _recorded_or_refuse(recorded: DataSplit | None) -> DataSplit:
    if recorded is None:
        raise SplitMismatchError(
            "the checkpoint's card has no 'split' record (it predates split provenance), so its carve "
            "cannot be checked; retrain it with this version (python -m retrieval.train or make reproduce)"
        )
    return recorded


class _CardSplitMethods:
    """How the optional split flags of :class:`CardSplitFlags` combine with a checkpoint's recorded split."""

    def split_flags_given(self) -> dict[str, Any]:
        """The split flags set (not None), by field name."""
        return {name: getattr(self, name) for name in SPLIT_FIELDS if getattr(self, name) is not None}

    def checkpoint_split(self, recorded: DataSplit | None, what: str = "--checkpoint") -> DataSplit:
        """The split ``recorded`` in the checkpoint's card; the flags given must agree with it.

        For runs that train or select on top of a checkpoint (a head, a control): any other carve
        would let them see photos the checkpoint trained on, so it is refused, and so is a card
        without a split record.
        """
        trained = _recorded_or_refuse(recorded)
        replace(trained, **self.split_flags_given()).check_against(trained, what)
        return trained

    def split_over(self, recorded: DataSplit | None) -> DataSplit:
        """The card's split with each flag given overriding it; data other than the card's (or a card
        without a split) starts from ``DataSplit``'s defaults instead."""
        given = self.split_flags_given()
        if "data" not in given and recorded is None:
            raise SplitMismatchError("--data is required: the model card records no split to default to")
        same_data = recorded is not None and given.get("data", recorded.data) == recorded.data
        return replace(recorded if same_data else DataSplit(), **given)


def _card_split_flags() -> type:
    """``DataSplit``'s fields, each ``X | None = None`` (None: the checkpoint card's), docs carried over."""
    hints, docs = typing.get_type_hints(DataSplit), field_docs(DataSplit)
    optional = [
        (name, hints[name] | None, field(default=None, metadata={"help": f"{docs[name]} (default: the model card's)"}))
        for name in SPLIT_FIELDS
    ]
    cls = make_dataclass("CardSplitFlags", optional, bases=(_CardSplitMethods,))
    cls.__module__ = __name__
    cls.__doc__ = "The split flags of a run that uses a trained checkpoint: unset = its card's."
    return cls


# One definition of the split flags, made optional for the configs that start from a checkpoint
# (evaluation, rl.train, rl.control, rl.sweep): unset flags take the card's split.
CardSplitFlags = _card_split_flags()


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
