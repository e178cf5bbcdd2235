"""retrieval.model.card: the typed model card; every card on disk (assets/model's, written before the
type) reads into it and writes back unchanged, and a saved card round-trips through Encoder.save/load."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from retrieval.data.splits import DataSplit
from retrieval.model.card import ModelCard, Provenance
from retrieval.model.checkpoint import META_FILE
from retrieval.model.encoder import Encoder, create_encoder
from retrieval.model.spec import ModelSpec
from retrieval.provenance import DEFAULT_MODEL_DIR


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.safetensors").exists(), reason="no assets/model in this checkout")
def test_the_shipped_model_card_loads_into_the_type_and_writes_back_unchanged():
    on_disk = json.loads((DEFAULT_MODEL_DIR / META_FILE).read_text())["card"]
    card = Encoder.load(DEFAULT_MODEL_DIR).card
    assert isinstance(card.spec, ModelSpec) and card.spec.arch == "mobilenet_v3_small"
    assert card.split is None  # written before split provenance: no carve to default to or vouch for
    assert card.provenance.data == on_disk["data"] and card.provenance.seed == on_disk["seed"]
    assert card.details["sketch_head"] == on_disk["sketch_head"] and "supervised_card" in card.details
    assert card.to_json() == on_disk


def test_a_card_round_trips_through_save_and_load(tmp_path):
    encoder = create_encoder(input_size=64, embed_dim=32, seed=0, calibrate=False)
    split = DataSplit("procedural:photos=40", 0.25, 0.2, split_seed=7)
    card = ModelCard(
        spec=encoder.spec,
        split=split,
        split_counts={"val": {"photos": 9, "sketches": 18}},
        provenance=Provenance(data=split.data, dataset="Procedural-v1-s0", seed=3, config={"lr": 0.001}),
        details={"val": {"m@B": 12.5}},
    )
    loaded = Encoder.load(encoder.save(tmp_path / "m", card)).card
    assert loaded == card
    assert json.loads((tmp_path / "m" / META_FILE).read_text())["card"]["split"] == {
        **split.record(None),
        "counts": {"val": {"photos": 9, "sketches": 18}},
    }


def test_entries_go_to_provenance_or_details_by_name_and_the_split_is_set_apart():
    card = ModelCard(spec=ModelSpec())
    stamped = card.with_entries(created_utc="2026-12-03T20:00:00+00:00", stage="finegrained")
    assert stamped.provenance.created_utc == "2026-12-03T20:00:00+00:00" and stamped.details == {"stage": "finegrained"}
    assert ModelCard.from_json(ModelSpec(), stamped.to_json()) == stamped
    with pytest.raises(ValueError, match="replace"):
        card.with_entries(split={})
    assert replace(card, split=DataSplit()).to_json()["split"]["split_seed"] == 0


def test_a_malformed_card_is_refused_before_anything_is_written(tmp_path):
    encoder = create_encoder(input_size=64, embed_dim=32, seed=0, calibrate=False)
    with pytest.raises(ValueError, match="split seed is its own setting"):
        encoder.save(tmp_path / "m", {"split": {**DataSplit().record(None), "split_seed": -1}})
    with pytest.raises(ValueError, match="JSON object"):
        ModelCard.from_json(ModelSpec(), ["not", "a", "card"])
    assert not (tmp_path / "m").exists()
