"""The ship rule: the supervised head ships unless a candidate clearly wins on data that selected nothing."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.evaluation.bootstrap import PairedRun, hierarchical_bootstrap, minimal_detectable_effect
from retrieval.evaluation.metrics import per_sketch
from retrieval.evaluation.ship_rule import ShipRule, decide

N_PHOTOS, PER_PHOTO, STEPS = 60, 3, 17


def photo_ids() -> list[str]:
    return [f"p{i:03d}" for i in range(N_PHOTOS) for _ in range(PER_PHOTO)]


def supervised_ranks(rng: np.random.Generator, difficulty: np.ndarray | None = None) -> np.ndarray:
    """(Q, T) ranks that fall as the drawing goes on, with a per-photo difficulty and per-step noise."""
    if difficulty is None:
        difficulty = np.repeat(rng.uniform(1, 25, N_PHOTOS), PER_PHOTO)
    decay = np.linspace(1.0, 0.2, STEPS)
    return np.clip(np.rint(difficulty[:, None] * decay[None, :] + rng.integers(0, 3, (len(difficulty), STEPS))), 1, 60)


def per_seed(ranks: list[np.ndarray]) -> list[dict]:
    return [per_sketch(r, N_PHOTOS) for r in ranks]


def test_a_head_that_differs_only_by_noise_is_not_shipped_even_when_it_looks_better():
    rng = np.random.default_rng(0)
    difficulty = np.repeat(rng.uniform(1, 25, N_PHOTOS), PER_PHOTO)
    base = supervised_ranks(rng, difficulty)
    # Candidates: fresh draws of the very same model (same difficulty, new noise); ship the luckiest of 20.
    noisy = [supervised_ranks(rng, difficulty) for _ in range(20)]
    lucky = max(noisy, key=lambda r: per_sketch(r, N_PHOTOS)["m@B"].mean())
    assert per_sketch(lucky, N_PHOTOS)["m@B"].mean() > per_sketch(base, N_PHOTOS)["m@B"].mean()  # it looks better
    decision = decide(
        ShipRule(), per_seed([base]), {"lucky": per_seed([lucky, noisy[0], noisy[1]])}, [photo_ids()], "holdout"
    )
    assert decision.ship == "supervised"
    assert not decision.candidates["lucky"]["passed"]


def test_a_head_that_wins_by_more_than_the_margin_on_every_seed_is_shipped():
    rng = np.random.default_rng(1)
    base = supervised_ranks(rng)
    better = [np.maximum(1, base - 3 - rng.integers(0, 2, base.shape)) for _ in range(3)]  # earlier, every seed
    decision = decide(ShipRule(), per_seed([base]), {"rl": per_seed(better)}, [photo_ids()], "holdout")
    assert decision.ship == "rl", decision.candidates["rl"]["reason"]
    assert decision.candidates["rl"]["vs_supervised"]["m@B"]["low"] > 0


def test_a_win_below_the_margin_goes_to_the_supervised_head():
    rng = np.random.default_rng(2)
    base = supervised_ranks(rng)
    better = [np.maximum(1, base - 3) for _ in range(3)]
    margin = decide(ShipRule(margin=0.0), per_seed([base]), {"rl": per_seed(better)}, [photo_ids()], "x")
    gain = margin.candidates["rl"]["vs_supervised"]["m@B"]["delta"]
    assert margin.ship == "rl"
    strict = decide(ShipRule(margin=gain + 0.5), per_seed([base]), {"rl": per_seed(better)}, [photo_ids()], "x")
    assert strict.ship == "supervised"
    assert "below the margin" in strict.candidates["rl"]["reason"]


def test_a_significant_loss_on_a_guard_metric_blocks_shipping():
    rng = np.random.default_rng(3)
    base = supervised_ranks(rng)
    # Far better early in the drawing, clearly worse once complete (A@1 / A@10 of the last step).
    candidate = np.maximum(1, base - 4)
    candidate[:, -1] = base[:, -1] + 15
    decision = decide(ShipRule(margin=0.5), per_seed([base]), {"rl": per_seed([candidate] * 3)}, [photo_ids()], "x")
    assert decision.candidates["rl"]["vs_supervised"]["m@B"]["low"] > 0.5
    assert decision.ship == "supervised"
    assert "significant loss" in decision.candidates["rl"]["reason"]


def test_resampling_photos_and_runs_widens_the_interval_over_sketch_only_resampling():
    rng = np.random.default_rng(4)
    photo_effect = np.repeat(rng.normal(0, 10, N_PHOTOS), PER_PHOTO)  # sketches of one photo move together
    photos = photo_ids()
    runs = [PairedRun({"m@B": photo_effect + rng.normal(shift, 2, len(photos))}, photos) for shift in (-3, 0, 3)]
    pooled = PairedRun(
        {"m@B": np.concatenate([r.diffs["m@B"] for r in runs])}, [f"{s}{p}" for s in "abc" for p in photos]
    )
    by_sketch = PairedRun(pooled.diffs, [str(i) for i in range(len(pooled.photo_ids))])
    hierarchical = hierarchical_bootstrap(runs, ("m@B",))["m@B"]
    naive = hierarchical_bootstrap([by_sketch], ("m@B",))["m@B"]
    assert hierarchical["delta"] == pytest.approx(naive["delta"])
    assert hierarchical["se"] > 1.5 * naive["se"]
    assert hierarchical["n_runs"] == 3 and hierarchical["n_sketches"] == 3 * len(photos)


def test_bootstrap_interval_covers_the_true_mean_of_a_known_distribution():
    rng = np.random.default_rng(5)
    photos = [f"p{i}" for i in range(400)]
    run = PairedRun({"m@B": rng.normal(2.0, 4.0, 400)}, photos)
    result = hierarchical_bootstrap([run], ("m@B",))["m@B"]
    assert result["low"] < 2.0 < result["high"]
    assert result["se"] == pytest.approx(4.0 / np.sqrt(400), rel=0.15)


def test_minimal_detectable_effect_is_2_8_standard_errors_at_80_percent_power():
    assert minimal_detectable_effect(1.0) == pytest.approx(1.95996 + 0.84162, abs=1e-4)
    assert minimal_detectable_effect(0.5, power=0.5) == pytest.approx(0.98, abs=1e-2)


def test_paired_run_refuses_differences_and_photos_of_different_lengths():
    with pytest.raises(ValueError, match="3 differences for 2 sketches"):
        PairedRun({"m@B": np.zeros(3)}, ["a", "b"])
