"""The rank response's one JSON form (RankResult.to_json / from_json) and the one k check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retrieval.serving.rank_result import MAX_K, RankResult, check_k


def _result(**changes) -> RankResult:
    fields = dict(
        ids=["a", "b"],
        scores=[np.float32(0.75), np.float32(0.5)],
        target_rank=np.int64(7),
        timings_ms={"encode": 3.0, "queue": 1.5, "total": 6.0},
        n_gallery=40,
        batch_size=3,
        rank_exact=False,
        rank_bounds=(np.int64(5), np.int64(9)),
        snapshot="enc-gal",
    )
    return RankResult(**(fields | changes))


def test_to_json_is_plain_json_and_reads_back_to_the_same_result():
    result = _result()
    wire = json.loads(json.dumps(result.to_json()))  # numpy scalars must not leak into the answer
    back = RankResult.from_json(wire)
    assert back == RankResult(["a", "b"], [0.75, 0.5], 7, result.timings_ms, 40, None, 3, False, (5, 9), "enc-gal")
    assert wire["target_rank"] == 7 and wire["rank_bounds"] == [5, 9] and wire["gallery_size"] == 40


def test_without_diagnostics_nothing_about_other_sessions_is_sent():
    wire = _result().to_json(diagnostics=False)
    assert "batch_size" not in wire and "queue" not in wire["timings_ms"]
    assert wire["timings_ms"] == {"encode": 3.0, "total": 6.0}
    assert RankResult.from_json(wire).batch_size == 1  # read as a batch of one


def test_a_partial_answer_reads_as_an_inexact_rank():
    wire = _result(rank_exact=True).to_json() | {"partial": True, "missing_shards": [1]}
    assert RankResult.from_json(wire).rank_exact is False


def test_no_target_and_nothing_drawn_round_trip():
    empty = RankResult([], [], None, {"total": 0.2}, n_gallery=3)
    assert RankResult.from_json(empty.to_json()) == empty


@pytest.mark.parametrize("broken", [{}, {"ids": ["a"]}, {"ids": "ab", "scores": ["x"], "target_rank": None}])
def test_a_malformed_answer_names_what_is_missing(broken):
    with pytest.raises((KeyError, TypeError, ValueError)):
        RankResult.from_json(broken)


@pytest.mark.parametrize("k", [1, 10, MAX_K])
def test_k_in_range_passes(k):
    assert check_k(k) == k


@pytest.mark.parametrize("k", [True, False, 0, -5, MAX_K + 1, 10.0, "10", None, np.int64(10)])
def test_k_must_be_a_plain_int_in_range(k):
    with pytest.raises(ValueError, match="k must be an integer between 1 and 1000"):
        check_k(k)
