"""What :class:`~retrieval.data.dataset_protocol.RetrievalDataset` promises, checked on a real dataset.

``isinstance`` against the runtime-checkable Protocol only sees that the method names exist; the
tests of every dataset call :func:`assert_retrieval_dataset` instead, which calls the methods.
"""

from __future__ import annotations

import numpy as np

from retrieval.data.dataset_protocol import SketchRecord
from retrieval.data.sketch import Sketch


def assert_retrieval_dataset(ds) -> None:
    """Named; train and val first, test optional; each split's photo ids sorted, unique and its own;
    its sketches sorted by key, of that split and of its photos; photos as (H, W, 3) uint8 arrays."""
    assert isinstance(ds.name, str) and ds.name, "a dataset has a name"
    splits = ds.splits()
    assert splits in (["train", "val"], ["train", "val", "test"]), splits
    seen: set[str] = set()
    for split in splits:
        ids = ds.photo_ids(split)
        assert ids == sorted(set(ids)), f"{split}: photo ids are sorted and each appears once"
        assert seen.isdisjoint(ids), f"{split} shares photos with an earlier split"
        seen |= set(ids)
        records = ds.sketches(split)
        assert [r.key for r in records] == sorted(r.key for r in records), f"{split}: sketches sorted by key"
        for record in records:
            assert isinstance(record, SketchRecord) and isinstance(record.sketch, Sketch), record
            assert record.split == split and record.photo_id in ids, (split, record.key, record.photo_id)
    assert ds.photo_ids("train"), "a dataset has training photos"
    photo = ds.load_photo(ds.photo_ids("train")[0])
    assert isinstance(photo, np.ndarray) and photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3
