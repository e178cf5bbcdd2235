"""Datasets: validation split, the QMUL folder layout (with and without a test split), open_dataset."""

from __future__ import annotations

import pickle
import sys
import types
import warnings

import numpy as np
import pytest
from PIL import Image

from retrieval.data.dataset_protocol import SketchRecord, split_validation
from retrieval.data.datasets import QMULFolderDataset, open_dataset, parse_procedural_spec
from retrieval.data.formats import write_qmul_npz
from tests.dataset_contract import assert_retrieval_dataset

SKETCH = np.array([[30.0, 40, 0], [50, 60, 1], [70, 80, 0], [90, 100, 1]])


def _make_folder(tmp_path, with_test=True, npz=False, missing_photo=False):
    """A tiny QMUL-layout folder: 10 train photos x 2 sketches, 3 test photos, photos of every kind."""
    root = tmp_path / "qmul"
    (root / "photo").mkdir(parents=True)
    data = {f"/train/p{i:02d}_v1_{n}": SKETCH + [i, i, 0] for i in range(10) for n in (1, 2)}
    if with_test:
        data |= {f"/test/t{i}_{n}": SKETCH for i in range(3) for n in (1, 2, 3)}
    if missing_photo:
        data |= {"/train/nophoto_1": SKETCH, "/train/nophoto_2": SKETCH, "/test/gone_1": SKETCH}
    if npz:
        write_qmul_npz(root / "Mini_Coordinate.npz", data)
    else:
        (root / "Mini_Coordinate").write_bytes(pickle.dumps(data, protocol=3))
    photo_ids = sorted({key.split("/")[2].rsplit("_", 1)[0] for key in data} - {"nophoto", "gone"})
    for i, pid in enumerate(photo_ids):
        color = (i * 20, 100, 200)
        if i % 3 == 0:
            Image.new("RGB", (8, 6), color).save(root / "photo" / f"{pid}.jpg")
        elif i % 3 == 1:
            Image.new("L", (8, 6), 128).save(root / "photo" / f"{pid}.png")
        else:
            Image.new("RGBA", (8, 6), (*color, 0)).save(root / "photo" / f"{pid}.png")
    Image.new("RGB", (4, 4)).save(root / "photo" / "unused.png")  # a photo without sketches
    return root


def test_split_validation_deterministic_and_order_free():
    ids = [f"photo{i}" for i in range(300)]
    train, val = split_validation(ids, 0.1, seed=0)
    assert len(val) == 30 and len(train) == 270 and not set(train) & set(val)
    assert train == sorted(train) and val == sorted(val)
    assert split_validation(reversed(ids + ids), 0.1, seed=0) == (train, val)
    assert split_validation(ids, 0.1, seed=1)[1] != val
    assert split_validation(ids, 0.0) == (sorted(ids), [])
    tiny_train, tiny_val = split_validation(["a", "b"], 0.01)  # rounds to 0, but asked for some validation
    assert len(tiny_train) == 1 and len(tiny_val) == 1
    assert split_validation(["only"], 0.5) == (["only"], [])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        split_validation(ids, 1.0)


@pytest.mark.parametrize("npz", [False, True])
def test_folder_with_train_and_test(tmp_path, npz):
    ds = QMULFolderDataset(_make_folder(tmp_path, npz=npz), val_fraction=0.2, seed=0)
    assert_retrieval_dataset(ds)
    assert ds.name == "Mini" and ds.splits() == ["train", "val", "test"]
    train, val, test = (ds.photo_ids(s) for s in ds.splits())
    assert len(train) == 8 and len(val) == 2 and test == ["t0", "t1", "t2"]
    assert (train, val) == split_validation([f"p{i:02d}_v1" for i in range(10)], 0.2, 0)
    for split in ds.splits():
        records = ds.sketches(split)
        assert [r.key for r in records] == sorted(r.key for r in records)
        assert all(isinstance(r, SketchRecord) and r.split == split for r in records)
        assert {r.photo_id for r in records} == set(ds.photo_ids(split))
        assert all(r.sketch.meta["split"] == split and r.sketch.num_strokes == 2 for r in records)
    assert len(ds.sketches("train")) == 16 and len(ds.sketches("val")) == 4 and len(ds.sketches("test")) == 9
    assert ds.sketches("test")[0].key == "/test/t0_1" and ds.sketches("test")[0].photo_id == "t0"
    with pytest.raises(KeyError, match="no split 'valid'"):
        ds.sketches("valid")


