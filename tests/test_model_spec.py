"""One typed model spec and one factory: presets, overrides, the training flags' spec, and every
checkpoint on disk (assets/model, written before ModelSpec existed) reading back as the spec it was built from."""

from __future__ import annotations

from dataclasses import replace

import pytest

from retrieval.model.checkpoint import new_meta
from retrieval.model.encoder import Encoder, create_encoder
from retrieval.model.spec import PRESETS, ModelSpec, model_spec
from retrieval.provenance import DEFAULT_MODEL_DIR
from retrieval.train.config import Config, preset_flags

BUILT_FROM = ("card", "feature_dim", "weights_sha256", "sketch_head")  # filled by the network, training or saving


def _spec_part(meta: dict) -> dict:
    """The meta minus what is not derived from the spec (towers' feature size and weight hash, pooled p)."""
    kept = {k: v for k, v in meta.items() if k not in BUILT_FROM}
    kept["pooling"] = {k: v for k, v in meta["pooling"].items() if k != "p"}
    if "towers" in kept:
        kept["towers"] = {k: v for k, v in kept["towers"].items() if k not in ("photo_feature_dim", "imagenet_sha256")}
    return kept


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.safetensors").exists(), reason="no assets/model in this checkout")
def test_the_shipped_checkpoint_reads_back_as_the_spec_that_rebuilds_its_meta():
    encoder = Encoder.load(DEFAULT_MODEL_DIR)
    assert isinstance(encoder.spec, ModelSpec)
    assert new_meta(encoder.spec) == _spec_part(encoder.meta) | {"card": {}}
    rebuilt = create_encoder(encoder.spec, seed=0, calibrate=False)
    assert _spec_part(rebuilt.meta) == _spec_part(encoder.meta)
    assert rebuilt.meta["feature_dim"] == encoder.meta["feature_dim"]


def test_a_saved_small_model_round_trips_its_spec(tmp_path):
    encoder = create_encoder(input_size=64, embed_dim=32, separate_blocks=1, line_width=2, seed=0, calibrate=False)
    encoder.save(tmp_path / "m", {"note": "test"})
    loaded = Encoder.load(tmp_path / "m")
    assert (
        loaded.spec
        == replace(encoder.spec)
        == model_spec(input_size=64, embed_dim=32, separate_blocks=1, line_width=2, raster_size=64, photo_input_size=64)
    )


def test_overrides_change_only_what_they_name():
    spec = model_spec("lit-mobilenet", embed_dim=64)
    assert spec == replace(PRESETS["lit-mobilenet"], embed_dim=64)
    assert spec.towers == {
        "photo_arch": "efficientnet_lite0",
        "pretrained": ["photo"],
        "sketch_frozen_blocks": 0,
        "lock_photo": True,
    }
    assert model_spec().towers is None


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: model_spec("resnet-9000"), ValueError, "unknown encoder preset 'resnet-9000'; choose one of"),
        (lambda: model_spec(embed_dims=3), TypeError, r"not ModelSpec fields: \['embed_dims'\]"),
        (lambda: model_spec(arch="os.system"), ValueError, "unknown arch 'os.system'"),
        (lambda: model_spec(pretrained=("text",)), ValueError, "pretrained names towers"),
        (lambda: model_spec(sketch_polarity="grey"), ValueError, "sketch_polarity must be one of"),
    ],
)
def test_a_wrong_spec_says_what_to_use(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_presets_training_flags_describe_the_preset(preset):
    assert Config(**preset_flags(preset)).model_spec() == PRESETS[preset]
