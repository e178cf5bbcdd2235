"""retrieval.adapt: a tiny real adaptation on procedural photos, its card, bad inputs, the cache key, the app flag."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from retrieval.adapt import run as adapt_run
from retrieval.adapt.cache import cache_key, cached_adaptation
from retrieval.adapt.run import MIN_PHOTOS, AdaptConfig, adapt, photo_hash
from retrieval.data import images
from retrieval.data.images import scan_photo_folder
from retrieval.data.procedural import generate_photo
from retrieval.data.splits import DataSplit
from retrieval.model.checkpoint import CheckpointError
from retrieval.model.encoder import Encoder, create_encoder
from retrieval.model.progress_head import ProgressHead
from retrieval.ui.config import AppConfig

pytestmark = pytest.mark.slow  # adaptation runs and an app with its photo folder

TINY_RUN = {"steps": 2, "minutes": 0, "batch_size": 8, "quickdraw": "", "progress": False}
REHEARSAL = "procedural:photos=6,sketches=1,seed=7"
START_SPLIT = DataSplit("procedural:photos=30", val_fraction=0.2, holdout_fraction=0.2, split_seed=4)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of 10 procedural chair photos, as a person's photo folder would be (PNG files)."""
    folder = tmp_path_factory.mktemp("photos")
    for i in range(10):
        cv2.imwrite(str(folder / f"chair_{i}.png"), cv2.cvtColor(generate_photo(3, i, 96), cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="module")
def start_model(tmp_path_factory):
    """A small real encoder with a progress head (the shipped model's layout), saved as a checkpoint."""
    encoder = create_encoder(input_size=64, embed_dim=32, seed=0)
    state = encoder.sketch_head_state()
    feature_dim = encoder.meta["feature_dim"]
    head = ProgressHead(state["weight"], state["bias"], np.zeros(feature_dim), np.ones(feature_dim), 0.1, hidden=8)
    card = {"data": "test", "split": {**START_SPLIT.record(None), "counts": {}}}
    return encoder.with_progress_head(head).save(tmp_path_factory.mktemp("start") / "model", card=card)


def _config(start_model, photos, out, **kw) -> AdaptConfig:
    return AdaptConfig(
        model=str(start_model), photos=str(photos), out=str(out), pretrain_sketches=REHEARSAL, **{**TINY_RUN, **kw}
    )


def _no_leftovers(out) -> bool:
    return not out.exists() and not list(out.parent.glob(f".{out.name}*"))


def test_a_tiny_adaptation_writes_a_checkpoint_of_the_same_layout_whose_card_names_its_inputs(
    start_model, photos, tmp_path
):
    out = adapt(_config(start_model, photos, tmp_path / "adapted"))
    start, adapted = Encoder.load(start_model), Encoder.load(out)
    card = adapted.meta["card"]["adaptation"]
    assert card["photos"] == {
        "folder": str(photos),
        "count": 10,
        "sha256": photo_hash(scan_photo_folder(photos)[0]),
        "skipped": 0,
    }
    assert card["start_model"]["weights_sha256"] == start.meta["weights_sha256"]
    assert card["steps"] == 2 and card["wall_minutes"] > 0
    assert adapted.card.split == START_SPLIT  # the start model's carve: evaluation defaults to it
    # same architecture, so the per-stroke cost is unchanged; the served (progress) head was trained too
    assert {k: adapted.meta[k] for k in ("arch", "input_size", "embed_dim", "sketch_head")} == {
        k: start.meta[k] for k in ("arch", "input_size", "embed_dim", "sketch_head")
    }
    assert not torch.equal(adapted.progress_head.mlp_out.weight, start.progress_head.mlp_out.weight)
    assert not torch.equal(adapted.net.photo_head.weight, start.net.photo_head.weight)
    assert (out / "log.csv").is_file() and not list(tmp_path.glob(".adapted*"))


def test_each_photo_is_decoded_once_and_a_broken_one_is_skipped_by_name(start_model, photos, tmp_path, monkeypatch):
    folder = tmp_path / "mixed"
    shutil.copytree(photos, folder)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    decoded = []
    read_rgb = images.read_rgb
    monkeypatch.setattr(
        images, "read_rgb", lambda path, *a, **kw: decoded.append(path.name) or read_rgb(path, *a, **kw)
    )
    card = Encoder.load(adapt(_config(start_model, folder, tmp_path / "out"))).meta["card"]["adaptation"]
    assert sorted(decoded) == sorted(p.name for p in folder.iterdir())  # once each: check, hash and bank share it
    assert card["photos"]["count"] == 10 and card["photos"]["skipped"] == 1


def test_an_empty_folder_is_refused_and_nothing_is_written(start_model, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=f"0 readable photo.*at least {MIN_PHOTOS}"):
        adapt(_config(start_model, tmp_path / "empty", tmp_path / "out"))
    assert _no_leftovers(tmp_path / "out")


def test_a_folder_of_unreadable_files_is_refused_naming_one(start_model, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    for i in range(MIN_PHOTOS + 2):
        (folder / f"{i}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"0 readable photo\(s\) \(10 unreadable, e.g. cannot read photo"):
        adapt(_config(start_model, folder, tmp_path / "out"))
    assert _no_leftovers(tmp_path / "out")


def test_too_few_photos_to_form_negatives_are_refused(start_model, photos, tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(photos.iterdir())[:3]:
        shutil.copy(path, few / path.name)
    with pytest.raises(ValueError, match="3 readable photo.*to form negatives"):
        adapt(_config(start_model, few, tmp_path / "out"))


def test_a_start_model_whose_weights_do_not_fit_its_architecture_is_refused(start_model, photos, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(start_model, other)
    meta = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**meta, "arch": "resnet18"}))
    with pytest.raises(CheckpointError, match="not a checkpoint this version can adapt"):
        adapt(_config(other, photos, tmp_path / "out"))
    assert _no_leftovers(tmp_path / "out")


def test_an_existing_output_folder_is_never_overwritten(start_model, photos, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="choose another --out"):
        adapt(_config(start_model, photos, tmp_path / "out"))
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_a_run_cut_off_after_training_leaves_no_output_and_no_work_folder(start_model, photos, tmp_path, monkeypatch):
    train = adapt_run.train_run

    def cut_off(cfg, **kw):
        train(cfg, **kw)
        raise KeyboardInterrupt  # Ctrl-C at the worst moment: the model is trained, nothing renamed yet

    monkeypatch.setattr(adapt_run, "train_run", cut_off)
    with pytest.raises(KeyboardInterrupt):
        adapt(_config(start_model, photos, tmp_path / "out"))
    assert _no_leftovers(tmp_path / "out")


def test_the_command_line_reports_bad_input_as_one_error_line(start_model, tmp_path):
    with pytest.raises(SystemExit, match="^error: --photos .* is not a folder of photos"):
        adapt_run.main(["--model", str(start_model), "--photos", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])


def test_the_cache_key_follows_photo_content_not_location_and_the_budget(start_model, photos, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(photos, moved)
    key = cache_key(start_model, photos, 10)
    assert cache_key(start_model, moved, 10) == key
    assert cache_key(start_model, moved, 5) != key
    image = cv2.imread(str(moved / "chair_0.png"))
    image[0, 0] = 255 - image[0, 0]
    cv2.imwrite(str(moved / "chair_0.png"), image)
    assert cache_key(start_model, moved, 10) != key


def test_the_cache_adapts_once_and_then_reuses_the_folder(start_model, photos, tmp_path, monkeypatch):
    monkeypatch.setattr(AdaptConfig, "__init__", _tiny_defaults(AdaptConfig.__init__))
    first = cached_adaptation(start_model, photos, 0.05, tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert cached_adaptation(start_model, photos, 0.05, tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp


def _tiny_defaults(init):
    def tiny(self, **kw):
        init(self, **{**kw, **{k: v for k, v in TINY_RUN.items() if k != "minutes"}, "pretrain_sketches": REHEARSAL})

    return tiny


def test_the_app_flag_needs_a_photo_folder_and_an_in_process_ranker():
    with pytest.raises(ValueError, match="--adapt-minutes needs --photos"):
        AppConfig(adapt_minutes=5).check()
    AppConfig(adapt_minutes=5, photos="somewhere").check()
    with pytest.raises(ValueError, match="with --serve-url the cluster ranks"):
        AppConfig(adapt_minutes=5, photos="somewhere", serve_url="http://127.0.0.1:8000").check()


def test_the_app_serves_the_adapted_model_of_its_photo_folder(start_model, photos, tmp_path, monkeypatch):
    import app
    from retrieval.ui import server

    launched = []
    monkeypatch.setattr(server, "launch", launched.append)
    monkeypatch.setattr(AdaptConfig, "__init__", _tiny_defaults(AdaptConfig.__init__))
    argv = [
        "--model",
        str(start_model),
        "--photos",
        str(photos),
        "--adapt-minutes",
        "0.05",
        "--cache-dir",
        str(tmp_path),
    ]
    app.main(argv)
    (config,) = launched
    assert config.model == tmp_path / "adapted" / cache_key(start_model, photos, 0.05)
    assert Encoder.load(config.model).meta["card"]["adaptation"]["photos"]["count"] == 10
