"""A local Ray cluster whose encoder is not the one that embedded its gallery refuses every stroke.

The case of a rolling update caught half way: shards and ingress deployed for one snapshot, encoder
replicas of another model. No answer may mix them: each stroke is HTTP 503 ``version`` (the client
may retry once the update finished), never a ranking. Its own module: one more small cluster.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray.serve", reason="ray[serve] is not installed: run `make cluster-venv` (make test does)")

from harness.api_client import free_port  # noqa: E402
from retrieval.data.formats.stroke_json import to_stroke_json  # noqa: E402
from retrieval.model.encoder import create_encoder  # noqa: E402
from retrieval.serving.gallery import open_gallery  # noqa: E402
from retrieval.serving.ray_setup import write_shards  # noqa: E402
from retrieval.serving.serve_client import ServeRanker  # noqa: E402
from retrieval.serving.serve_ray import ServeConfig, deploy, start_local_cluster, stop_local_cluster  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]
GALLERY = "procedural:photos=12,seed=2,sketches=1"


@pytest.fixture(scope="module")
def mixed(encoder, tmp_path_factory):
    """(client, a stroke payload, a photo id, the gallery's snapshot) of a cluster whose encoder is another model."""
    from retrieval.data.datasets import open_dataset

    folder = tmp_path_factory.mktemp("mixed")
    gallery = open_gallery(encoder, GALLERY, folder / "cache", progress=False)  # embedded by the old model
    shards = write_shards(gallery.index, 1, folder / "shards", gallery.snapshot)
    newer = create_encoder(input_size=encoder.meta["input_size"], embed_dim=encoder.meta["embed_dim"], seed=9)
    newer.save(folder / "newer-model")  # what the encoder replicas load: same shape, other weights
    cfg = ServeConfig(
        model=folder / "newer-model",
        replicas=1,
        shards=1,
        shard_replicas=1,
        max_batch=2,
        port=free_port(),
        deadline_ms=5_000,
    )
    start_local_cluster(num_cpus=2, port=cfg.port)
    try:
        deploy(cfg, shards, gallery.snapshot)
        sketch = open_dataset(GALLERY).sketches("train")[0].sketch
        ranker = ServeRanker(f"http://127.0.0.1:{cfg.port}")
        yield ranker, json.dumps(to_stroke_json(sketch)), gallery.index.ids[3], gallery.snapshot
        ranker.close()
    finally:
        stop_local_cluster()


def test_strokes_are_refused_as_a_version_mismatch_never_ranked(mixed):
    ranker, payload, photo_id, snapshot = mixed
    for target in (None, photo_id):
        answer = ranker._client.post(f"{ranker.url}/rank", json={"sketch": payload, "k": 5, "target_id": target})
        body = answer.json()
        assert answer.status_code == 503 and body["kind"] == "version" and "ids" not in body
        assert snapshot in body["error"] and "did not embed" in body["error"]
    with pytest.raises(RuntimeError, match="HTTP 503"):
        ranker.rank(payload, 5)
    assert ranker.info()["snapshot"] == snapshot, "the cluster still says which snapshot it serves"
