"""Thumbnail cache: many threads making one thumbnail at once, and a corrupt cached file is remade."""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from retrieval.ui.thumbnails import ThumbnailCache, is_complete_jpeg


def _photo(photo_id: str) -> np.ndarray:
    rng = np.random.default_rng(len(photo_id))
    return rng.integers(0, 255, (400, 300, 3), dtype=np.uint8)  # noise: large JPEGs, slow to write


def test_concurrent_makers_of_one_thumbnail_leave_one_whole_jpeg_and_no_temp_files(tmp_path):
    cache = ThumbnailCache(tmp_path, _photo, size=224)
    start = threading.Barrier(8)
    paths, errors = [], []

    def make():
        start.wait()
        try:
            paths.append(cache.get("chair 1"))
        except Exception as exc:  # noqa: BLE001 - collected, the assert names it
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(set(paths)) == 1
    with Image.open(paths[0]) as img:
        img.load()
        assert max(img.size) == 224
    assert [p.name for p in tmp_path.iterdir()] == [paths[0].name], "no temporary files left behind"


def test_a_corrupt_cached_thumbnail_is_made_again(tmp_path):
    path = ThumbnailCache(tmp_path, _photo).path("chair 2")
    path.write_bytes(b"\xff\xd8 half a jpeg")
    assert not is_complete_jpeg(path)
    assert ThumbnailCache(tmp_path, _photo).get("chair 2") == path
    assert is_complete_jpeg(path)
    with Image.open(path) as img:
        img.load()
