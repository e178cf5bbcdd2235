"""Two-tower encoder: frozen parts stay frozen, checkpoints round-trip, the locked-tower cache is exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from retrieval.data.datasets import open_dataset
from retrieval.model.encoder import CheckpointError, Encoder, create_encoder
from retrieval.model.pretrained import WEIGHT_SOURCES
from retrieval.train.batches import PhotoBank, PhotoSide
from retrieval.train.pipeline import run
from tests.test_train import TINY, _config

pytestmark = pytest.mark.slow  # two-tower training runs

SIZE = 64


@pytest.fixture(scope="module")
def lit() -> Encoder:
    """mobilenet sketch tower from scratch + locked ImageNet efficientnet_lite0 photo tower (LiT)."""
    return create_encoder(
        "lit-mobilenet",
        embed_dim=32,
        input_size=SIZE,
        photo_arch="efficientnet_lite0",
        photo_input_size=96,
        pretrained=("photo",),
        lock_photo=True,
        seed=0,
    )


@pytest.fixture(scope="module")
def bank() -> PhotoBank:
    dataset = open_dataset(TINY, val_fraction=0.2, seed=0)
    ids = dataset.photo_ids("train")[:5]
    return PhotoBank(ids, dataset.load_photo, cache_size=120, raster_size=SIZE, edges_per_photo=1)


def test_locked_photo_tower_is_frozen_and_keeps_its_batchnorm_statistics(lit):
    tower = lit.net.photo_tower
    assert tower.locked and not any(p.requires_grad for p in tower.parameters())
    assert all(p.requires_grad for p in lit.net.sketch_tower.parameters())
    lit.net.train()
    norms = [m for m in tower.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(m.training for m in norms), "frozen blocks must stay in eval mode while training"
    lit.net.eval()
    towers = lit.meta["towers"]
    assert towers["imagenet_sha256"] == {"sketch": None, "photo": WEIGHT_SOURCES["efficientnet_lite0"].sha256}
    assert lit.meta["photo_input_size"] == 96 and lit.meta["normalisation"]["photo_mean"] == [0.5, 0.5, 0.5]


def test_two_tower_checkpoint_round_trips_and_refuses_a_bad_tower_meta(lit, bank, tmp_path):
    sketches = np.full((2, SIZE, SIZE), 255, np.uint8)
    sketches[0, 10:50, 30] = 0
    folder = lit.save(tmp_path / "lit")
    loaded = Encoder.load(folder)
    np.testing.assert_array_equal(loaded.embed_photos(bank.photos), lit.embed_photos(bank.photos))
    np.testing.assert_array_equal(loaded.embed_sketches(sketches), lit.embed_sketches(sketches))
    meta = json.loads((folder / "model.json").read_text())
    meta["towers"]["photo_arch"] = "os.system"
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="towers.photo_arch"):
        Encoder.load(folder)


def test_partly_frozen_pretrained_sketch_tower_trains_only_its_last_blocks():
    enc = create_encoder(
        arch="efficientnet_lite0",
        embed_dim=16,
        input_size=SIZE,
        photo_arch="mobilenet_v3_small",
        pretrained=("sketch",),
        sketch_frozen_blocks=4,
        sketch_polarity="paper_high",
    )
    blocks = enc.net.sketch_tower.blocks
    before = [next(iter(b.state_dict().values())).clone() for b in blocks]
    opt = torch.optim.SGD([p for p in enc.net.parameters() if p.requires_grad], lr=0.5)
    enc.net.train()
    raster = np.full((4, SIZE, SIZE), 255, np.uint8)
    raster[:, 20:40, 20:40] = 0
    enc.net.embed_sketches(enc.sketch_batch(raster)).sum().backward()
    opt.step()
    after = [next(iter(b.state_dict().values())) for b in blocks]
    moved = [not torch.equal(a, b) for a, b in zip(before, after)]
    assert moved[:4] == [False] * 4 and all(moved[4:]), moved
    # paper_high: a blank page is +1 after (1 - 0.5) / 0.5, as a white photo would be
    assert torch.allclose(enc.sketch_batch(np.full((1, SIZE, SIZE), 255, np.uint8)), torch.ones(1))


def test_locked_photo_side_caches_views_that_match_the_served_embeddings(lit, bank):
    side = PhotoSide(lit, bank, views=3, rng=np.random.default_rng(0))
    assert side.locked and side.features.shape == (5, 3, 2, lit.net.photo_feature_dim)
    # view 0 is the plain photo: its cached embedding is what the gallery index will hold
    np.testing.assert_allclose(side.bank_embeddings(np.arange(5)), lit.embed_photos(bank.photos), atol=1e-5)
    rng = np.random.default_rng(1)
    photos = [side.sample(i, flip=i % 2 == 1, rng=rng) for i in range(4)]
    sketches = [np.full((SIZE, SIZE), 255, np.uint8)] * 4
    s, p = side.embed_pair(sketches, photos)
    (s * p).sum().backward()
    assert lit.net.photo_head.weight.grad is not None and lit.net.sketch_head.weight.grad is not None
    assert all(param.grad is None for param in lit.net.photo_tower.parameters())
    lit.net.zero_grad(set_to_none=True)


def test_training_a_locked_two_tower_model_writes_a_loadable_checkpoint(tmp_path):
    run_dir = run(
        _config(
            tmp_path,
            photo_arch="mobilenet_v3_small",
            lock_photo=True,
            photo_views=2,
            pretrained=(),
        )
    )
    enc = Encoder.load(run_dir / "best")
    assert enc.meta["towers"]["lock_photo"] is True
    assert enc.meta["card"]["config"]["photo_views"] == 2
