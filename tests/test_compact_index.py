"""CompactIndex: IVF-SQ8 codes + memory-mapped float32, certified ranks and re-scored top-k."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.serving.compact_index import CompactIndex, shell_of
from retrieval.serving.exact_rank import canonical_scores, list_labels
from retrieval.serving.list_bounds import ListStats


def gallery(n: int = 12_000, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, dim))
    x = centres[rng.integers(0, 30, n)] + 0.7 * rng.standard_normal((n, dim))
    x[100:120] = x[3]  # exact duplicates: ties that count against the query
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    vectors = gallery()
    folder = tmp_path_factory.mktemp("compact")
    CompactIndex.build(vectors, folder, nlist=64, nprobe=16, train_size=6000, progress=False)
    return vectors, folder


def test_reopened_index_ranks_exactly_like_brute_force_with_ties(built):
    vectors, folder = built
    index = CompactIndex.open(folder)
    assert len(index) == len(vectors) and not index.vectors.flags.writeable
    rng = np.random.default_rng(1)
    for row in [3, *rng.choice(len(vectors), 25, replace=False)]:
        query = (vectors[row] + 0.4 * rng.standard_normal(32) / np.sqrt(32)).astype(np.float32)
        scores = canonical_scores(query, vectors)
        want = int((scores >= scores[row]).sum())
        got = index.rank_target(query, int(row), cap=None)
        assert got.exact and got.rank == want
        capped = index.rank_target(query, int(row), cap=5)
        assert capped.lower <= want <= capped.upper and (capped.exact == (want <= 5) or capped.lower > 5)
    assert index.rank_target(vectors[3], 3).rank == 21  # itself and its 20 copies


def test_top_k_is_rescored_exactly_and_finds_the_true_neighbours(built):
    vectors, folder = built
    index = CompactIndex.open(folder)
    queries = vectors[200:220] + 0.01  # away from the duplicated rows, whose order among ties is free
    # Unclustered 32-d noise: neighbours score alike, so the 4-bit codes need a wide candidate pool.
    scores, rows = index.search(queries, 10, refine=40)
    for b, q in enumerate(queries):
        exact = canonical_scores(q, vectors)
        np.testing.assert_array_equal(scores[b], exact[rows[b]].astype(np.float32))
        assert len(set(rows[b].tolist()) & set(np.argsort(-exact)[:10].tolist())) >= 9


def test_missing_or_inconsistent_folders_are_refused(built, tmp_path):
    _, folder = built
    with pytest.raises(FileNotFoundError, match="no compact index"):
        CompactIndex.open(tmp_path)
    with pytest.raises(KeyError, match="not in the index"):
        CompactIndex.open(folder).rank_target(np.ones(32, np.float32), 10**9)


def test_shells_slice_each_list_by_decreasing_distance_to_its_centroid():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, 400)
    norms = rng.random(400)
    norms[:40] = norms[0]  # ties keep equal-count slices
    shells = shell_of(labels, norms, 4)
    for lst in range(5):
        members = labels == lst
        counts = np.bincount(shells[members], minlength=4)
        assert counts.max() - counts.min() <= 1
        for s in range(3):  # every member of an outer shell is at least as far as any inner one
            assert norms[members & (shells == s)].min() >= norms[members & (shells == s + 1)].max()


@pytest.mark.parametrize("shells", [1, 3])
def test_any_shell_count_ranks_exactly(tmp_path, shells):
    vectors = gallery(4000, 16, seed=3)
    index = CompactIndex.build(vectors, tmp_path, nlist=16, shells=shells, train_size=4000, progress=False)
    assert index.rank.nlist == 16 * shells
    rng = np.random.default_rng(4)
    for row in rng.choice(len(vectors), 10, replace=False):
        query = (vectors[row] + 0.5 * rng.standard_normal(16) / 4).astype(np.float32)
        scores = canonical_scores(query, vectors)
        assert index.rank_target(query, int(row), cap=None).rank == int((scores >= scores[row]).sum())


def test_list_stats_from_the_encoding_pass_equal_a_separate_pass(built):
    vectors, folder = built
    index = CompactIndex.open(folder)
    stats = index.counter.stats
    again = ListStats.compute(vectors, list_labels(index.rank), index.rank.quantizer.reconstruct_n(0, index.rank.nlist))
    for field in ("centroids", "sizes", "radius", "inner_radius"):
        np.testing.assert_array_equal(getattr(stats, field), getattr(again, field))
    assert (stats.min_norm, stats.max_norm) == (again.min_norm, again.max_norm)
