"""RankBatcher: concurrent rank calls share forwards, and each caller gets its own answer or error."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from retrieval.data.formats.stroke_json import StrokePayloadError
from retrieval.data.procedural import ProceduralDataset
from retrieval.serving.batching import RankBatcher
from retrieval.serving.gallery import build_dataset_gallery
from retrieval.serving.retriever import Retriever


@pytest.fixture(scope="module")
def retriever(encoder):
    dataset = ProceduralDataset(num_photos=12, sketches_per_photo=1, seed=1)
    gallery = build_dataset_gallery(encoder, dataset, None, progress=False)
    retriever = Retriever(encoder, gallery.index)
    retriever.sketches = [r.sketch for r in dataset.sketches("train")]
    return retriever


def call_together(batcher: RankBatcher, calls: list[tuple]) -> list:
    """Run ``batcher.rank(*call)`` for every call from its own thread, released at once."""
    barrier = threading.Barrier(len(calls))
    out: list = [None] * len(calls)

    def one(i: int) -> None:
        barrier.wait()
        try:
            out[i] = batcher.rank(*calls[i])
        except Exception as exc:  # returned to the test, which checks which calls failed
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


@pytest.mark.slow
def test_concurrent_calls_are_batched_and_each_gets_its_own_ranking(retriever):
    batcher = RankBatcher(retriever, max_batch=8, max_wait_ms=300)
    ids = retriever.index.ids
    calls = [(retriever.sketches[i].first_fraction(0.3 + 0.1 * i), 3 + i, ids[i]) for i in range(6)]
    results = call_together(batcher, calls)
    batcher.close()
    assert sum(n * c for n, c in batcher.batch_counts.items()) == 6
    assert max(batcher.batch_counts) > 1, batcher.batch_counts  # threads released together share a forward
    for (sketch, k, target), got in zip(calls, results):
        alone = retriever.rank(sketch, k, target)
        assert len(got.ids) == k and got.target_rank == alone.target_rank
        # Batched and single forwards agree up to float noise; random-init scores nearly tie, so compare values.
        np.testing.assert_allclose(got.scores, alone.scores, rtol=1e-4, atol=1e-5)
        assert got.batch_size >= 1 and got.timings_ms["queue"] >= 0


def test_a_bad_request_fails_only_its_caller(retriever):
    batcher = RankBatcher(retriever, max_batch=8, max_wait_ms=300)
    good = retriever.sketches[0]
    calls = [(good, 5, None), ('{"strokes": [[[0, 0, "x"]]]}', 5, None), (good, 5, "no-such-photo"), (good, 4, None)]
    results = call_together(batcher, calls)
    batcher.close()
    assert isinstance(results[1], StrokePayloadError)
    assert isinstance(results[2], KeyError) and "no-such-photo" in str(results[2])
    assert len(results[0].ids) == 5 and len(results[3].ids) == 4
    np.testing.assert_allclose(results[0].scores[:4], results[3].scores, rtol=1e-4, atol=1e-5)


def test_closed_batcher_refuses_new_work(retriever):
    batcher = RankBatcher(retriever, max_batch=1, workers=2)
    assert batcher.rank(retriever.sketches[1], 2).ids
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.rank(retriever.sketches[1], 2)
    with pytest.raises(ValueError, match="max_batch"):
        RankBatcher(retriever, max_batch=0)


def test_idle_workers_take_requests_side_by_side_instead_of_batching(retriever):
    batcher = RankBatcher(retriever, max_batch=8, max_wait_ms=50, workers=2)
    results = call_together(batcher, [(retriever.sketches[0], 3, None), (retriever.sketches[1], 3, None)])
    batcher.close()
    assert all(len(r.ids) == 3 for r in results)
    assert batcher.batch_counts == {1: 2}  # two free workers: two single forwards on two cores, no batch
