"""A tiny in-memory ``RetrievalDataset`` for fast tests and examples of the RL stage.

Each photo is a random polyline figure drawn in colour; its sketches are jittered copies of the
same strokes, so sketch and photo really correspond (a small model can learn the pairing) while
building the whole dataset takes milliseconds. For real experiments use
``retrieval.data.datasets.open_dataset`` (procedural or QMUL).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from retrieval.data.dataset_protocol import SketchRecord, split_validation
from retrieval.data.sketch import Sketch


class ToyDataset:
    """``num_photos`` figures with ``sketches_per_photo`` sketches each; train/val by photo, optional test."""

    def __init__(
        self,
        num_photos: int = 12,
        sketches_per_photo: int = 2,
        *,
        test_photos: int = 0,
        strokes: int = 4,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.name = f"toy{num_photos}x{sketches_per_photo}s{seed}"
        ids = [f"fig{i:04d}" for i in range(num_photos + test_photos)]
        self._figures = {
            pid: [rng.uniform(30, 226, (int(rng.integers(3, 7)), 2)) for _ in range(strokes)] for pid in ids
        }
        self._colours = {pid: rng.integers(0, 200, 3) for pid in ids}
        records = {}
        for i, pid in enumerate(ids):
            split = "test" if i >= num_photos else "train"
            for n in range(sketches_per_photo):
                strokes_xyt = tuple(np.c_[s + rng.normal(0, 4, s.shape), np.zeros(len(s))] for s in self._figures[pid])
                key = f"/{split}/{pid}_{n + 1}"
                records[key] = SketchRecord(key, split, pid, Sketch(strokes_xyt, meta={"split": split}))
        train_ids, val_ids = split_validation(ids[:num_photos], 0.25, seed)
        self._photos = {"train": train_ids, "val": val_ids}
        if test_photos:
            self._photos["test"] = ids[num_photos:]
        split_of = {pid: s for s, pids in self._photos.items() for pid in pids}
        self._sketches: dict[str, list[SketchRecord]] = {s: [] for s in self._photos}
        for key in sorted(records):
            record = records[key]
            self._sketches[split_of[record.photo_id]].append(record)

    def splits(self) -> list[str]:
        return list(self._photos)

    def photo_ids(self, split: str) -> list[str]:
        return list(self._photos[split])

    def sketches(self, split: str) -> list[SketchRecord]:
        return list(self._sketches[split])

    def load_photo(self, photo_id: str) -> np.ndarray:
        img = np.full((256, 256, 3), 235, np.uint8)
        for stroke in self._figures[photo_id]:
            pts = np.round(stroke).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(img, [pts], False, [int(c) for c in self._colours[photo_id]], 6, cv2.LINE_AA)
        return img


def calibrated_encoder(dataset: ToyDataset, *, input_size: int = 64, embed_dim: int = 16, seed: int = 0) -> Any:
    """A small random ``Encoder`` whose batch-norm statistics are fitted to ``dataset``'s own images
    (``Encoder.calibrate_batchnorm``): distinct features without any training, enough for tests."""
    from retrieval.model.encoder import create_encoder

    encoder = create_encoder(input_size=input_size, embed_dim=embed_dim, seed=seed, calibrate=False)
    records = [r for split in dataset.splits() for r in dataset.sketches(split)]
    photos = [dataset.load_photo(p) for split in dataset.splits() for p in dataset.photo_ids(split)]
    encoder.calibrate_batchnorm([encoder.render(r.sketch) for r in records], photos)
    return encoder
