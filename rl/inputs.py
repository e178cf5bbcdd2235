"""The inputs every head-training entry point shares: the frozen encoder, the data split, the feature cache."""

from __future__ import annotations

from dataclasses import dataclass

from retrieval.data.splits import CardSplitFlags, DataSplit


@dataclass
class HeadInputs(CardSplitFlags):
    """What every head-training entry point (rl.train, rl.control, rl.sweep) starts from.

    The frozen encoder, the data and its split, and the feature cache: runs that are compared must agree on
    all of these, or they would train and select on different features. The split is the checkpoint's
    own (its card's); the split flags may only repeat it (``CardSplitFlags.checkpoint_split``).
    """

    checkpoint: str = ""
    """supervised encoder checkpoint folder (its backbone stays frozen; its sketch head is the start point)"""
    cache_dir: str = ".cache/rl-features"
    """where cached frozen features live (keyed by model, dataset, split, step mode; shared by rl.*)"""

    def data_split(self, recorded: DataSplit | None) -> DataSplit:
        """The checkpoint's split (``recorded`` in its card); flags that carve otherwise are refused."""
        return self.checkpoint_split(recorded, "--checkpoint")
