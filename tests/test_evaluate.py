"""Evaluation: per-step ranks, one path for the CLI, training validation and precomputed embeddings,
the selection score, and the CLI on a tiny QMUL-layout folder."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from retrieval.data.datasets import open_dataset
from retrieval.data.formats.qmul import write_qmul_npz
from retrieval.data.raster import render
from retrieval.data.sketch import Sketch, point_cuts, step_cuts
from retrieval.evaluation.evaluate import main
from retrieval.evaluation.metrics import SELECTION_METRICS, selection_score, summarize
from retrieval.evaluation.protocol import (
    MissingSplitError,
    embed_steps,
    evaluate_split,
    photo_embeddings,
    ranks_from_embeddings,
    step_shares,
    true_photo_index,
)
from retrieval.train.batches import ValidationSet

METRIC_KEYS = {"A@1", "A@5", "A@10", "m@A", "m@B", "curve", "sketch_less", "n_gallery", "n_sketches", "split", "model"}


def random_sketch(rng: np.random.Generator, n_strokes: int) -> Sketch:
    strokes = []
    for _ in range(n_strokes):
        n = int(rng.integers(5, 20))
        xy = np.cumsum(rng.normal(0, 8, (n, 2)), axis=0) + rng.uniform(60, 190, 2)
        strokes.append(np.column_stack([np.clip(xy, 0, 255), np.zeros(n)]))
    return Sketch(tuple(strokes))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """8 train photos (2 carved to val at fraction 0.25), 2 sketches each, plus 3 test photos."""
    root = tmp_path_factory.mktemp("tiny_qmul")
    (root / "photo").mkdir()
    rng = np.random.default_rng(0)
    arrays = {}
    for split, names in (("train", [f"p{i}" for i in range(8)]), ("test", ["q0", "q1", "q2"])):
        for name in names:
            pixels = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "photo" / f"{name}.png")
            for n in (1, 2):
                arrays[f"/{split}/{name}_{n}"] = random_sketch(rng, int(rng.integers(1, 5)))
    write_qmul_npz(root / "Tiny_Coordinate.npz", arrays)
    return root


def test_ranks_from_embeddings_hand_made():
    photos = np.eye(3, dtype=np.float32)
    s = np.array(
        [
            [[0.0, 1, 0], [1, 0.2, 0]],  # true 0 scores 0: photo 1 ahead, photo 2 tied -> 3; then 1
            [[1.0, 1, 0], [0, 0, 1]],  # true 1 ties photo 0 -> 2; then photo 2 ahead, photo 0 tied -> 3
        ],
        dtype=np.float32,
    )
    ranks = ranks_from_embeddings(s, photos, np.array([0, 1]))
    assert ranks.dtype == np.int64 and ranks.tolist() == [[3, 1], [2, 3]]
    s[1, 1] = np.nan  # a sketch with one step fewer
    padded = ranks_from_embeddings(s, photos, np.array([0, 1]))
    assert padded[0].tolist() == [3, 1] and padded[1, 0] == 2 and np.isnan(padded[1, 1])


@pytest.mark.slow
def test_embed_steps_points_and_strokes(tiny_folder, encoder):
    records = open_dataset(tiny_folder).sketches("test")
    points = embed_steps(encoder, records, "points")
    assert points.shape == (len(records), 17, 32) and np.isfinite(points).all()
    sketch = records[0].sketch
    cut = point_cuts(sketch.num_points)[4]
    single = encoder.embed_sketches(render(sketch, cut, encoder.meta["raster_size"], encoder.meta["line_width"])[None])
    np.testing.assert_allclose(points[0, 4], single[0], atol=1e-5)

    strokes = embed_steps(encoder, records, "strokes")
    most = max(r.sketch.num_strokes for r in records)
    assert strokes.shape == (len(records), most, 32)
    for i, record in enumerate(records):
        assert np.isfinite(strokes[i, : record.sketch.num_strokes]).all()
        assert np.isnan(strokes[i, record.sketch.num_strokes :]).all()
    # The last stroke step and the last point step are both the complete sketch.
    np.testing.assert_allclose(strokes[0, sketch.num_strokes - 1], points[0, -1], atol=1e-5)
    features = embed_steps(encoder, records[:2], "points", output="features")
    assert features.shape == (2, 17, encoder.meta["feature_dim"])


@pytest.mark.slow
def test_evaluate_split_matches_direct_computation(tiny_folder, encoder):
    dataset = open_dataset(tiny_folder, val_fraction=0.25)
    result = evaluate_split(encoder, dataset, "val")
    ranks = result.ranks
    records = dataset.sketches("val")
    ids, photos = photo_embeddings(encoder, dataset, "val")
    assert len(ids) == 2 and ranks.shape == (len(records), 17)
    assert ranks.min() >= 1 and ranks.max() <= len(ids)
    last = encoder.embed_sketches(encoder.render(records[-1].sketch)[None])[0]
    true = ids.index(records[-1].photo_id)
    scores = photos @ last
    assert ranks[-1, -1] == int(np.sum(scores >= scores[true]))
    assert result.summary == summarize(ranks, len(ids), shares=step_shares(records))
    # Precomputed path (what RL uses with a new head) gives the same ranks.
    feats = embed_steps(encoder, records, "points", output="features")
    head = encoder.sketch_head_apply(feats.reshape(-1, feats.shape[-1])).reshape(len(records), 17, -1)
    np.testing.assert_array_equal(ranks_from_embeddings(head, photos, true_photo_index(records, ids)), ranks)


@pytest.mark.slow
@pytest.mark.parametrize("gallery", ["split", "all"])
def test_training_validation_scores_as_the_evaluation_does(tiny_folder, encoder, gallery):
    """ValidationSet renders once and embeds all steps in one batch; every metric, curves and
    sketch-less figure included, must still be that of evaluate_split on the same split and gallery."""
    dataset = open_dataset(tiny_folder, val_fraction=0.25)
    val = ValidationSet.build(dataset, encoder.meta["raster_size"], encoder.meta["line_width"], gallery=gallery)
    expected = evaluate_split(encoder, dataset, "val", gallery=gallery).summary
    assert val.gallery_ids == photo_embeddings(encoder, dataset, "val", gallery=gallery)[0]
    got = val.evaluate(encoder)
    assert got["n_gallery"] == (2 if gallery == "split" else 11)
    assert got == expected  # metrics are functions of integer ranks and point shares: exact


def test_selection_score_is_one_metric_or_the_sum_of_m_at_a_and_m_at_b():
    summary = {"A@1": 40.0, "A@5": 70.0, "A@10": 80.0, "m@A": 85.25, "m@B": 33.5}
    assert selection_score(summary) == 85.25 + 33.5  # RL's default, the value its logs recorded
    assert selection_score(summary, "m@A+m@B") == 118.75
    assert [selection_score(summary, m) for m in SELECTION_METRICS[1:]] == [85.25, 33.5, 40.0, 70.0, 80.0]
    with pytest.raises(ValueError, match="must be one of"):
        selection_score(summary, "mix")


def test_missing_split_is_explained(tiny_folder, encoder):
    dataset = open_dataset(tiny_folder)
    with pytest.raises(MissingSplitError, match="available"):
        evaluate_split(encoder, dataset, "nope")


@pytest.mark.slow
def test_cli_writes_report(tiny_folder, encoder, tmp_path, capsys):
    model = encoder.save(tmp_path / "model", card={"note": "random init"})
    out = tmp_path / "eval"
    assert main(["--data", str(tiny_folder), "--split", "test", "--model", str(model), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == METRIC_KEYS
    assert metrics["n_gallery"] == 3 and metrics["n_sketches"] == 6 and metrics["split"] == "test"
    assert len(metrics["curve"]["progress"]) == 17
    ranks = pd.read_csv(out / "ranks.csv")
    assert len(ranks) == 6 * 17 and set(ranks.columns) >= {"key", "photo_id", "step", "progress", "rank"}
    assert (out / "curves.png").stat().st_size > 1000
    assert "A@1" in capsys.readouterr().out
    # The sketch-less figure, recomputed from ranks.csv and the sketches' own point cuts.
    records = {r.key: r for r in open_dataset(tiny_folder).sketches("test")}
    for k in ("1", "5", "10"):
        shares = []
        for key, rows in ranks.groupby("key"):
            if rows["rank"].iloc[-1] <= int(k):
                first = rows.loc[rows["rank"] <= int(k), "step"].iloc[0]
                sketch = records[key].sketch
                shares.append(100.0 * step_cuts(sketch)[first - 1] / sketch.num_points)
        assert metrics["sketch_less"][k]["n"] == len(shares)
        assert metrics["sketch_less"][k]["share"] == (pytest.approx(np.mean(shares)) if shares else None)

    main(
        ["--data", str(tiny_folder), "--split", "test", "--model", str(model), "--out", str(out), "--steps", "strokes"]
    )
    by_stroke = pd.read_csv(out / "ranks.csv")
    assert len(by_stroke) == sum(r.sketch.num_strokes for r in open_dataset(tiny_folder).sketches("test"))


def test_cli_test_split_absent_exits_nonzero(tmp_path, encoder, capsys):
    root = tmp_path / "train_only"
    (root / "photo").mkdir(parents=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "photo" / "a.png")
    write_qmul_npz(root / "T_Coordinate.npz", {"/train/a_1": random_sketch(rng, 2)})
    model = encoder.save(tmp_path / "model")
    code = main(["--data", str(root), "--split", "test", "--model", str(model), "--out", str(tmp_path / "o")])
    assert code != 0
    assert "no 'test' split" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_cli_on_a_tiny_procedural_dataset(encoder, tmp_path):
    model = encoder.save(tmp_path / "model")
    spec = "procedural:photos=20,sketches=1"
    assert main(["--data", spec, "--split", "test", "--model", str(model), "--out", str(tmp_path / "o")]) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    dataset = open_dataset(spec)
    assert metrics["n_gallery"] == len(dataset.photo_ids("test"))
    assert metrics["n_sketches"] == len(dataset.sketches("test"))
    assert 0.0 <= metrics["m@A"] <= 100.0


def test_gallery_photo_ids_split_or_all():
    from retrieval.data.procedural import ProceduralDataset
    from retrieval.evaluation.protocol import gallery_photo_ids

    data = ProceduralDataset(num_photos=20, sketches_per_photo=1, seed=0)
    union = sorted({pid for name in data.splits() for pid in data.photo_ids(name)})
    assert gallery_photo_ids(data, "val") == data.photo_ids("val")
    assert gallery_photo_ids(data, "val", "all") == union
    assert len(union) == 20 and set(data.photo_ids("val")) < set(union)
    with pytest.raises(ValueError, match="gallery must be"):
        gallery_photo_ids(data, "val", "everything")


def test_cli_without_required_flags_exits_2_and_names_them(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", "procedural", "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2 and "required: --model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # a Literal field: argparse itself refuses the choice
        main(["--data", "procedural", "--model", "m", "--out", "o", "--gallery", "every"])
    assert exit_info.value.code == 2 and "invalid choice: 'every'" in capsys.readouterr().err


def test_the_split_defaults_to_the_model_cards_carve_and_each_flag_given_overrides_it():
    from retrieval.data.splits import DataSplit, SplitMismatchError
    from retrieval.evaluation.evaluate import EvalConfig

    trained = DataSplit("procedural:photos=40", 0.25, 0.2, split_seed=7)
    cfg = EvalConfig(model="m", out="o")
    assert cfg.data_split(trained) == trained  # no flag: the card's data and carve
    on_test = replace(cfg, split="test", split_seed=3)
    assert on_test.data_split(trained) == replace(trained, split_seed=3)  # test photos do not depend on the carve
    other_data = replace(cfg, data="procedural:photos=80")
    assert other_data.data_split(trained) == DataSplit("procedural:photos=80")  # another data: the defaults
    with_data = replace(cfg, data="procedural:photos=40")
    assert with_data.data_split(None) == DataSplit("procedural:photos=40")  # no card record (an untrained model)
    with pytest.raises(SplitMismatchError, match="--data is required"):
        cfg.data_split(None)


def test_judging_val_or_holdout_on_another_carve_of_the_training_data_is_refused():
    from retrieval.data.splits import DataSplit, SplitMismatchError
    from retrieval.evaluation.evaluate import EvalConfig

    trained = DataSplit("procedural:photos=40", 0.25, 0.2, split_seed=7)
    for split in ("val", "holdout"):
        with pytest.raises(SplitMismatchError, match=r"split_seed 7 \(here 3\)"):
            EvalConfig(model="m", out="o", split=split, split_seed=3).data_split(trained)
    assert EvalConfig(model="m", out="o", split_seed=7).data_split(trained) == trained  # the card's own value: fine
