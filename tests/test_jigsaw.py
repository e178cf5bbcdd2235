"""The mixed-modal jigsaw stage: permutation set, puzzle builder, Sinkhorn loss, and a smoke run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from retrieval.model.encoder import Encoder, create_encoder
from retrieval.train.config import DEFAULT_STAGES, STAGE_SHARES, Config, pipeline_stages, stage_minutes
from retrieval.train.jigsaw import (
    JigsawHead,
    from_tiles,
    hamming_permutations,
    jigsaw_loss,
    log_sinkhorn,
    mixed_puzzle,
    shuffle,
    to_tiles,
    unshuffle,
)
from retrieval.train.pipeline import run
from tests.test_train import _config as tiny_config

pytestmark = pytest.mark.slow  # training stages on tiny nets


def test_permutation_set_is_distinct_seeded_and_moves_every_tile():
    perms = hamming_permutations(30, seed=0)
    assert perms.shape == (30, 9)
    assert len({tuple(p) for p in perms}) == 30
    assert all(sorted(p) == list(range(9)) for p in perms.tolist())
    assert (perms != np.arange(9)).all()  # derangements: no tile left in place
    np.testing.assert_array_equal(perms, hamming_permutations(30, seed=0))
    assert not np.array_equal(perms, hamming_permutations(30, seed=1))
    distances = (perms[:, None] != perms[None]).sum(-1)[~np.eye(30, dtype=bool)]
    assert distances.min() >= 6  # far apart, not a random draw (whose nearest pairs differ in 2-4 cells)


def test_tiles_round_trip_and_shuffle_moves_whole_tiles():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    torch.testing.assert_close(from_tiles(to_tiles(x)), x)
    perms = torch.from_numpy(hamming_permutations(2, seed=3).copy())
    shuffled = shuffle(x, perms)
    for b in range(2):
        for j in range(9):
            torch.testing.assert_close(to_tiles(shuffled)[b, j], to_tiles(x)[b, perms[b, j]])
    torch.testing.assert_close(unshuffle(shuffled, perms), x)


def test_mixed_puzzle_unshuffles_to_the_mixed_image_of_photo_and_edge_tiles():
    rng = np.random.default_rng(0)
    photos, edges = torch.rand(8, 3, 128, 128), -torch.rand(8, 3, 128, 128)  # photo > 0 > edge: tell them apart
    puzzle, perms, mixed = mixed_puzzle(photos, edges, hamming_permutations(30), rng)
    assert puzzle.shape == mixed.shape == (8, 3, 126, 126)  # cropped to 3 x 42 px tiles
    torch.testing.assert_close(unshuffle(puzzle, perms), mixed)
    tiles, photo_tiles = to_tiles(mixed), to_tiles(photos[..., 1:127, 1:127])
    from_photo = (tiles > 0).flatten(2).all(-1)
    from_edge = (tiles < 0).flatten(2).all(-1)
    assert (from_photo ^ from_edge).all()  # every cell is wholly one modality
    assert 0.3 < from_photo.float().mean() < 0.7  # both modalities, about half each
    torch.testing.assert_close(tiles[from_photo], photo_tiles[from_photo])


def test_sinkhorn_is_doubly_stochastic_and_the_loss_prefers_the_true_permutation():
    torch.manual_seed(0)
    p = log_sinkhorn(torch.randn(4, 9, 9), iters=50).exp()
    torch.testing.assert_close(p.sum(1), torch.ones(4, 9), atol=1e-4, rtol=0)
    torch.testing.assert_close(p.sum(2), torch.ones(4, 9), atol=1e-4, rtol=0)
    perms = torch.from_numpy(hamming_permutations(4).copy())
    right = 5 * nn.functional.one_hot(perms, 9).float()
    assert jigsaw_loss(right, perms) < 0.1 < math.log(9) - 0.01 < jigsaw_loss(torch.zeros(4, 9, 9), perms) + 0.02


def test_jigsaw_loss_falls_when_a_tiny_net_trains_on_a_fixed_batch():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    photos, edges = torch.rand(8, 3, 48, 48), torch.rand(8, 3, 48, 48)
    puzzle, perms, _ = mixed_puzzle(photos, edges, hamming_permutations(30), rng)
    trunk = nn.Sequential(nn.Conv2d(3, 16, 4, stride=4), nn.ReLU(), nn.Conv2d(16, 32, 1))
    head = JigsawHead(32)
    opt = torch.optim.Adam([*trunk.parameters(), *head.parameters()], lr=1e-2)
    losses = []
    for _ in range(100):
        loss = jigsaw_loss(head(trunk(puzzle)), perms)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 0.9 * math.log(9) and losses[-1] < 0.5 * losses[0]


def test_jigsaw_takes_its_budget_out_of_the_edges_share():
    plain = stage_minutes(DEFAULT_STAGES, 20.0)
    assert plain == {f"minutes_{s}": 20.0 * STAGE_SHARES[s] for s in DEFAULT_STAGES}
    mixed = stage_minutes(("jigsaw", *DEFAULT_STAGES), 20.0)
    assert math.isclose(sum(mixed.values()), 20.0)
    assert math.isclose(mixed["minutes_jigsaw"] + mixed["minutes_edges"], plain["minutes_edges"])
    assert mixed["minutes_quickdraw"] == plain["minutes_quickdraw"] and mixed["minutes_jigsaw"] > 0
    assert "jigsaw" not in Config().stages  # opt-in for retrieval.train: two-tower layouts cannot run it


def test_pipeline_stages_drop_a_missing_quickdraw_folder_and_put_jigsaw_first(tmp_path):
    assert pipeline_stages(str(tmp_path)) == DEFAULT_STAGES == ("edges", "quickdraw", "finegrained")
    assert pipeline_stages(str(tmp_path / "absent")) == ("edges", "finegrained")
    assert pipeline_stages("", jigsaw=True) == ("jigsaw", "edges", "finegrained")


def test_jigsaw_stage_runs_before_edges_and_leaves_the_checkpoint_format_alone(tmp_path):
    cfg = tiny_config(tmp_path, run_name="jig", stages=("jigsaw", "edges", "finegrained"), jigsaw_permutations=30)
    run_dir = run(cfg)
    log = pd.read_csv(run_dir / "log.csv").dropna(subset=["loss"])
    assert log["stage"].tolist() == ["jigsaw"] * 3 + ["edges"] * 3 + ["finegrained"] * 3
    assert np.isfinite(log["loss"]).all() and log["loss"].iloc[0] == pytest.approx(math.log(9), abs=0.5)
    plain = create_encoder(arch="mobilenet_v3_small", embed_dim=32, input_size=64).net.state_dict()
    for folder in ("best", "last"):
        assert set(Encoder.load(run_dir / folder).net.state_dict()) == set(plain)
    saved = torch.load(run_dir / "last" / "trainer.pt", weights_only=True)
    assert saved["heads"] == {}  # the jigsaw head left with its stage


def test_jigsaw_refuses_a_two_tower_model(tmp_path):
    cfg = Config(out=tmp_path, run_name="x", stages=("jigsaw",), photo_arch="mobilenet_v3_small")
    with pytest.raises(ValueError, match="jigsaw stage needs one shared trunk"):
        run(cfg)
    assert not (tmp_path / "x").exists()


def test_a_run_cut_off_in_the_jigsaw_stage_resumes_with_its_head(tmp_path):
    base = dict(run_name="jig", stages=("jigsaw",), eval_every=100)
    run_dir = run(tiny_config(tmp_path, **base, max_steps=2))
    saved = torch.load(run_dir / "last" / "trainer.pt", weights_only=True)
    assert set(saved["heads"]) == {"jigsaw"} and "position.weight" in saved["heads"]["jigsaw"]
    state_path = run_dir / "last" / "state.json"
    state_path.write_text(state_path.read_text().replace('"done_stages": [\n    "jigsaw"\n  ]', '"done_stages": []'))
    run(tiny_config(tmp_path, **base, max_steps=4, resume=str(run_dir)))
    log = pd.read_csv(run_dir / "log.csv").dropna(subset=["loss"])
    assert log["stage_step"].tolist() == [1, 2, 3, 4]
