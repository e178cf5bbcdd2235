"""The certified rank: one canonical kernel, IVF list bounds, caps -- against brute force, ties included."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from retrieval.provenance import DEFAULT_MODEL_DIR
from retrieval.serving import exact_rank
from retrieval.serving.exact_rank import (
    IVFRankCounter,
    TargetRank,
    canonical_scores,
    code_error,
    count_at_or_above,
    list_labels,
)
from retrieval.serving.index import IndexParams, PhotoIndex
from retrieval.serving.list_bounds import ListStats

MODEL = DEFAULT_MODEL_DIR


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_rank(query: np.ndarray, vectors: np.ndarray, row: int) -> int:
    """The project's rule over the canonical scores of the whole gallery."""
    scores = canonical_scores(query, vectors)
    return int((scores >= scores[row]).sum())


def ivf_counter(vectors: np.ndarray, nlist: int, codes: str) -> IVFRankCounter:
    dim = vectors.shape[1]
    if codes == "flat":
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        ivf = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatIP(dim), dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT, False
        )
    ivf.cp.seed = 0
    ivf.train(vectors)
    ivf.add(vectors)
    stats = ListStats.compute(vectors, list_labels(ivf), ivf.quantizer.reconstruct_n(0, nlist))
    return IVFRankCounter(ivf, stats, code_error(ivf, vectors), vectors)


def test_canonical_scores_do_not_depend_on_the_batch():
    rng = np.random.default_rng(0)
    vectors, query = unit_rows(rng, 257, 128), unit_rows(rng, 1, 128)[0]
    whole = canonical_scores(query, vectors)
    for row in (0, 1, 100, 256):
        assert canonical_scores(query, vectors[row : row + 1])[0] == whole[row]
        assert canonical_scores(query, vectors[row:])[0] == whole[row]


def test_flat_count_matches_brute_force_with_exact_ties():
    rng = np.random.default_rng(1)
    vectors = unit_rows(rng, 3000, 48)
    vectors[500:530] = vectors[7]  # 31 exact copies of the target tie with it and count against it
    query = (vectors[7] + 0.3 * unit_rows(rng, 1, 48)[0]).astype(np.float32)
    threshold = canonical_scores(query, vectors[7:8])[0]
    assert count_at_or_above(query, vectors, threshold) == brute_rank(query, vectors, 7) >= 31


@pytest.mark.parametrize("codes", ["flat", "sq8"])
def test_ivf_counter_is_exact_on_unclustered_vectors_with_ties(codes):
    rng = np.random.default_rng(2)
    vectors = unit_rows(rng, 6000, 32)
    copies = rng.choice(6000, 40, replace=False)
    vectors[copies] = vectors[11]
    counter = ivf_counter(vectors, 48, codes)
    for trial in range(60):
        row = 11 if trial % 3 == 0 else int(rng.integers(6000))
        query = (vectors[row] + rng.uniform(0.2, 2.0) * unit_rows(rng, 1, 32)[0]).astype(np.float32)
        want = brute_rank(query, vectors, row)
        got = counter.count(query, canonical_scores(query, vectors[row : row + 1])[0])
        assert got == TargetRank.of(want) and got.exact, (trial, got, want)
        if row == 11:
            assert want >= 41


@pytest.mark.parametrize("codes", ["flat", "sq8"])
@pytest.mark.parametrize("codes_per_scan", [64, exact_rank.CODES_PER_SCAN])
def test_above_the_cap_the_rank_is_a_certified_interval(codes, codes_per_scan, monkeypatch):
    monkeypatch.setattr(exact_rank, "CODES_PER_SCAN", codes_per_scan)  # 64: a batch of 1-2 lists
    rng = np.random.default_rng(3)
    vectors = unit_rows(rng, 8000, 16)
    counter = ivf_counter(vectors, 200, codes)  # many lists: the scan stops between batches of lists
    seen_inexact = 0
    for _ in range(40):
        row = int(rng.integers(8000))
        query = unit_rows(rng, 1, 16)[0]  # unrelated query: the target is usually far down
        want = brute_rank(query, vectors, row)
        got = counter.count(query, canonical_scores(query, vectors[row : row + 1])[0], cap=50)
        assert got.lower <= want <= got.upper and got.lower <= got.rank <= got.upper
        if want <= 50:
            assert got.exact and got.rank == want
        else:
            assert got.lower > 50  # it stopped only once the cap was certainly passed
            seen_inexact += not got.exact
    assert seen_inexact > 0


