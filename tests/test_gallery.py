"""Galleries from photo folders and datasets: safety checks, caching, incremental updates."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from retrieval.data.images import MAX_PHOTO_SIDE, read_rgb, scan_photo_folder
from retrieval.model.encoder import Encoder, create_encoder
from retrieval.serving.gallery import (
    build_dataset_gallery,
    build_folder_gallery,
    open_gallery,
    open_photos,
    split_gallery_spec,
)


def write_image(path, seed: int, size=(40, 30)) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def write_gradient(path, size: tuple[int, int]) -> None:
    """A smooth image (fast to encode at any size, unlike noise) whose mean colour survives resampling."""
    width, height = size
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    Image.fromarray(np.stack([x, y, np.full_like(x, 128)], axis=2).astype(np.uint8)).save(path)


class CountingEncoder:
    """The real encoder, counting photos embedded (to see what the cache saved) and their shapes."""

    def __init__(self, encoder: Encoder) -> None:
        self.inner, self.meta, self.net, self.embedded, self.shapes = encoder, encoder.meta, encoder.net, 0, []

    def embed_photos(self, images):
        self.embedded += len(images)
        self.shapes += [image.shape for image in images]
        return self.inner.embed_photos(images)


@pytest.fixture()
def photo_folder(tmp_path):
    root = tmp_path / "photos"
    write_image(root / "a.png", 0)
    write_image(root / "sub" / "b.jpg", 1)
    write_image(root / "sub" / "deeper" / "c.webp", 2)
    (root / "notes.txt").write_text("not an image")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    outside = tmp_path / "secret.png"
    write_image(outside, 3)
    os.symlink(outside, root / "escape.png")
    return root


def test_scan_refuses_symlinks_leaving_the_folder(photo_folder):
    found, refused = scan_photo_folder(photo_folder)
    assert sorted(found) == ["a.png", "broken.png", "sub/b.jpg", "sub/deeper/c.webp"]
    assert len(refused) == 1 and "escape.png" in refused[0]
    assert all(p.is_relative_to(photo_folder.resolve()) for p in found.values())


def test_listing_a_folders_photos_decodes_none_and_reads_each_by_id(photo_folder):
    with pytest.warns(UserWarning, match="escape.png"):
        photos = open_photos(photo_folder)
    # broken.png is listed: nothing was decoded to find out (a cluster's index leaves it out, and a
    # front end listing the folder is refused with that count: retrieval/serving/serve_client.py)
    assert photos.ids == ("a.png", "broken.png", "sub/b.jpg", "sub/deeper/c.webp") and len(photos) == 4
    assert "sub/b.jpg" in photos and "escape.png" not in photos and len(photos.refused) == 1
    assert photos.load_photo("sub/b.jpg").shape == (30, 40, 3)
    with pytest.raises((OSError, ValueError)):
        photos.load_photo("broken.png")


def test_a_procedural_spec_lists_the_ids_its_gallery_indexes(encoder, tmp_path):
    spec = "procedural:photos=6,seed=3"
    photos = open_photos(spec)
    gallery = open_gallery(encoder, spec, tmp_path, progress=False)
    assert photos.name == gallery.source and sorted(photos.ids) == sorted(gallery.index.ids)
    assert gallery.photos.ids == tuple(gallery.index.ids) and gallery.photos.name == gallery.source


@pytest.mark.slow
def test_folder_gallery_skips_broken_and_embeds_the_rest(photo_folder, encoder):
    with pytest.warns(UserWarning) as record:
        gallery = build_folder_gallery(encoder, photo_folder, progress=False)
    messages = " ".join(str(w.message) for w in record)
    assert "broken.png" in messages and "escape.png" in messages
    assert sorted(gallery.index.ids) == ["a.png", "sub/b.jpg", "sub/deeper/c.webp"]
    assert gallery.paths["sub/b.jpg"] == (photo_folder / "sub" / "b.jpg").resolve()
    photo = gallery.load_photo("a.png")
    assert photo.shape == (30, 40, 3)
    own = encoder.embed_photos([photo])[0]
    # An untrained net maps noise photos almost onto one point, so compare vectors, not ranks.
    np.testing.assert_allclose(gallery.index.vectors[gallery.index.ids.index("a.png")], own, atol=1e-5)


def test_decompression_bomb_guard(tmp_path):
    write_image(tmp_path / "big.png", 0, size=(100, 100))
    with pytest.raises(ValueError, match="limit"):
        read_rgb(tmp_path / "big.png", max_pixels=5_000)
    assert read_rgb(tmp_path / "big.png", max_pixels=10_000).shape == (100, 100, 3)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_large_photos_are_downscaled_at_load_keeping_their_aspect(tmp_path, suffix):
    path = tmp_path / f"big{suffix}"
    write_gradient(path, (2048, 1536))
    photo = read_rgb(path)
    assert photo.shape == (MAX_PHOTO_SIDE * 3 // 4, MAX_PHOTO_SIDE, 3)
    np.testing.assert_allclose(photo.mean(axis=(0, 1)), [127.5, 127.5, 128], atol=3)
    assert read_rgb(path, max_side=None).shape == (1536, 2048, 3), "max_side=None keeps full resolution"


def test_a_large_jpeg_is_decoded_at_reduced_scale_not_full_size(tmp_path, monkeypatch):
    write_gradient(tmp_path / "phone.jpg", (4096, 3072))
    decoded, real_load = [], JpegImagePlugin.JpegImageFile.load

    def spy(img):
        decoded.append(img.size)  # the size the decoder will produce
        return real_load(img)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    assert read_rgb(tmp_path / "phone.jpg").shape == (768, 1024, 3)
    assert decoded and max(decoded) == (2048, 1536), "the DCT decodes at 1/2 scale, never the full 12.6 MP"


def test_a_gallery_embeds_big_photos_downscaled(tmp_path, encoder):
    (tmp_path / "photos").mkdir()
    write_gradient(tmp_path / "photos" / "huge.png", (3000, 1000))
    counting = CountingEncoder(encoder)
    build_folder_gallery(counting, tmp_path / "photos", cache_dir=None, progress=False)
    assert counting.shapes == [(341, MAX_PHOTO_SIDE, 3)], "a batch must never hold full-resolution photos"


@pytest.mark.slow
def test_cache_reuses_and_updates_incrementally(tmp_path, encoder):
    root, cache = tmp_path / "photos", tmp_path / "cache"
    for i in range(4):
        write_image(root / f"{i}.png", i)
    counting = CountingEncoder(encoder)
    first = build_folder_gallery(counting, root, cache, progress=False)
    assert counting.embedded == 4 and first.cache_folder.is_relative_to(cache)

    counting.embedded = 0
    again = build_folder_gallery(counting, root, cache, progress=False)
    assert counting.embedded == 0 and again.index.ids == first.index.ids
    np.testing.assert_array_equal(again.index.vectors, first.index.vectors)

    write_image(root / "4.png", 4)  # new photo: only it is embedded
    grown = build_folder_gallery(counting, root, cache, progress=False)
    assert counting.embedded == 1 and len(grown.index) == 5

    counting.embedded = 0
    (root / "0.png").unlink()  # removed photo leaves, modified photo is re-embedded
    stamp = (root / "1.png").stat().st_mtime_ns
    write_image(root / "1.png", 99, size=(20, 20))
    os.utime(root / "1.png", ns=(stamp + 10**9, stamp + 10**9))  # a later mtime even on a coarse-clock file system
    changed = build_folder_gallery(counting, root, cache, progress=False)
    assert counting.embedded == 1 and sorted(changed.index.ids) == ["1.png", "2.png", "3.png", "4.png"]
    new_vec = encoder.embed_photos([changed.load_photo("1.png")])[0]
    np.testing.assert_allclose(changed.index.vectors[changed.index.ids.index("1.png")], new_vec, atol=1e-5)

    # Another model never reads this model's cache.
    other = CountingEncoder(create_encoder(input_size=64, embed_dim=32, seed=1))
    build_folder_gallery(other, root, cache, progress=False)
    assert other.embedded == 4


class TinyDataset:
    """A two-split dataset of random photos (the RetrievalDataset protocol, photo side)."""

    name = "tiny"

    def __init__(self) -> None:
        self._ids = {"train": ["t0", "t1", "t2"], "val": ["v0", "v1"]}

    def splits(self):
        return list(self._ids)

    def photo_ids(self, split):
        return list(self._ids[split])

    def sketches(self, split):
        return []

    def load_photo(self, photo_id):
        seed = sum(map(ord, photo_id))
        return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def test_dataset_gallery_split_and_all(tmp_path, encoder):
    dataset = TinyDataset()
    val = build_dataset_gallery(encoder, dataset, "val", tmp_path, progress=False)
    assert val.index.ids == ["v0", "v1"] and val.load_photo("v1").shape == (32, 32, 3)
    everything = build_dataset_gallery(encoder, dataset, None, tmp_path, progress=False)
    assert everything.index.ids == ["t0", "t1", "t2", "v0", "v1"]
    with pytest.raises(KeyError, match="available"):
        build_dataset_gallery(encoder, dataset, "test", progress=False)


def test_split_gallery_spec(tmp_path):
    assert split_gallery_spec("procedural:photos=50@val") == ("procedural:photos=50", "val")
    assert split_gallery_spec("/data/chairs") == ("/data/chairs", None)
    odd = tmp_path / "photos@2x"
    odd.mkdir()
    assert split_gallery_spec(str(odd)) == (str(odd), None)


def test_open_gallery_on_chair_val(shared_data, tmp_path, encoder):
    root = shared_data("chairv2-train")
    gallery = open_gallery(encoder, f"{root}@val", tmp_path, progress=False)
    assert 20 <= len(gallery.index) <= 40
    assert gallery.paths[gallery.index.ids[0]].is_file()
    with pytest.raises(ValueError, match="plain photo folder"):
        open_gallery(encoder, f"{tmp_path}@val", tmp_path, progress=False)


def test_folder_without_readable_images_is_an_error(tmp_path, encoder):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="broken.jpg"), pytest.raises(ValueError, match="no readable images"):
        build_folder_gallery(encoder, tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="no .png"):
        build_folder_gallery(encoder, _empty(tmp_path), progress=False)


def _empty(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty
