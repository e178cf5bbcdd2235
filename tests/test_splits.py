"""retrieval.data.splits: one split value, recorded in cards, checked on reuse; pre-training kept off evaluation photos."""

from __future__ import annotations

import pytest

from retrieval.data.dataset_protocol import split_fold
from retrieval.data.datasets import open_dataset
from retrieval.data.splits import DataSplit, SplitMismatchError, check_disjoint, pretrain_spec

DATA = "procedural:photos=60,sketches=1"


@pytest.mark.slow
def test_the_folds_of_one_seed_partition_the_train_photos_and_never_touch_val():
    folds = [DataSplit(DATA, holdout_folds=5, holdout_fold=i).open() for i in range(5)]
    held = [set(d.photo_ids("holdout")) for d in folds]
    train_before = set(open_dataset(DATA).photo_ids("train"))
    assert set().union(*held) == train_before
    assert sum(len(h) for h in held) == len(train_before)  # disjoint
    assert all(not (h & set(d.photo_ids("val"))) and not (h & set(d.photo_ids("train"))) for h, d in zip(held, folds))
    assert max(map(len, held)) - min(map(len, held)) <= 1


def test_split_fold_refuses_a_fold_outside_the_range():
    with pytest.raises(ValueError, match="fold must be in"):
        split_fold(["a", "b", "c"], 3, 3)


def test_a_card_records_the_carve_and_a_different_carve_is_refused():
    split = DataSplit(DATA, holdout_fraction=0.2)
    dataset = split.open()
    card = {"split": split.record(dataset)}
    assert card["split"]["counts"]["holdout"]["photos"] == len(dataset.photo_ids("holdout")) > 0
    split.check_card(card)  # same carve: accepted
    with pytest.raises(SplitMismatchError, match=r"holdout_fraction 0.2 \(here 0.0\)"):
        DataSplit(DATA).check_card(card)
    with pytest.raises(SplitMismatchError, match="split_seed"):
        DataSplit(DATA, holdout_fraction=0.2, split_seed=1).check_card(card)
    with pytest.raises(SplitMismatchError, match="trained on data"):
        DataSplit("procedural:photos=80", holdout_fraction=0.2).check_card(card)


def test_a_card_without_a_split_record_cannot_be_vouched_for():
    with pytest.raises(SplitMismatchError, match="no 'split' record"):
        DataSplit(DATA).check_card({"config": {"holdout_fraction": 0.0}})


@pytest.mark.slow
def test_pretraining_sketches_with_the_datas_own_seed_are_refused():
    # The old default: sketches of photos 0..299 of seed 1, while `--seed 1` made the data seed 1 too.
    dataset = open_dataset("procedural:photos=600,sketches=1", seed=1)
    leaking = open_dataset("procedural:photos=300,sketches=1,seed=1").sketches("train")
    with pytest.raises(ValueError, match="photos of the evaluation splits"):
        check_disjoint(leaking, dataset, "pre-training")


@pytest.mark.slow
def test_a_procedural_pretraining_spec_without_a_seed_gets_one_apart_from_the_data():
    for data_seed in (0, 1, 7):
        dataset = open_dataset("procedural:photos=300,sketches=1", seed=data_seed, holdout_fraction=0.2)
        spec = pretrain_spec("procedural:photos=300,sketches=1", dataset, data_seed)
        assert spec.endswith(f"seed={data_seed + 1000}")
        check_disjoint(open_dataset(spec).sketches("train"), dataset, spec)  # no overlap: no error
    assert pretrain_spec("procedural:photos=30,seed=5", dataset, 0) == "procedural:photos=30,seed=5"  # explicit wins
    assert pretrain_spec("", dataset, 0) == ""


def test_the_optional_split_flags_are_the_data_splits_own_fields_and_docs():
    from dataclasses import fields

    from retrieval.cli import field_docs, parse_config
    from retrieval.data.splits import SPLIT_FIELDS, CardSplitFlags

    assert tuple(f.name for f in fields(CardSplitFlags)) == SPLIT_FIELDS
    docs = field_docs(CardSplitFlags)
    assert all(docs[name].startswith(field_docs(DataSplit)[name]) for name in SPLIT_FIELDS)
    given = parse_config(CardSplitFlags, ["--split-seed", "4", "--val-fraction", "0.2"])
    assert given.split_flags_given() == {"split_seed": 4, "val_fraction": 0.2}


def test_a_config_extending_the_split_gives_the_split_alone():
    from retrieval.train.config import Config

    cfg = Config(data=DATA, split_seed=2, seed=5, holdout_fraction=0.2)
    assert cfg.data_split == DataSplit(DATA, holdout_fraction=0.2, split_seed=2)
    assert type(cfg.data_split) is DataSplit and set(cfg.data_split.record(None)) == {*SPLIT_NAMES, "counts"}
    with pytest.raises(ValueError, match=r"holdout_fold 5 must be in \[0, 5\)"):
        DataSplit(DATA, holdout_folds=5, holdout_fold=5)


SPLIT_NAMES = ("data", "val_fraction", "holdout_fraction", "holdout_folds", "holdout_fold", "split_seed")


def test_a_split_adopts_a_cards_carve_where_its_fields_are_at_their_defaults():
    trained = DataSplit(DATA, val_fraction=0.2, holdout_fraction=0.3, split_seed=4)
    assert DataSplit().adopt(trained) == trained  # nothing chosen: the card's carve, data included
    assert DataSplit(DATA, split_seed=4).adopt(trained) == trained  # chosen and agreeing
    with pytest.raises(SplitMismatchError, match=r"holdout_fraction 0.3 \(here 0.5\)"):
        DataSplit(holdout_fraction=0.5).adopt(trained)
    with pytest.raises(SplitMismatchError, match="no 'split' record"):
        DataSplit().adopt(None)
