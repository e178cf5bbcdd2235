"""Metrics against hand-computed rankings."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.evaluation.metrics import format_table, paired_bootstrap, per_sketch, sketch_less, summarize
from retrieval.serving.exact_rank import true_ranks


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


def test_sketch_less_share_by_hand():
    # Sketch 0 enters the top 1 at step 3 of 4, sketch 1 at step 4 of 4; sketch 2 never (excluded).
    ranks = np.array([[5, 3, 1, 1], [2, 2, 2, 1], [9, 9, 9, 9]], dtype=float)
    figure = sketch_less(ranks)
    assert figure["1"] == {"share": pytest.approx(100 * (3 / 4 + 4 / 4) / 2), "n": 2}
    assert figure["5"] == {"share": pytest.approx(25.0), "n": 2}
    assert figure["10"] == {"share": pytest.approx(25.0), "n": 3}
    # Point shares given explicitly (per-stroke steps) replace s / n_valid; padded rows are fine.
    ragged = np.array([[4, 1, np.nan], [3, 2, 1]])
    shares = np.array([[0.7, 1.0, np.nan], [0.2, 0.5, 1.0]])
    assert sketch_less(ragged, shares)["1"] == {"share": pytest.approx(100 * (1.0 + 1.0) / 2), "n": 2}
    assert sketch_less(ragged, shares)["5"] == {"share": pytest.approx(100 * (0.7 + 0.2) / 2), "n": 2}
    # A photo that entered the top k, left it and came back counts from its first entry.
    assert sketch_less(np.array([[1.0, 6, 1]]))["1"]["share"] == pytest.approx(100 / 3)
    assert sketch_less(np.array([[2.0, 2]]))["1"] == {"share": None, "n": 0}


def test_paired_bootstrap_interval_covers_the_difference_and_is_exact_for_constant_shifts():
    rng = np.random.default_rng(0)
    base = rng.integers(1, 20, size=(200, 17)).astype(float)
    better = np.maximum(base - 3, 1)
    out = paired_bootstrap(better, base, 50, n_boot=2000, seed=1)
    per_a, per_b = per_sketch(better, 50), per_sketch(base, 50)
    for key in ("m@A", "m@B", "A@1", "A@10"):
        delta = float(np.mean(per_a[key] - per_b[key]))
        assert out[key]["delta"] == pytest.approx(delta)
        assert out[key]["low"] <= delta <= out[key]["high"]
    assert out["m@A"]["low"] > 0 and out["m@B"]["low"] > 0  # 3 ranks better everywhere: clearly positive
    # m@A per sketch moves by exactly 3 / 49 while no rank hits the floor: a constant shift has no spread.
    shifted = paired_bootstrap(base + 3, base, 50, n_boot=500)
    assert shifted["m@A"]["low"] == pytest.approx(shifted["m@A"]["high"]) == pytest.approx(-100 * 3 / 49)
    same = paired_bootstrap(base, base, 50, n_boot=200)
    assert all(v == {"delta": 0.0, "low": 0.0, "high": 0.0} for v in same.values())
    with pytest.raises(ValueError, match="same sketches"):
        paired_bootstrap(base, base[:10], 50)


def test_summarize_means_are_the_per_sketch_means():
    ranks = np.array([[3, 1, np.nan], [2, 2, 4]])
    per = per_sketch(ranks, 5)
    summary = summarize(ranks, 5)
    for key in ("A@1", "A@5", "A@10", "m@A", "m@B"):
        assert summary[key] == pytest.approx(per[key].mean())
    assert per["m@B"][0] == pytest.approx(100 * (1 / 3 + 1) / 2) and per["A@1"].tolist() == [100.0, 0.0]
