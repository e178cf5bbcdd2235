"""Retrieval datasets: sketches paired with photos, split by photo, behind one small interface.

A dataset is opened from a spec string (``open_dataset``): the procedural dataset by default, or a
folder in the QMUL FG-SBIR layout (``<Name>_Coordinate`` pickle or ``<Name>_Coordinate.npz`` plus
``photo/<photo_id>.png|jpg``). Splits come from the key prefix ``/<split>/``; ``val`` is carved out
of the train photos by photo, so no validation photo is ever trained on. An optional second carve,
``holdout`` (``open_dataset(..., holdout_fraction=f)``, off by default), takes further train photos
that neither training nor model selection may see: the split on which heads are compared.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from pathlib import Path

from retrieval.data.dataset_protocol import RetrievalDataset, SketchRecord, split_fold, split_validation
from retrieval.data.formats.qmul import read_qmul
from retrieval.data.images import IMAGE_SUFFIXES, read_rgb
from retrieval.types import RGBImage

COORDINATE_SUFFIX = "_Coordinate"
FILE_SPLITS = ("train", "test")  # the split prefixes QMUL releases use
HOLDOUT = "holdout"  # the optional second carve of train photos (see HoldoutDataset)
PROCEDURAL_ALIASES = {"photos": "num_photos", "sketches": "sketches_per_photo"}


def find_coordinate_file(root: Path) -> Path:
    """The one ``<Name>_Coordinate`` (pickle) or ``<Name>_Coordinate.npz`` in ``root``; npz preferred."""
    npz = sorted(root.glob(f"*{COORDINATE_SUFFIX}.npz"))
    pickles = sorted(p for p in root.glob(f"*{COORDINATE_SUFFIX}") if p.is_file())
    found = npz + [p for p in pickles if p.with_name(p.name + ".npz") not in npz]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
        raise FileNotFoundError(
            f"{root}: found {what} coordinate files; a QMUL-layout folder holds exactly one "
            f"'<Name>{COORDINATE_SUFFIX}' pickle or '<Name>{COORDINATE_SUFFIX}.npz' next to 'photo/'"
        )
    return found[0]


class QMULFolderDataset:
    """A folder in the QMUL FG-SBIR layout (Chair-V2, Shoe-V2, or a procedural export).

    Sketches whose photo file is missing are skipped (one warning with the count); photos without
    sketches belong to no split.

    Args:
        root: folder with ``<Name>_Coordinate`` or ``<Name>_Coordinate.npz`` and ``photo/``.
        val_fraction: share of train photos moved to ``val`` (see :func:`split_validation`).
        seed: seed of the validation split.
    """

    def __init__(self, root: str | Path, val_fraction: float = 0.1, seed: int = 0) -> None:
        self.root = Path(root)
        self.coordinate_file = find_coordinate_file(self.root)
        self.name = self.coordinate_file.name.split(COORDINATE_SUFFIX)[0]
        photo_dir = self.root / "photo"
        if not photo_dir.is_dir():
            raise FileNotFoundError(f"{self.root}: no 'photo/' folder; put the photos at photo/<photo_id>.png or .jpg")
        self._photo_files: dict[str, Path] = {}
        for suffix in reversed(IMAGE_SUFFIXES):  # later (preferred) suffixes overwrite earlier ones
            for path in photo_dir.iterdir():
                if path.suffix.lower() == suffix:
                    self._photo_files[path.stem] = path

        by_split: dict[str, list[SketchRecord]] = {split: [] for split in FILE_SPLITS}
        skipped = 0
        for key, sketch in read_qmul(self.coordinate_file).items():
            split, photo_id = sketch.meta["split"], sketch.meta["photo_id"]
            if split not in by_split:
                raise ValueError(
                    f"{self.coordinate_file}: key {key!r} has split {split!r}; expected one of {FILE_SPLITS} "
                    "('val' is carved from train by the loader, not stored)"
                )
            if photo_id not in self._photo_files:
                skipped += 1
                continue
            by_split[split].append(SketchRecord(key, split, photo_id, sketch))
        if skipped:
            warnings.warn(
                f"{self.root}: skipped {skipped} sketches whose photo is missing from photo/", UserWarning, stacklevel=2
            )

        train_ids, val_ids = split_validation({r.photo_id for r in by_split["train"]}, val_fraction, seed)
        val_set = set(val_ids)
        self._photos = {"train": train_ids, "val": val_ids}
        self._sketches = {
            "train": [r for r in by_split["train"] if r.photo_id not in val_set],
            "val": [_moved_to(r, "val") for r in by_split["train"] if r.photo_id in val_set],
        }
        if by_split["test"]:
            self._photos["test"] = sorted({r.photo_id for r in by_split["test"]})
            self._sketches["test"] = by_split["test"]

    def __repr__(self) -> str:
        counts = ", ".join(
            f"{s}: {len(self._sketches[s])} sketches/{len(self._photos[s])} photos" for s in self.splits()
        )
        return f"QMULFolderDataset({str(self.root)!r}, name={self.name!r}, {counts})"

    def splits(self) -> list[str]:
        return list(self._photos)

    def _check_split(self, split: str) -> None:
        if split not in self._photos:
            raise KeyError(f"{self.name} has no split {split!r}; available: {self.splits()}")

    def photo_ids(self, split: str) -> list[str]:
        self._check_split(split)
        return list(self._photos[split])

    def sketches(self, split: str) -> list[SketchRecord]:
        self._check_split(split)
        return list(self._sketches[split])

    def photo_path(self, photo_id: str) -> Path:
        try:
            return self._photo_files[photo_id]
        except KeyError:
            raise KeyError(f"no photo {photo_id!r} in {self.root / 'photo'} (looked for {IMAGE_SUFFIXES})") from None

    def load_photo(self, photo_id: str) -> RGBImage:
        return read_rgb(self.photo_path(photo_id))


def _moved_to(record: SketchRecord, split: str) -> SketchRecord:
    sketch = dataclasses.replace(record.sketch, meta={**record.sketch.meta, "split": split})
    return dataclasses.replace(record, split=split, sketch=sketch)


def _parse_value(text: str) -> int | float | bool | str:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_procedural_spec(options: str) -> dict[str, int | float | bool | str]:
    """``"photos=2000,seed=0,sketches=3"`` -> ``{"num_photos": 2000, "seed": 0, "sketches_per_photo": 3}``."""
    kwargs: dict[str, int | float | bool | str] = {}
    for item in filter(None, (part.strip() for part in options.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"procedural option {item!r} must be key=value, e.g. 'procedural:photos=2000,seed=0'")
        kwargs[PROCEDURAL_ALIASES.get(key.strip(), key.strip())] = _parse_value(value.strip())
    return kwargs


class HoldoutDataset:
    """A dataset whose train photos lose a seeded share to a ``holdout`` split (disjoint from ``val``).

    ``holdout`` is for comparing models that were trained on ``train`` and selected on ``val``: a
    number measured there selected nothing. Photos are drawn with :func:`split_validation` under
    a salted seed, so the carve is independent of the val carve and of the input order. Records
    moved to ``holdout`` keep their keys (``/train/...``) with ``split="holdout"``.

    Args:
        base: any ``RetrievalDataset`` with a ``train`` split.
        fraction: share of ``base``'s train photos (those left after the val carve) moved out.
        seed: seed of the carve (the same seed as the val carve is fine: the salt differs).
        fold: ``(i, k)``: instead of a fraction, the holdout is fold ``i`` of ``k`` seeded folds of
            the train photos (cross-validation: the ``k`` folds of one seed partition them).
    """

    def __init__(
        self, base: RetrievalDataset, fraction: float, seed: int = 0, fold: tuple[int, int] | None = None
    ) -> None:
        if HOLDOUT in base.splits():
            raise ValueError(f"{base.name} already has a {HOLDOUT!r} split")
        self.base = base
        self.name = base.name
        if fold is not None:
            train_ids, holdout_ids = split_fold(base.photo_ids("train"), *fold, seed=f"{HOLDOUT}-folds-{seed}")
        else:
            if not 0.0 < fraction < 1.0:
                raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}; use 0 for no holdout split")
            train_ids, holdout_ids = split_validation(base.photo_ids("train"), fraction, f"{HOLDOUT}-{seed}")
        self._photos = {"train": train_ids, HOLDOUT: holdout_ids}
        moved = set(holdout_ids)
        records = base.sketches("train")
        self._sketches = {
            "train": [r for r in records if r.photo_id not in moved],
            HOLDOUT: [_moved_to(r, HOLDOUT) for r in records if r.photo_id in moved],
        }

    def __repr__(self) -> str:
        return f"HoldoutDataset({self.base!r}, train {len(self._photos['train'])} / {HOLDOUT} {len(self._photos[HOLDOUT])} photos)"

    def splits(self) -> list[str]:
        return [*self.base.splits(), HOLDOUT]

    def photo_ids(self, split: str) -> list[str]:
        return list(self._photos[split]) if split in self._photos else self.base.photo_ids(split)

    def sketches(self, split: str) -> list[SketchRecord]:
        return list(self._sketches[split]) if split in self._sketches else self.base.sketches(split)

    def load_photo(self, photo_id: str) -> RGBImage:
        return self.base.load_photo(photo_id)


def open_dataset(
    spec: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    holdout_fraction: float = 0.0,
    holdout_fold: tuple[int, int] | None = None,
) -> RetrievalDataset:
    """Open a dataset from a spec.

    Args:
        spec: ``None`` or ``"procedural"`` (the default procedural dataset), ``"procedural:photos=2000,
            seed=0,sketches=3"`` (short keys ``photos``/``sketches`` mean ``num_photos``/
            ``sketches_per_photo``; other keys go to ``ProceduralDataset`` as they are), or a folder
            in the QMUL layout.
        val_fraction: share of train photos carved out as ``val``.
        seed: seed of the validation split (and of the procedural dataset unless the spec sets one).
        holdout_fraction: share of the remaining train photos moved to a ``holdout`` split that no
            training or selection sees (:class:`HoldoutDataset`); 0 (default) = no such split.
        holdout_fold: ``(i, k)``: the holdout split is fold ``i`` of ``k`` instead (cross-validation).
    """
    dataset = _open(spec, val_fraction, seed)
    if holdout_fold is not None:
        return HoldoutDataset(dataset, 0.0, seed, fold=holdout_fold)
    return HoldoutDataset(dataset, holdout_fraction, seed) if holdout_fraction > 0 else dataset


def _open(spec: str | Path | None, val_fraction: float, seed: int) -> RetrievalDataset:
    if spec is None:
        spec = "procedural"
    if isinstance(spec, str) and spec.split(":", 1)[0] == "procedural":
        from retrieval.data.procedural import ProceduralDataset  # lazy: heavy, and optional for QMUL users

        kwargs = {"seed": seed, **parse_procedural_spec(spec.partition(":")[2])}
        if "val_fraction" in inspect.signature(ProceduralDataset).parameters:
            kwargs.setdefault("val_fraction", val_fraction)
        return ProceduralDataset(**kwargs)
    path = Path(spec)
    if path.is_dir():
        return QMULFolderDataset(path, val_fraction=val_fraction, seed=seed)
    raise ValueError(
        f"unknown dataset {str(spec)!r}: use 'procedural', 'procedural:photos=2000,seed=0,sketches=3', or an "
        f"existing folder holding '<Name>{COORDINATE_SUFFIX}' (or .npz) and 'photo/'"
    )
