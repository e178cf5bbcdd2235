"""Encoder: shapes, unit rows, checkpoint round-trip, RL head hooks, refusal of bad checkpoints."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from retrieval.data.sketch import Sketch
from retrieval.model.encoder import CheckpointError, Encoder, create_encoder

SIZE = 64  # small real model: the full pipeline at a fraction of the cost


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return create_encoder(arch="mobilenet_v3_small", embed_dim=32, input_size=SIZE, seed=0)


@pytest.fixture(scope="module")
def sketch_rasters(encoder: Encoder) -> np.ndarray:
    line = Sketch((np.array([[20.0, 30.0, 0.0], [200.0, 220.0, 100.0]]), np.array([[50.0, 200.0, 300.0]])))
    return np.stack([encoder.render(line), encoder.render(line, n_points=1), np.full((SIZE, SIZE), 255, np.uint8)])


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (80, 80, 3), dtype=np.uint8), rng.integers(0, 256, (120, 50, 3), dtype=np.uint8)]


def test_shapes_dtypes_and_unit_rows(encoder, sketch_rasters, photos):
    s, p = encoder.embed_sketches(sketch_rasters), encoder.embed_photos(photos)
    f = encoder.sketch_features(sketch_rasters)
    assert s.shape == (3, 32) and p.shape == (2, 32) and f.shape == (3, encoder.meta["feature_dim"])
    assert s.dtype == p.dtype == f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-5)
    assert encoder.embed_sketches(sketch_rasters[0]).shape == (1, 32)  # a single raster is a batch of one
    assert encoder.embed_photos(photos[0]).shape == (1, 32)
    # rasters of another size are resized; batching does not change results
    big = np.stack([np.kron(r, np.ones((2, 2), np.uint8)) for r in sketch_rasters])
    assert encoder.embed_sketches(big).shape == (3, 32)
    np.testing.assert_allclose(encoder.embed_sketches(sketch_rasters[:1]), s[:1], atol=1e-5)


def test_sketch_head_apply_matches_embed_and_with_sketch_head(encoder, sketch_rasters):
    feats = encoder.sketch_features(sketch_rasters)
    np.testing.assert_allclose(encoder.sketch_head_apply(feats), encoder.embed_sketches(sketch_rasters), atol=1e-5)
    state = encoder.sketch_head_state()
    assert state["weight"].shape == (32, encoder.meta["feature_dim"]) and state["bias"].shape == (32,)
    trainable = torch.nn.Linear(encoder.meta["feature_dim"], 32)  # e.g. an RL policy's live parameters
    trainable.load_state_dict({"weight": -state["weight"], "bias": -state["bias"]})
    flipped = encoder.with_sketch_head(dict(trainable.named_parameters()))
    np.testing.assert_allclose(
        flipped.embed_sketches(sketch_rasters), -encoder.embed_sketches(sketch_rasters), atol=1e-5
    )
    np.testing.assert_allclose(flipped.sketch_features(sketch_rasters), feats, atol=1e-6)  # backbone untouched
    with pytest.raises(ValueError, match="shapes"):
        encoder.with_sketch_head({"weight": torch.zeros(32, encoder.meta["feature_dim"] + 1), "bias": torch.zeros(32)})


def test_save_load_round_trip_identical(encoder, sketch_rasters, photos, tmp_path):
    card = {"data": "unit-test", "seed": 0, "val": {"m@B": 1.5}}
    encoder.save(tmp_path / "ckpt", card=card)
    loaded = Encoder.load(tmp_path / "ckpt")
    assert loaded.meta["card"] == card and loaded.meta["arch"] == "mobilenet_v3_small"
    np.testing.assert_array_equal(loaded.embed_sketches(sketch_rasters), encoder.embed_sketches(sketch_rasters))
    np.testing.assert_array_equal(loaded.embed_photos(photos), encoder.embed_photos(photos))
    assert Encoder.load(tmp_path / "ckpt" / "model.safetensors").meta["embed_dim"] == 32


@pytest.mark.slow
def test_pt_file_loads_with_weights_only(encoder, sketch_rasters, tmp_path):
    torch.save({"meta": encoder.meta, "state_dict": encoder.net.state_dict()}, tmp_path / "m.pt")
    loaded = Encoder.load(tmp_path / "m.pt")
    np.testing.assert_array_equal(loaded.embed_sketches(sketch_rasters), encoder.embed_sketches(sketch_rasters))


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_malicious_pickle_is_refused(tmp_path, capsys):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"meta": {}, "state_dict": _Evil()}, f)
    with pytest.raises(CheckpointError, match="refused"):
        Encoder.load(tmp_path / "evil.pt")
    assert "pwned" not in capsys.readouterr().out


def test_tampered_checkpoints_are_refused(encoder, tmp_path):
    folder = encoder.save(tmp_path / "ckpt", card={})
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[:-8] + b"\x00" * 8)
    with pytest.raises(CheckpointError, match="sha256"):
        Encoder.load(folder)
    (folder / "model.safetensors").write_bytes(b"garbage")
    meta = json.loads((folder / "model.json").read_text())
    meta.pop("weights_sha256")
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="safetensors"):
        Encoder.load(folder)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "model.json").write_text(json.dumps({**meta, "arch": "os.system"}))
    with pytest.raises(CheckpointError, match="unknown arch"):
        Encoder.load(folder)
    (folder / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON"):
        Encoder.load(folder)
    with pytest.raises(CheckpointError, match="not an encoder checkpoint"):
        Encoder.load(tmp_path / "nowhere")


@pytest.mark.slow
def test_partly_shared_branches(sketch_rasters, photos):
    enc = create_encoder(embed_dim=16, input_size=SIZE, separate_blocks=2, seed=1)
    assert len(enc.net.photo_stem) == 2 and enc.meta["branch_sharing"]["shared"] is False
    s, p = enc.net.embed_pair(enc.sketch_batch(sketch_rasters), enc.photo_batch(photos))
    assert s.shape == (3, 16) and p.shape == (2, 16)


@pytest.mark.slow
def test_untrained_encoder_is_calibrated_so_embeddings_differ(photos):
    collapsed = create_encoder(input_size=64, embed_dim=32, seed=0, calibrate=False)
    calibrated = create_encoder(input_size=64, embed_dim=32, seed=0)
    # Batch-norm statistics are fitted; every learned weight is the same seeded initialisation.
    weights = {k: v for k, v in calibrated.net.state_dict().items() if "running" not in k and "num_batches" not in k}
    for key, value in weights.items():
        assert torch.equal(value, collapsed.net.state_dict()[key]), key
    assert calibrated.net.training is False

    def mean_cosine(encoder: Encoder) -> float:
        v = encoder.embed_photos(photos)
        return float((np.sum(v @ v.T) - len(v)) / (len(v) * (len(v) - 1)))

    assert mean_cosine(collapsed) > 0.999  # unfitted statistics: every photo lands on one vector
    assert mean_cosine(calibrated) < 0.99


@pytest.mark.slow
def test_checkpoint_format_v1_is_stable_and_a_reload_saves_the_same_bytes(encoder, tmp_path):
    """model.json's keys are the format (retrieval/model/checkpoint.py): a change needs a FORMAT_VERSION bump."""
    first = encoder.save(tmp_path / "a", card={"seed": 0})
    meta = json.loads((first / "model.json").read_text())
    assert (meta["format"], meta["format_version"]) == ("earlysketch-encoder", 1)
    keys = "arch branch_sharing card embed_dim feature_dim format format_version input_size line_width"
    assert sorted(meta) == sorted(f"{keys} normalisation photo_input_size pooling raster_size weights_sha256".split())
    norm_keys = "photo_mean photo_std sketch sketch_mean sketch_polarity sketch_std"
    assert sorted(meta["normalisation"]) == norm_keys.split()
    assert meta["pooling"] == {"type": "gem", "p_init": 3.0, "learnable": True, "p": pytest.approx(3.0)}
    second = Encoder.load(first).save(tmp_path / "b")
    for name in ("model.json", "model.safetensors"):
        assert (second / name).read_bytes() == (first / name).read_bytes(), name
