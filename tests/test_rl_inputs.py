"""rl.inputs: a head-training run starts from a checkpoint's own split, never another carve of its data."""

from __future__ import annotations

import pytest

from retrieval.data.splits import DataSplit, SplitMismatchError
from rl.inputs import HeadInputs

DATA = "procedural:photos=60,sketches=1"


def test_a_checkpoint_user_takes_the_cards_split_and_refuses_another_carve():
    trained = DataSplit(DATA, holdout_fraction=0.2, split_seed=3)
    assert HeadInputs(checkpoint="c").data_split(trained) == trained  # no split flag: the card's carve
    assert HeadInputs(checkpoint="c", split_seed=3, holdout_fraction=0.2).data_split(trained) == trained
    with pytest.raises(SplitMismatchError, match=r"split_seed 3 \(here 0\)"):
        HeadInputs(checkpoint="c", split_seed=0).data_split(trained)  # e.g. the PPO seed passed as the split's
    with pytest.raises(SplitMismatchError, match="trained on data"):
        HeadInputs(checkpoint="c", data="procedural:photos=80").data_split(trained)
    with pytest.raises(SplitMismatchError, match="no 'split' record"):
        HeadInputs(checkpoint="c").data_split(None)