def test_photo_index_ivf_ranks_equal_flat_ranks_and_scan_less():
    rng = np.random.default_rng(4)
    centres = unit_rows(rng, 40, 32)
    vectors = centres[rng.integers(0, 40, 8000)] + 0.15 * rng.standard_normal((8000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"p{i}" for i in range(8000)]
    flat = PhotoIndex.build(vectors, ids, kind="flat")
    ivf = PhotoIndex.build(vectors, ids, kind="ivf", params=IndexParams(nlist=64))
    scanned = []
    for row in rng.choice(8000, 40, replace=False):
        query = (vectors[row] + 0.1 * unit_rows(rng, 1, 32)[0]).astype(np.float32)
        got = ivf.rank_target(query, f"p{row}")
        assert got.exact and got.rank == flat.rank_of(query, f"p{row}") == brute_rank(query, vectors, row)
        scanned.append(got.scanned)
    assert np.mean(scanned) < 0.5 * len(vectors), "list bounds should skip most of a clustered gallery"


def test_approximate_search_never_hides_a_target_within_k():
    rng = np.random.default_rng(5)
    vectors = unit_rows(rng, 4000, 32)
    index = PhotoIndex.build(
        vectors, [f"p{i}" for i in range(4000)], kind="ivf", params=IndexParams(nlist=64, nprobe=1)
    )
    hidden = 0
    for row in rng.choice(4000, 60, replace=False):
        query = (vectors[row] + 0.9 * unit_rows(rng, 1, 32)[0]).astype(np.float32)
        _, plain = index.search(query, 10)
        _, ids, ranks = index.search_and_rank(query[None], 10, [f"p{row}"])
        if ranks[0].rank <= 10:
            assert ids[0][ranks[0].rank - 1] == f"p{row}"
            hidden += f"p{row}" not in plain[0]
    assert hidden > 0, "nprobe=1 should miss some targets, which the rank puts back"


@pytest.mark.slow
@pytest.mark.skipif(not (MODEL / "model.safetensors").exists(), reason="needs the shipped model in assets/model")
def test_real_embeddings_of_procedural_photos_rank_like_brute_force():
    from retrieval.data.procedural import ProceduralDataset
    from retrieval.model.encoder import Encoder
    from retrieval.serving.gallery import build_dataset_gallery

    encoder = Encoder.load(MODEL)
    dataset = ProceduralDataset(num_photos=160, sketches_per_photo=1, seed=7)
    gallery = build_dataset_gallery(encoder, dataset, None, None, progress=False)
    photos = gallery.index.vectors
    # Grow the gallery with exact duplicates of real photos: ties the rule must count against.
    vectors = np.concatenate([photos, photos[:40], photos[:40]])
    counter = ivf_counter(vectors, 8, "sq8")
    records = dataset.sketches("train")[:30]
    rasters = [encoder.render(r.sketch.first_fraction(f)) for r in records for f in (0.3, 1.0)]
    queries = encoder.embed_sketches(np.stack(rasters))
    rows = [gallery.index.ids.index(r.photo_id) for r in records for _ in (0.3, 1.0)]
    for query, row in zip(queries, rows):
        want = brute_rank(query, vectors, row)
        assert counter.count(query, canonical_scores(query, vectors[row : row + 1])[0]) == TargetRank.of(want)
