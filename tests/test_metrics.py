"""Metrics against hand-computed rankings."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.metrics import format_table, summarize, true_ranks


def test_true_ranks_hand_computed():
    scores = np.array(
        [
            [0.9, 0.1, 0.5, 0.3],  # true 0 is best -> 1
            [0.9, 0.1, 0.5, 0.3],  # true 2: only 0.9 above -> 2
            [0.9, 0.1, 0.5, 0.3],  # true 1 is worst -> 4
        ]
    )
    assert true_ranks(scores, np.array([0, 2, 1])).tolist() == [1, 2, 4]


def test_ties_count_against_the_query():
    # Collapsed embeddings: every photo scores the same, so the true photo is last, not first.
    assert true_ranks(np.full((2, 5), 0.7), np.array([0, 3])).tolist() == [5, 5]
    # One tie with another photo: rank 2 although nobody scores strictly higher.
    assert true_ranks(np.array([[0.5, 0.5, 0.1]]), np.array([1])).tolist() == [2]


def test_true_ranks_rejects_bad_shapes():
    with pytest.raises(ValueError, match="true_idx"):
        true_ranks(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="expected scores"):
        true_ranks(np.zeros(3), np.array([0]))


def test_summarize_hand_computed():
    n = 11  # percentile of rank r is (11 - r) / 10
    ranks = np.array(
        [
            [11, 3, 1],  # percentiles 0, .8, 1 -> mean .6; 1/r: 1/11, 1/3, 1
            [6, 6, 11],  # percentiles .5, .5, 0 -> mean 1/3; 1/r: 1/6, 1/6, 1/11
        ]
    )
    m = summarize(ranks, n, curve_points=3)
    assert m["A@1"] == pytest.approx(50.0)
    assert m["A@5"] == pytest.approx(50.0)
    assert m["A@10"] == pytest.approx(50.0)  # final ranks 1 and 11
    assert m["m@A"] == pytest.approx(100 * (0.6 + 1 / 3) / 2)
    mrr0 = (1 / 11 + 1 / 3 + 1) / 3
    mrr1 = (1 / 6 + 1 / 6 + 1 / 11) / 3
    assert m["m@B"] == pytest.approx(100 * (mrr0 + mrr1) / 2)
    assert m["n_gallery"] == 11 and m["n_sketches"] == 2
    curve = m["curve"]
    assert curve["progress"] == pytest.approx([100 / 3, 200 / 3, 100])
    assert curve["rank_percentile"] == pytest.approx([25.0, 65.0, 50.0])
    assert curve["A@1"] == pytest.approx([0.0, 0.0, 50.0])
    assert curve["reciprocal_rank"][-1] == pytest.approx(100 * (1 + 1 / 11) / 2)
    assert curve["n"] == [2, 2, 2]


def test_summarize_perfect_and_worst():
    assert summarize(np.ones((4, 17), dtype=int), 50)["m@A"] == pytest.approx(100.0)
    worst = summarize(np.full((4, 17), 50), 50)
    assert worst["m@A"] == pytest.approx(0.0)
    assert worst["A@10"] == 0.0
    assert worst["m@B"] == pytest.approx(100 / 50)
    assert len(worst["curve"]["progress"]) == 17 and worst["curve"]["progress"][-1] == 100.0


def test_summarize_ragged_stroke_steps():
    # Row 0 has 2 strokes, row 1 has 4; NaN pads the end.
    ranks = np.array([[4.0, 2.0, np.nan, np.nan], [5.0, 3.0, 2.0, 1.0]])
    m = summarize(ranks, 5, curve_points=4)
    assert m["A@1"] == pytest.approx(50.0)  # finals 2 and 1
    # Per-sketch means first: row0 (1/4 + 3/4)/2 = .5 ; row1 (0 + .5 + .75 + 1)/4 = .5625
    assert m["m@A"] == pytest.approx(100 * (0.5 + 0.5625) / 2)
    # At 25 % row 0 has no stroke yet (1/2 > 1/4): only row 1 (rank 5) counts.
    assert m["curve"]["n"] == [1, 2, 2, 2]
    assert m["curve"]["rank_percentile"][0] == pytest.approx(0.0)
    # At 50 % row0 step 1 (rank 4), row1 step 2 (rank 3): percentiles .25, .5
    assert m["curve"]["rank_percentile"][1] == pytest.approx(37.5)


def test_summarize_validates_input():
    with pytest.raises(ValueError, match="n_gallery"):
        summarize(np.array([[3]]), 2)
    with pytest.raises(ValueError, match="padding"):
        summarize(np.array([[np.nan, 1.0]]), 2)
    with pytest.raises(ValueError, match="at least one"):
        summarize(np.array([[np.nan]]), 2)


def test_format_table_has_headline_numbers():
    text = format_table(summarize(np.array([[2, 1]]), 3))
    assert "A@1" in text and "100.00" in text and "m@B" in text
