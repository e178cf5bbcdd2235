"""The procedural dataset: an endless, deterministic chair gallery with human-like sketches.

Photo ``i`` of seed ``s`` depends only on ``(s, i)`` (``np.random.default_rng([s, i, ...])``), so a
gallery of a million photos costs nothing until a photo is asked for, and photo #999,999 is as cheap
as #0. Ids carry the generator version: ``proc-v<VERSION>-s<seed>-<index:06d>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from retrieval.data.dataset_protocol import SketchRecord, split_validation
from retrieval.data.procedural.drawing import draw_sketch
from retrieval.data.procedural.params import VERSION, ChairParams, sample_params
from retrieval.data.procedural.photo import render_photo
from retrieval.data.procedural.scene import Scene, scene_for
from retrieval.data.sketch import Sketch
from retrieval.types import RGBImage

_TEST_SALT = 7919  # keeps the test draw independent of the per-photo streams [seed, index, ...]


def photo_id_of(seed: int, index: int) -> str:
    return f"proc-v{VERSION}-s{seed}-{index:06d}"


def generate_photo(seed: int, index: int, size: int = 256) -> RGBImage:
    """Photo ``index`` of generator ``seed``: an RGB uint8 ``(size, size, 3)`` array."""
    return render_photo(scene_for(seed, index, size), np.random.default_rng([seed, index, 0, 1]))


def generate_sketch(seed: int, index: int, drawer: int, scene: Scene | None = None) -> Sketch:
    """Sketch number ``drawer`` of photo ``index`` (each number is a different person)."""
    scene = scene or scene_for(seed, index)
    meta = {"version": VERSION, "photo_id": photo_id_of(seed, index), "drawer_index": drawer}
    return draw_sketch(scene, np.random.default_rng([seed, index, 1, drawer]), meta)


class ProceduralDataset:
    """Procedural chairs and stools implementing ``retrieval.data.datasets.RetrievalDataset``.

    Keys are ``'/train/<photo_id>_<n>'`` and ``'/test/<photo_id>_<n>'`` like QMUL; ``val`` is carved
    from the train photos with :func:`retrieval.data.datasets.split_validation` (its records keep their
    ``/train/`` keys). Photos render on demand; each split's sketches are generated once and cached.

    Args:
        num_photos: gallery size (any size: nothing is stored).
        sketches_per_photo: sketches (different drawers) per photo.
        seed: generator seed; different seeds give different galleries.
        test_fraction: share of photos in ``test`` (drawn with the seed).
        val_fraction: share of the remaining train photos moved to ``val``.
        photo_size: photo side in pixels.
    """

    def __init__(
        self,
        num_photos: int = 2000,
        sketches_per_photo: int = 3,
        seed: int = 0,
        test_fraction: float = 0.1,
        val_fraction: float = 0.1,
        photo_size: int = 256,
    ) -> None:
        if num_photos < 1 or sketches_per_photo < 1:
            raise ValueError(
                f"need num_photos >= 1 and sketches_per_photo >= 1, got {num_photos}, {sketches_per_photo}"
            )
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
        self.num_photos, self.sketches_per_photo, self.seed = int(num_photos), int(sketches_per_photo), int(seed)
        self.photo_size = int(photo_size)
        self.name = f"Procedural-v{VERSION}-s{seed}"
        n_test = min(round(test_fraction * num_photos), num_photos - 1)
        test_index = np.sort(np.random.default_rng([seed, _TEST_SALT]).permutation(num_photos)[:n_test])
        is_test = np.zeros(num_photos, dtype=bool)
        is_test[test_index] = True
        train_ids, val_ids = split_validation(self._ids(np.flatnonzero(~is_test)), val_fraction, seed)
        self._photos = {"train": train_ids, "val": val_ids}
        if n_test:
            self._photos["test"] = self._ids(test_index)
        self._records: dict[str, list[SketchRecord]] = {}
        self.scene = lru_cache(maxsize=64)(self._scene)  # sketches of one photo share its projection

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}: {len(self._photos[s])} photos" for s in self.splits())
        return (
            f"ProceduralDataset(version={VERSION}, seed={self.seed}, {counts}, {self.sketches_per_photo} sketches each)"
        )

    def __getstate__(self) -> dict:
        # The scene cache is a per-process convenience (and not picklable): DataLoader workers rebuild it.
        return {k: v for k, v in self.__dict__.items() if k != "scene"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.scene = lru_cache(maxsize=64)(self._scene)

    def _ids(self, indices: Iterable[int]) -> list[str]:
        return [photo_id_of(self.seed, int(i)) for i in indices]

    def index_of(self, photo_id: str) -> int:
        """The generator index of a photo id of this dataset."""
        prefix = photo_id_of(self.seed, 0)[:-6]
        if not photo_id.startswith(prefix) or not photo_id[len(prefix) :].isdigit():
            raise KeyError(f"{photo_id!r} is not a photo of {self.name} (ids look like {photo_id_of(self.seed, 0)!r})")
        index = int(photo_id[len(prefix) :])
        if index >= self.num_photos:
            raise KeyError(f"{photo_id!r} is beyond this dataset's {self.num_photos} photos")
        return index

    def _scene(self, photo_id: str) -> Scene:
        return scene_for(self.seed, self.index_of(photo_id), self.photo_size)

    # --- RetrievalDataset ----------------------------------------------------------------------
    def splits(self) -> list[str]:
        return list(self._photos)

    def photo_ids(self, split: str) -> list[str]:
        if split not in self._photos:
            raise KeyError(f"{self.name} has no split {split!r}; available: {self.splits()}")
        return list(self._photos[split])

    def params(self, photo_id: str) -> ChairParams:
        return sample_params(self.seed, self.index_of(photo_id))

    def load_photo(self, photo_id: str) -> RGBImage:
        index = self.index_of(photo_id)
        return render_photo(self.scene(photo_id), np.random.default_rng([self.seed, index, 0, 1]))

    def sketch(self, photo_id: str, n: int) -> Sketch:
        """Sketch ``n`` (0-based drawer) of a photo, generated on demand."""
        return generate_sketch(self.seed, self.index_of(photo_id), n, self.scene(photo_id))

    def sketches(self, split: str) -> list[SketchRecord]:
        if split not in self._records:
            file_split = "test" if split == "test" else "train"
            records = []
            for pid in tqdm(self.photo_ids(split), desc=f"{self.name} {split} sketches", disable=None, leave=False):
                for n in range(self.sketches_per_photo):
                    key = f"/{file_split}/{pid}_{n}"
                    sketch = self.sketch(pid, n)
                    sketch = dataclasses.replace(sketch, meta={**sketch.meta, "key": key, "split": split})
                    records.append(SketchRecord(key, split, pid, sketch))
            self._records[split] = sorted(records, key=lambda r: r.key)
        return list(self._records[split])


def export(dataset: ProceduralDataset, folder: str | Path, name: str = "Procedural") -> Path:
    """Write ``dataset`` in the QMUL layout, pickle-free, readable by ``retrieval.data.datasets.open_dataset``.

    Writes ``<folder>/<name>_Coordinate.npz`` (key -> ``(n, 4)`` x, y, pen, t_ms; pen = 1 on each
    stroke's last point) and ``<folder>/photo/<photo_id>.png``. Returns the npz path.
    """
    from retrieval.data.formats.qmul import write_qmul_npz

    folder = Path(folder)
    (folder / "photo").mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Sketch] = {}
    for split in dataset.splits():
        for pid in tqdm(dataset.photo_ids(split), desc=f"export {split}", disable=None, leave=False):
            photo = dataset.load_photo(pid)
            cv2.imwrite(str(folder / "photo" / f"{pid}.png"), photo[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 3])
        arrays.update((r.key, r.sketch) for r in dataset.sketches(split))
    return write_qmul_npz(folder / f"{name}_Coordinate.npz", arrays)
