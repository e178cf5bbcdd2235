"""rl.features: cached frozen features match the encoder, pad correctly, and are reused from disk."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.data.raster import render_steps
from retrieval.data.sketch import step_cuts
from retrieval.model.progress_head import ink_share
from rl.features import FeatureCache, cached_features, compute_features, model_fingerprint
from tests.rl_toy import ToyDataset, calibrated_encoder

pytestmark = pytest.mark.slow  # encoder features of every partial raster


@pytest.fixture(scope="module")
def toy():
    dataset = ToyDataset(num_photos=8, sketches_per_photo=2, strokes=3, seed=1)
    return dataset, calibrated_encoder(dataset, seed=1)


def test_features_are_the_encoders_on_each_partial_raster(toy):
    dataset, encoder = toy
    cache = compute_features(encoder, dataset, "val", progress=False)
    records = dataset.sketches("val")
    assert cache.features.shape == (len(records), 17, encoder.meta["feature_dim"])
    assert cache.features.std() > 1e-3, "calibrated encoder must give distinct features"
    sketch = records[1].sketch
    rasters = render_steps(sketch, step_cuts(sketch), encoder.meta["raster_size"], encoder.meta["line_width"])
    np.testing.assert_allclose(cache.features[1], encoder.sketch_features(rasters), atol=1e-5)
    np.testing.assert_allclose(cache.ink[1], ink_share(rasters), atol=1e-7)  # the progress signal
    assert np.all(np.diff(cache.ink, axis=1) >= 0) and cache.ink_ref() == pytest.approx(np.median(cache.ink[:, -1]))
    photos = dataset.photo_ids("val")
    assert [photos[i] for i in cache.true_index] == [r.photo_id for r in records]
    np.testing.assert_allclose(
        cache.photo_embeddings, encoder.embed_photos([dataset.load_photo(p) for p in photos]), atol=1e-5
    )


def test_stroke_steps_are_padded_with_the_finished_sketch(toy):
    dataset, encoder = toy
    cache = compute_features(encoder, dataset, "train", step_mode="strokes", progress=False)
    assert cache.max_steps == 3 and np.all(cache.num_steps == 3)  # every toy sketch has 3 strokes
    ragged = FeatureCache(
        cache.features[:, :2].copy(),
        np.asarray([1] + [2] * (cache.num_sketches - 1)),
        cache.photo_embeddings,
        cache.true_index,
        cache.ink[:, :2].copy(),
        cache.photo_ids,
        cache.sketch_keys,
    )
    assert ragged.num_steps[0] == 1
    with pytest.raises(ValueError, match="num_steps"):
        FeatureCache(
            cache.features[:, :2],
            cache.num_steps,
            cache.photo_embeddings,
            cache.true_index,
            cache.ink[:, :2],
            cache.photo_ids,
            cache.sketch_keys,
        )


def test_cache_is_keyed_by_model_and_reused(toy, tmp_path):
    dataset, encoder = toy
    first = cached_features(encoder, dataset, "val", tmp_path, progress=False)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and first.meta["model_hash"] == model_fingerprint(encoder)
    again = cached_features(encoder, dataset, "val", tmp_path, progress=False)
    np.testing.assert_array_equal(again.features, first.features)
    assert again.sketch_keys == first.sketch_keys and again.photo_ids == first.photo_ids
    # A different backbone must not hit the same cache file.
    other = calibrated_encoder(dataset, seed=2)
    cached_features(other, dataset, "val", tmp_path, progress=False)
    cached_features(encoder, dataset, "val", tmp_path, step_mode="strokes", progress=False)
    assert len(list(tmp_path.glob("*.npz"))) == 3


def test_save_load_round_trip(toy, tmp_path):
    dataset, encoder = toy
    cache = compute_features(encoder, dataset, "val", progress=False)
    cache.save(tmp_path / "c.npz")
    loaded = FeatureCache.load(tmp_path / "c.npz")
    for name in ("features", "num_steps", "photo_embeddings", "true_index", "ink"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(cache, name))
    assert loaded.meta == cache.meta and loaded.sketch_keys == cache.sketch_keys
