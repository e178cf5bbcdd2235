"""The procedural dataset: determinism, fine-grained distinctness, photo/sketch agreement, timing, export."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from retrieval.data.datasets import open_dataset
from retrieval.data.formats.quickdraw import timing_stats
from retrieval.data.procedural import (
    VERSION,
    ProceduralDataset,
    export,
    generate_photo,
    generate_sketch,
    photo_id_of,
    sample_params,
)
from retrieval.data.procedural.scene import scene_for
from tests.dataset_contract import assert_retrieval_dataset


@pytest.fixture(scope="module")
def dataset() -> ProceduralDataset:
    return ProceduralDataset(num_photos=40, sketches_per_photo=2, seed=3, test_fraction=0.2, val_fraction=0.2)


def test_same_seed_same_data_and_different_seeds_differ():
    np.testing.assert_array_equal(generate_photo(0, 7), generate_photo(0, 7))
    np.testing.assert_array_equal(generate_sketch(0, 7, 1).points(), generate_sketch(0, 7, 1).points())
    assert not np.array_equal(generate_photo(0, 7), generate_photo(1, 7))
    assert generate_sketch(0, 7, 0).num_points != generate_sketch(0, 7, 1).num_points or not np.array_equal(
        generate_sketch(0, 7, 0).points(), generate_sketch(0, 7, 1).points()
    )
    assert sample_params(0, 7) != sample_params(1, 7)


def test_instances_are_distinct_but_fine_grained():
    params = [sample_params(0, i) for i in range(2000)]
    assert len(set(params)) == 2000  # no duplicate parameter sets
    for field in ("family", "seat_shape", "leg_style", "stretchers", "back_fill", "arms", "slat_count"):
        assert len({getattr(p, field) for p in params}) >= 2, f"{field} never varies"
    # Fine-grained: many pairs share every categorical attribute and differ only in proportions.
    categorical = [tuple(v for v in dataclasses.astuple(p) if not isinstance(v, float)) for p in params]
    assert len(set(categorical)) < len(params)


def test_far_index_is_as_cheap_and_valid():
    photo = generate_photo(0, 999_999, size=128)
    assert photo.shape == (128, 128, 3) and photo.dtype == np.uint8
    assert photo_id_of(0, 999_999) == f"proc-v{VERSION}-s0-999999"


def test_view_with_a_fully_hidden_face_group_still_renders():
    # Instance 7135 of seed 0 has a group of faces (same vertex count) that all face away from the camera.
    assert generate_photo(0, 7135, size=64).shape == (64, 64, 3)
    assert generate_sketch(0, 7135, 0).num_points > 0


def test_photo_is_a_shaded_colour_image_not_a_line_drawing():
    photo = generate_photo(0, 11).astype(np.float64)
    assert photo.shape == (256, 256, 3)
    assert np.abs(photo[..., 0] - photo[..., 2]).max() > 20 or photo.std() > 20  # colour or shading present
    assert len(np.unique(photo.reshape(-1, 3)[::7], axis=0)) > 500  # texture and shading, not flat fills


def test_sketch_traces_the_photographed_chair():
    scene = scene_for(0, 5)
    sketch = generate_sketch(0, 5, 0, scene)
    mask = (scene.id_buffer > 0).astype(np.uint8)
    import cv2

    near = cv2.dilate(mask, np.ones((41, 41), np.uint8))  # allow the drawer's offset/scale jitter
    pts = np.round(sketch.points()[:, :2]).astype(int).clip(0, 255)
    assert near[pts[:, 1], pts[:, 0]].mean() > 0.9
    assert sketch.num_strokes >= 4 and sketch.meta["photo_id"] == photo_id_of(0, 5)


def test_timing_is_human_like():
    sketches = [generate_sketch(0, i, 0) for i in range(25)]
    stats = timing_stats(sketches)
    assert 250 <= stats["pen_up_gap_ms"]["p50"] <= 700  # Quick Draw: 439
    assert 100 <= stats["pen_up_gap_ms"]["p10"] <= 250  # 155
    assert 150 <= stats["stroke_duration_ms"]["p50"] <= 1000  # 584 (our strokes are shorter parts)
    for s in sketches:
        t = s.points()[:, 2]
        assert t[0] == 0 and np.all(np.diff(t) >= 0)
        starts = [st[0, 2] for st in s.strokes]
        ends = [st[-1, 2] for st in s.strokes]
        assert all(b > a for a, b in zip(ends[:-1], starts[1:]))  # a pen-up gap between strokes


def test_dataset_protocol_splits_and_keys(dataset):
    assert_retrieval_dataset(dataset)
    assert dataset.splits() == ["train", "val", "test"]
    ids = {s: dataset.photo_ids(s) for s in dataset.splits()}
    assert [len(ids[s]) for s in ("train", "val", "test")] == [26, 6, 8]
    assert all(v == sorted(v) for v in ids.values())
    assert not set(ids["train"]) & set(ids["val"]) and not set(ids["test"]) & (set(ids["train"]) | set(ids["val"]))
    for split in dataset.splits():
        records = dataset.sketches(split)
        assert len(records) == 2 * len(ids[split])
        assert [r.key for r in records] == sorted(r.key for r in records)
        for r in records:
            prefix = "/test/" if split == "test" else "/train/"
            assert r.key.startswith(prefix) and r.split == split
            assert r.key[len(prefix) :].rsplit("_", 1)[0] == r.photo_id and r.photo_id in ids[split]
    assert dataset.sketches("val")[0].sketch is dataset.sketches("val")[0].sketch  # cached
    assert dataset.load_photo(ids["val"][0]).shape == (256, 256, 3)
    with pytest.raises(KeyError, match="no split"):
        dataset.photo_ids("dev")
    with pytest.raises(KeyError, match="not a photo"):
        dataset.load_photo("chair_1")


def test_dataset_pickles_for_worker_processes(dataset):
    import pickle

    clone = pickle.loads(pickle.dumps(dataset))
    pid = dataset.photo_ids("test")[0]
    np.testing.assert_array_equal(clone.load_photo(pid), dataset.load_photo(pid))
    assert clone.photo_ids("val") == dataset.photo_ids("val")


def test_open_dataset_spec_builds_procedural():
    ds = open_dataset("procedural:photos=20,sketches=1,seed=5")
    assert isinstance(ds, ProceduralDataset) and ds.seed == 5 and ds.sketches_per_photo == 1
    assert sum(len(ds.photo_ids(s)) for s in ds.splits()) == 20


def test_export_reads_back_through_the_qmul_loader(dataset, tmp_path):
    npz = export(dataset, tmp_path)
    assert npz.name == "Procedural_Coordinate.npz" and len(list((tmp_path / "photo").glob("*.png"))) == 40
    back = open_dataset(tmp_path, val_fraction=0.2, seed=3)
    for split in dataset.splits():
        assert back.photo_ids(split) == dataset.photo_ids(split)
        for a, b in zip(back.sketches(split), dataset.sketches(split)):
            assert a.key == b.key and a.photo_id == b.photo_id
            assert a.sketch.num_strokes == b.sketch.num_strokes
            np.testing.assert_allclose(a.sketch.points(), b.sketch.points())
    pid = dataset.photo_ids("test")[0]
    np.testing.assert_array_equal(back.load_photo(pid), dataset.load_photo(pid))
