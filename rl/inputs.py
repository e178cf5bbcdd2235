"""The inputs every head-training entry point shares: the frozen encoder, the data split, the feature cache."""

from __future__ import annotations

from dataclasses import dataclass

from retrieval.data.splits import DataSplit


@dataclass
class HeadInputs:
    """What every head-training entry point (rl.train, rl.control, rl.sweep) starts from.

    The frozen encoder, the data and its split, and the feature cache: runs that are compared must agree on
    all of these, or they would train and select on different features.
    """

    checkpoint: str = ""
    """supervised encoder checkpoint folder (its backbone stays frozen; its sketch head is the start point)"""
    data: str = "procedural"
    """dataset spec for retrieval.data.datasets.open_dataset: a QMUL-layout folder, or 'procedural[:k=v,...]'"""
    val_fraction: float = 0.1
    """share of train photos carved out as val; with --seed it must match the supervised run's split"""
    holdout_fraction: float = 0.0
    """share of train photos carved out as 'holdout' (as in the supervised run; heads never see them)"""
    split_seed: int = -1
    """seed of the val/holdout carves (-1 = the checkpoint card's); not --seed, which seeds PPO or the control"""
    cache_dir: str = ".cache/rl-features"
    """where cached frozen features live (keyed by model, dataset, split, step mode; shared by rl.*)"""

    def data_split(self, card: dict) -> DataSplit:
        """The split these flags name, its seed from ``card`` unless given; refused unless ``card`` records it."""
        seed = self.split_seed if self.split_seed >= 0 else DataSplit.from_card(card).split_seed
        split = DataSplit(self.data, self.val_fraction, self.holdout_fraction, split_seed=seed)
        split.check_card(card, "--checkpoint")
        return split
