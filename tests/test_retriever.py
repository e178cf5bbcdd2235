"""Retriever: the per-stroke call on a real (random-init) encoder over a tiny procedural gallery."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from retrieval.data.formats.stroke_json import StrokeLimits, StrokePayloadError, to_stroke_json
from retrieval.data.procedural import ProceduralDataset
from retrieval.data.sketch import Sketch
from retrieval.model.encoder import create_encoder
from retrieval.serving.exact_rank import true_ranks
from retrieval.serving.gallery import build_dataset_gallery
from retrieval.serving.retriever import TIMING_KEYS, Retriever


@pytest.fixture(scope="module")
def dataset():
    return ProceduralDataset(num_photos=16, sketches_per_photo=1, seed=0)


@pytest.fixture(scope="module")
def retriever(encoder, dataset):
    gallery = build_dataset_gallery(encoder, dataset, None, progress=False)
    return Retriever(encoder, gallery.index)


@pytest.fixture(scope="module")
def sketches(dataset):
    return [r.sketch for r in dataset.sketches("train")[:4]]


def test_rank_matches_brute_force(retriever, encoder, sketches):
    sketch = sketches[0].first_fraction(0.5)
    target = retriever.index.ids[3]
    result = retriever.rank(sketch, k=5, target_id=target)
    query = encoder.embed_sketches(encoder.render(sketch)[None])[0]
    scores = retriever.index.vectors @ query
    # A random-init net scores photos nearly alike, so check values, not the order of near-ties.
    np.testing.assert_allclose(result.scores, np.sort(scores)[::-1][:5], rtol=1e-4, atol=1e-5)
    row_of = {pid: i for i, pid in enumerate(retriever.index.ids)}
    np.testing.assert_allclose([scores[row_of[pid]] for pid in result.ids], result.scores, rtol=1e-4, atol=1e-5)
    assert result.target_rank == int(true_ranks(scores[None], np.array([3]))[0])
    assert set(result.timings_ms) == set(TIMING_KEYS) and result.timings_ms["total"] > 0
    assert result.n_gallery == 16 and result.error is None


def test_payload_and_sketch_give_the_same_ranking(retriever, sketches):
    sketch = sketches[1]
    as_text = json.dumps(to_stroke_json(sketch))
    target = retriever.index.ids[0]
    a, b = retriever.rank(sketch, 8, target), retriever.rank(as_text, 8, target)
    c = retriever.rank(to_stroke_json(sketch), 8, target)
    assert a.ids == b.ids == c.ids and a.target_rank == b.target_rank == c.target_rank


def test_invalid_payloads_are_rejected_with_a_reason(encoder, retriever, sketches):
    with pytest.raises(StrokePayloadError):
        retriever.rank('{"canvas": {"width": 100, "height": 100}, "strokes": [[[1, 2]]]}')
    tight = Retriever(encoder, retriever.index, limits=StrokeLimits(max_points=10))
    with pytest.raises(StrokePayloadError, match="limit"):
        tight.rank(to_stroke_json(sketches[0]))
    results = retriever.rank_batch(["not json", sketches[0]], k=3, errors="return")
    assert results[0].error and results[0].ids == []
    assert results[1].error is None and len(results[1].ids) == 3


def test_empty_sketch_ranks_nothing(retriever):
    result = retriever.rank(Sketch(()), target_id=retriever.index.ids[0])
    assert result.ids == [] and result.target_rank is None


def test_rank_batch_equals_single_calls(retriever, sketches):
    targets = retriever.index.ids[:4]
    batch = retriever.rank_batch(sketches, k=6, target_ids=targets)
    for sketch, target, got in zip(sketches, targets, batch):
        single = retriever.rank(sketch, k=6, target_id=target)
        assert got.ids == single.ids and got.target_rank == single.target_rank
    with pytest.raises(ValueError, match="target ids"):
        retriever.rank_batch(sketches, target_ids=targets[:2])


@pytest.mark.slow
def test_concurrent_sessions_get_their_own_results(retriever, sketches):
    partials = [s.first_fraction(f) for s in sketches for f in (0.3, 1.0)]
    expected = [retriever.rank(p, 5, retriever.index.ids[i % 16]).ids for i, p in enumerate(partials)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(
            pool.map(lambda i: retriever.rank(partials[i], 5, retriever.index.ids[i % 16]).ids, range(len(partials)))
        )
    assert got == expected


@pytest.mark.slow
def test_from_paths_with_a_procedural_gallery(encoder, tmp_path, sketches):
    model = encoder.save(tmp_path / "model")
    retriever = Retriever.from_paths(model, "procedural:photos=16,sketches=1@val", tmp_path / "cache")
    assert len(retriever) == len(retriever.gallery.index) >= 1
    result = retriever.rank(sketches[0], k=3)
    assert retriever.gallery.load_photo(result.ids[0]).shape[-1] == 3
    assert retriever.gallery.cache_folder.is_relative_to(tmp_path / "cache")


@pytest.mark.slow
def test_index_from_another_model_is_refused(retriever):
    other = create_encoder(input_size=64, embed_dim=16, seed=0)
    with pytest.raises(ValueError, match="rebuild the gallery"):
        Retriever(other, retriever.index)