def test_folder_without_test_split(tmp_path):
    ds = open_dataset(_make_folder(tmp_path, with_test=False))
    assert ds.splits() == ["train", "val"]
    assert len(ds.photo_ids("train")) == 9 and len(ds.photo_ids("val")) == 1


def test_load_photo_converts_to_rgb(tmp_path):
    ds = QMULFolderDataset(_make_folder(tmp_path))
    for pid in ds.photo_ids("train") + ds.photo_ids("val") + ds.photo_ids("test"):
        img = ds.load_photo(pid)
        assert img.shape == (6, 8, 3) and img.dtype == np.uint8
    gray = ds.load_photo("p01_v1")  # saved as mode L, value 128
    assert (gray == 128).all()
    transparent = ds.load_photo("p02_v1")  # fully transparent RGBA -> white paper
    assert (transparent == 255).all()
    with pytest.raises(KeyError, match="no photo 'nope'"):
        ds.load_photo("nope")


def test_broken_photo_names_the_file(tmp_path):
    root = _make_folder(tmp_path)
    (root / "photo" / "p01_v1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    ds = QMULFolderDataset(root)
    with pytest.raises(ValueError, match=r"cannot read photo .*p01_v1\.png"):
        ds.load_photo("p01_v1")


def test_missing_photos_skip_sketches_with_one_warning(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = QMULFolderDataset(_make_folder(tmp_path, missing_photo=True))
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1 and "skipped 3 sketches" in messages[0]
    all_ids = {r.photo_id for s in ds.splits() for r in ds.sketches(s)}
    assert "nophoto" not in all_ids and "gone" not in all_ids


def test_folder_errors_are_clear(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="found no coordinate files"):
        QMULFolderDataset(tmp_path / "empty")
    root = _make_folder(tmp_path)
    (root / "Other_Coordinate").write_bytes(pickle.dumps({}))
    with pytest.raises(FileNotFoundError, match="found 2"):
        QMULFolderDataset(root)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "X_Coordinate").write_bytes(pickle.dumps({"/valid/a_1": SKETCH}))
    (bad / "photo").mkdir()
    with pytest.raises(ValueError, match="split 'valid'"):
        QMULFolderDataset(bad)


def test_npz_preferred_over_pickle_of_same_name(tmp_path):
    root = _make_folder(tmp_path, with_test=False)
    write_qmul_npz(root / "Mini_Coordinate.npz", {"/train/p00_v1_1": SKETCH})
    ds = QMULFolderDataset(root, val_fraction=0.0)
    assert [r.key for r in ds.sketches("train")] == ["/train/p00_v1_1"]


def test_parse_procedural_spec():
    assert parse_procedural_spec("photos=2000,seed=0,sketches=3") == {
        "num_photos": 2000,
        "seed": 0,
        "sketches_per_photo": 3,
    }
    assert parse_procedural_spec("") == {}
    assert parse_procedural_spec("jitter=0.5, name=chairs,flip=true") == {"jitter": 0.5, "name": "chairs", "flip": True}
    with pytest.raises(ValueError, match="key=value"):
        parse_procedural_spec("photos")


def test_open_dataset_procedural_kwargs(monkeypatch):
    """The spec reaches ProceduralDataset with long names (a recording stand-in, the real one below)."""
    calls = []

    class Recorder:
        def __init__(self, num_photos=10, sketches_per_photo=1, seed=0, val_fraction=0.1):
            calls.append(
                dict(num_photos=num_photos, sketches_per_photo=sketches_per_photo, seed=seed, val=val_fraction)
            )

    monkeypatch.setitem(sys.modules, "retrieval.data.procedural", types.SimpleNamespace(ProceduralDataset=Recorder))
    open_dataset(None, seed=5)
    open_dataset("procedural:photos=20,sketches=3,seed=1", val_fraction=0.2)
    assert calls == [
        dict(num_photos=10, sketches_per_photo=1, seed=5, val=0.1),
        dict(num_photos=20, sketches_per_photo=3, seed=1, val=0.2),
    ]


def test_open_dataset_real_procedural():
    ds = open_dataset("procedural:photos=12,sketches=1")
    assert_retrieval_dataset(ds)
    pid = ds.photo_ids("train")[0]
    assert ds.load_photo(pid).dtype == np.uint8 and ds.load_photo(pid).shape[2] == 3


def test_open_dataset_rejects_unknown_specs(tmp_path):
    for spec in ("qmul", tmp_path / "does-not-exist", "imagenet:photos=3"):
        with pytest.raises(ValueError, match="unknown dataset"):
            open_dataset(spec)


def test_real_chairv2_train(shared_data):
    ds = open_dataset(shared_data("chairv2-train"))
    assert ds.name == "ChairV2" and ds.splits() == ["train", "val"]
    photos = ds.photo_ids("train") + ds.photo_ids("val")
    assert len(photos) == 300 and len(ds.photo_ids("val")) == 30
    assert len(ds.sketches("train")) + len(ds.sketches("val")) == 952
    assert open_dataset(shared_data("chairv2-train")).photo_ids("val") == ds.photo_ids("val")
    img = ds.load_photo(ds.photo_ids("val")[0])
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    record = ds.sketches("val")[0]
    assert record.key.startswith("/train/") and record.split == "val" and record.photo_id in ds.photo_ids("val")


def test_real_shoev2_photos_are_readable(shared_data):
    folder = shared_data("shoev2-photos")
    first = sorted(folder.glob("*.jpg"))[0]
    from retrieval.data.images import read_rgb

    img = read_rgb(first)
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8


def test_procedural_export_reopens_as_the_same_qmul_dataset(tmp_path):
    from retrieval.data.procedural import ProceduralDataset, export

    source = ProceduralDataset(num_photos=12, sketches_per_photo=2, seed=3)
    export(source, tmp_path / "proc")
    reopened = open_dataset(tmp_path / "proc", seed=3)
    assert reopened.splits() == source.splits()
    for split in source.splits():
        assert reopened.photo_ids(split) == source.photo_ids(split)
        got, want = reopened.sketches(split), source.sketches(split)
        assert [r.key for r in got] == [r.key for r in want]
        np.testing.assert_allclose(got[0].sketch.points(), want[0].sketch.points())  # timing kept via (n, 4)
    pid = source.photo_ids("train")[0]
    np.testing.assert_array_equal(reopened.load_photo(pid), source.load_photo(pid))


def test_holdout_carve_is_disjoint_seeded_and_off_by_default(tmp_path):
    root = _make_folder(tmp_path)
    plain = open_dataset(str(root), val_fraction=0.2, seed=0)
    assert "holdout" not in plain.splits()
    ds = open_dataset(str(root), val_fraction=0.2, seed=0, holdout_fraction=0.25)
    assert ds.splits() == ["train", "val", "test", "holdout"]
    train, val, holdout = (set(ds.photo_ids(s)) for s in ("train", "val", "holdout"))
    assert len(holdout) == 2 and not holdout & train and not holdout & val
    assert train | holdout == set(plain.photo_ids("train")) and val == set(plain.photo_ids("val"))
    assert ds.photo_ids("test") == plain.photo_ids("test")
    assert {r.photo_id for r in ds.sketches("holdout")} == holdout
    assert all(r.split == "holdout" for r in ds.sketches("holdout"))
    assert {r.photo_id for r in ds.sketches("train")} == train  # training never sees a holdout sketch
    again = open_dataset(str(root), val_fraction=0.2, seed=0, holdout_fraction=0.25)
    assert again.photo_ids("holdout") == ds.photo_ids("holdout")
    other = open_dataset(str(root), val_fraction=0.2, seed=1, holdout_fraction=0.25)
    assert set(other.photo_ids("holdout")).isdisjoint(other.photo_ids("val"))
    assert ds.load_photo(sorted(holdout)[0]).shape[2] == 3


def test_holdout_carve_works_on_the_procedural_dataset():
    plain = open_dataset("procedural:photos=40,sketches=1", val_fraction=0.2)
    ds = open_dataset("procedural:photos=40,sketches=1", val_fraction=0.2, holdout_fraction=0.3)
    holdout = set(ds.photo_ids("holdout"))
    assert len(holdout) == round(0.3 * len(plain.photo_ids("train")))
    assert holdout <= set(plain.photo_ids("train")) and not holdout & set(ds.photo_ids("train"))
    with pytest.raises(ValueError, match="holdout fraction"):
        open_dataset("procedural:photos=40", holdout_fraction=1.0)
