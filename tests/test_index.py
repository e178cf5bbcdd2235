"""PhotoIndex: exact, HNSW and IVF search, exact ranks with ties against, incremental add, save/load."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import retrieval.serving.index as index_module
from retrieval.serving.index import IndexParams, PhotoIndex


def unit_rows(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ids_for(n: int, prefix: str = "p") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_flat_search_matches_numpy():
    photos, queries = unit_rows(200), unit_rows(5, seed=1)
    index = PhotoIndex.build(photos, ids_for(200))
    assert index.kind == "flat" and len(index) == 200
    scores, ids = index.search(queries, k=7)
    expected = np.argsort(-(queries @ photos.T), axis=1)[:, :7]
    assert ids == [[f"p{j}" for j in row] for row in expected]
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ photos.T, expected, 1), rtol=1e-5)


def test_search_k_larger_than_gallery_and_empty_index():
    index = PhotoIndex.build(unit_rows(3), ids_for(3))
    scores, ids = index.search(unit_rows(2, seed=4), k=20)
    assert scores.shape == (2, 3) and all(len(r) == 3 for r in ids)
    empty = PhotoIndex(dim=16)
    scores, ids = empty.search(unit_rows(1), k=5)
    assert scores.shape == (1, 0) and ids == [[]]


def test_rank_of_exact_and_ties_against():
    photos = unit_rows(50)
    index = PhotoIndex.build(photos, ids_for(50))
    q = photos[7] * 0.9 + photos[3] * 0.1
    expected = 1 + int(np.sum(photos @ q > photos[7] @ q))
    assert index.rank_of(q, "p7") == expected
    # Collapsed gallery: every photo identical -> the target is last.
    same = PhotoIndex.build(np.tile(photos[:1], (10, 1)), ids_for(10))
    assert same.rank_of(photos[0], "p4") == 10
    with pytest.raises(KeyError, match="not in the index"):
        index.rank_of(q, "nope")


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_recall_and_exact_rank(kind):
    photos, queries = unit_rows(2000, d=32), unit_rows(50, d=32, seed=2)
    index = PhotoIndex.build(photos, ids_for(2000), kind=kind, params=IndexParams(nprobe=32))
    assert index.kind == kind
    _, ids = index.search(queries, k=10)
    truth = np.argsort(-(queries @ photos.T), axis=1)[:, :10]
    recall = np.mean([len(set(found) & {f"p{j}" for j in row}) / 10 for found, row in zip(ids, truth)])
    assert recall >= 0.95
    # rank_of never depends on the approximate graph.
    assert index.rank_of(queries[0], f"p{truth[0, 0]}") == 1


def test_incremental_add_and_auto_switch(monkeypatch):
    monkeypatch.setattr(index_module, "APPROX_THRESHOLD", 100)
    photos = unit_rows(150)
    index = PhotoIndex.build(photos[:80], ids_for(80))
    assert index.kind == "flat"
    index.add(photos[80:], ids_for(150)[80:])
    assert index.kind == "ivf" and len(index) == 150 and index.ids == ids_for(150)
    _, ids = index.search(photos[140:141], k=1)
    assert ids == [["p140"]]
    with pytest.raises(ValueError, match="already in the index"):
        index.add(photos[:1], ["p3"])
    with pytest.raises(ValueError, match="unique"):
        index.add(photos[:2], ["x", "x"])
    with pytest.raises(ValueError, match="does not match"):
        index.add(unit_rows(1, d=8), ["y"])


def test_ivf_retrains_when_the_gallery_outgrows_its_cells():
    photos = unit_rows(4000, d=32)
    index = PhotoIndex.build(photos[:400], ids_for(400), kind="ivf")
    cells = index._faiss.nlist
    index.add(photos[400:1500], ids_for(4000)[400:1500])  # 3.75x: cells kept, photos appended
    assert index._faiss.nlist == cells and index._faiss.ntotal == 1500
    index.add(photos[1500:], ids_for(4000)[1500:])  # 10x the training size: re-trained on all photos
    assert index._faiss.nlist > cells and index._faiss.ntotal == 4000
    _, ids = index.search(photos[3999:4000], k=1)
    assert ids == [["p3999"]]


def test_ivf_build_is_deterministic():
    photos, queries = unit_rows(3000, d=32), unit_rows(20, d=32, seed=5)
    first = PhotoIndex.build(photos, ids_for(3000), kind="ivf", params=IndexParams(nprobe=2))
    second = PhotoIndex.build(photos, ids_for(3000), kind="ivf", params=IndexParams(nprobe=2))
    assert first.search(queries, 10)[1] == second.search(queries, 10)[1]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_save_load_roundtrip(tmp_path, kind):
    photos, queries = unit_rows(300), unit_rows(4, seed=3)
    index = PhotoIndex.build(photos, ids_for(300), kind=kind)
    index.save(tmp_path / "idx")
    loaded = PhotoIndex.load(tmp_path / "idx")
    assert loaded.kind == kind and loaded.ids == index.ids
    s1, i1 = index.search(queries, 5)
    s2, i2 = loaded.search(queries, 5)
    assert i1 == i2
    np.testing.assert_allclose(s1, s2)
    assert loaded.rank_of(queries[0], "p10") == index.rank_of(queries[0], "p10")
    loaded.add(unit_rows(1, seed=9), ["new"])
    assert "new" in loaded


def test_auto_index_saved_by_an_older_policy_is_rebuilt_on_load(tmp_path, monkeypatch):
    monkeypatch.setattr(index_module, "APPROX_THRESHOLD", 100)
    photos = unit_rows(300)
    old = PhotoIndex(dim=16)  # "auto", as a gallery cache built before IVF became the default would be
    old.add(photos, ids_for(300))
    old.kind, old._faiss = "hnsw", index_module._new_faiss("hnsw", photos, old.params)
    old.save(tmp_path / "old")
    loaded = PhotoIndex.load(tmp_path / "old")
    assert loaded.kind == "ivf" and loaded.rebuilt_on_load and loaded._faiss.ntotal == 300
    assert loaded.search(photos[42:43], 1)[1] == [["p42"]]
    loaded.save(tmp_path / "new")
    assert not PhotoIndex.load(tmp_path / "new").rebuilt_on_load


def test_empty_index_saves_and_loads(tmp_path):
    PhotoIndex(dim=16, kind="ivf").save(tmp_path / "empty")
    loaded = PhotoIndex.load(tmp_path / "empty")
    assert len(loaded) == 0 and loaded.search(unit_rows(1), 3)[1] == [[]]
    loaded.add(unit_rows(50), ids_for(50))
    assert loaded.search(unit_rows(50)[7:8], 1)[1] == [["p7"]]


def test_load_missing_folder_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="PhotoIndex.save"):
        PhotoIndex.load(tmp_path)


def test_concurrent_search_and_add():
    photos = unit_rows(400)
    index = PhotoIndex.build(photos[:200], ids_for(200))
    errors: list[Exception] = []

    def searcher() -> None:
        try:
            for i in range(50):
                _, ids = index.search(photos[i : i + 1], 1)
                assert ids[0] == [f"p{i}"]
                assert index.rank_of(photos[i], f"p{i}") == 1
        except Exception as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for start in range(200, 400, 20):
        index.add(photos[start : start + 20], ids_for(400)[start : start + 20])
    for t in threads:
        t.join()
    assert not errors and len(index) == 400
