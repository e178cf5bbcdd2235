"""The model card, typed: what a checkpoint says about itself beyond its weights.

A card travels inside ``model.json`` (``meta["card"]``, :mod:`retrieval.model.checkpoint`). On disk it
stays one JSON object, so cards written before this type (``assets/model`` among them) read
unchanged; in memory it is a :class:`ModelCard`:

- ``spec``: the architecture (:class:`~retrieval.model.spec.ModelSpec`, from the meta around the card);
- ``split``: the :class:`~retrieval.data.splits.DataSplit` the model trained on, with the photo and
  sketch counts of each split, or None for a card that predates split provenance;
- ``provenance``: which data, run config, training seed and code made it (:class:`Provenance`);
- ``details``: every other entry, kept as written (validation metrics, the stage and steps a
  checkpoint was taken at, an RL head's record, a ship decision, an adaptation...).

``ModelCard.from_meta`` reads it and ``to_json`` writes it back: the two are inverse for any card,
and :meth:`~retrieval.model.encoder.Encoder.save` writes every card through ``to_json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from retrieval.data.splits import DataSplit
from retrieval.model.spec import ModelSpec


@dataclass(frozen=True)
class Provenance:
    """Where a model comes from; None where a card does not say (e.g. a model built but never trained)."""

    data: str | None = None
    """the dataset spec it trained on ('' = a photo folder only)"""
    dataset: str | None = None
    """the opened dataset's name (e.g. Procedural-v1-s0, or the QMUL folder's)"""
    seed: int | None = None
    """the training seed (weights, batches, augmentation); the carves have the split's own seed"""
    config: dict[str, Any] | None = None
    """the training run's whole config, as JSON (retrieval.train.config.to_json)"""
    git_commit: str | None = None
    """commit of the code that trained it"""
    created_utc: str | None = None
    """when the checkpoint was written (ISO 8601, UTC)"""


PROVENANCE_KEYS = tuple(f.name for f in fields(Provenance))
SPLIT_KEY = "split"


@dataclass(frozen=True)
class ModelCard:
    """A checkpoint's card: its spec, the data split it trained on, its provenance, and the rest as written."""

    spec: ModelSpec
    split: DataSplit | None = None
    split_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    provenance: Provenance = Provenance()
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> ModelCard:
        """The card of a checked checkpoint meta (``checkpoint.check_meta``); any card on disk reads."""
        return cls.from_json(ModelSpec.from_meta(meta), meta.get("card") or {})

    @classmethod
    def from_json(cls, spec: ModelSpec, card: dict[str, Any]) -> ModelCard:
        """``card`` (a ``meta["card"]`` object) typed; ``spec`` is the architecture it describes."""
        if not isinstance(card, dict):
            raise ValueError(f"a model card is a JSON object, got {type(card).__name__}")
        recorded = card.get(SPLIT_KEY)
        counts = recorded.get("counts", {}) if isinstance(recorded, dict) else {}
        return cls(
            spec=spec,
            split=DataSplit.from_record(recorded),
            split_counts=counts,
            provenance=Provenance(**{k: card[k] for k in PROVENANCE_KEYS if k in card}),
            details={k: v for k, v in card.items() if k not in PROVENANCE_KEYS and k != SPLIT_KEY},
        )

    def to_json(self) -> dict[str, Any]:
        """The card as ``model.json`` holds it (the spec is the meta's own, not repeated here)."""
        out = {k: getattr(self.provenance, k) for k in PROVENANCE_KEYS if getattr(self.provenance, k) is not None}
        if self.split is not None:
            out[SPLIT_KEY] = {**self.split.record(None), "counts": self.split_counts}
        return {**out, **self.details}

    def with_entries(self, **entries: Any) -> ModelCard:
        """This card with ``entries`` added or replaced: a provenance field's name sets that field, any
        other name a detail (the split is set with ``dataclasses.replace``, never as an entry)."""
        if SPLIT_KEY in entries:
            raise ValueError("set a card's split with dataclasses.replace(card, split=..., split_counts=...)")
        known = {k: v for k, v in entries.items() if k in PROVENANCE_KEYS}
        others = {k: v for k, v in entries.items() if k not in PROVENANCE_KEYS}
        return replace(self, provenance=replace(self.provenance, **known), details={**self.details, **others})
