"""The committed Serve config (deploy/serve.yaml) is valid for Ray and builds the deployments we mean.

No cluster is started: Ray's own schema validates the file, and Ray's own builder turns the app
builder's answer into the deployments ``serve deploy`` would run, whose options are checked here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray.serve", reason="ray[serve] is not installed: run `make cluster-venv` (make test does)")

import ray  # noqa: E402
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary  # noqa: E402
from ray.serve._private.build_app import build_app  # noqa: E402
from ray.serve.schema import ServeDeploySchema  # noqa: E402

from retrieval.provenance import PROJECT_ROOT  # noqa: E402
from retrieval.serving.gallery import open_photos  # noqa: E402
from retrieval.serving.index import PhotoIndex  # noqa: E402
from retrieval.serving.serve_ray import REPLICA_ENV, app_builder, main  # noqa: E402
from retrieval.serving.versions import ids_digest  # noqa: E402

SERVE_YAML = PROJECT_ROOT / "deploy" / "serve.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(SERVE_YAML.read_text())


def test_the_committed_serve_config_validates_against_rays_schema(config):
    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    assert app.import_path == "retrieval.serving.serve_ray:app_builder" and app.route_prefix == "/"
    assert app.runtime_env["env_vars"] == REPLICA_ENV, "the file's replica environment is serve_ray.REPLICA_ENV"
    assert not app.deployments, "deployment settings live in ServeConfig (args), not in a second place"
    assert schema.http_options.host == "127.0.0.1", "Serve's HTTP has no authentication: never a public bind"


@pytest.fixture(scope="module")
def built(config, encoder, tmp_path_factory):
    """The file's application built by Ray's builder, its model and gallery swapped for small local ones."""
    folder = tmp_path_factory.mktemp("serve-config")
    encoder.save(folder / "model")
    (app,) = config["applications"]
    local = {"model": str(folder / "model"), "gallery": "procedural:photos=12", "cache_dir": str(folder / "cache")}
    # The documented order: fill the cache from the command line, then deploy (the builder reuses it).
    main(
        ["--prepare-only", "--shards", str(app["args"]["shards"])]
        + [f"--{k.replace('_', '-')}={v}" for k, v in local.items()]
    )
    assert not ray.is_initialized(), "--prepare-only starts no cluster"
    prepared = {p: p.stat().st_mtime_ns for p in (folder / "cache" / "shards").glob("*/*/ids.json")}
    application = call_user_app_builder_with_args_if_necessary(app_builder, app["args"] | local)
    deployments = build_app(application, name=app["name"]).deployments
    assert prepared and {p: p.stat().st_mtime_ns for p in prepared} == prepared, "the builder rewrote the shards"
    return app["args"], {d.name: d for d in deployments}, folder / "cache"


def test_the_config_builds_autoscaling_encoders_shard_replicas_and_ingress_replicas(built):
    args, deployments, _ = built
    assert set(deployments) == {"Ingress", "SketchEncoder"} | {f"Shard{i}" for i in range(args["shards"])}
    encoder = deployments["SketchEncoder"]._deployment_config
    scaling = encoder.autoscaling_config
    assert (scaling.min_replicas, scaling.initial_replicas, scaling.max_replicas) == (
        args["replicas"],
        args["replicas"],
        args["max_replicas"],
    )
    assert scaling.target_ongoing_requests == args["target_ongoing_requests"] <= encoder.max_ongoing_requests
    assert deployments["Ingress"]._deployment_config.num_replicas == args["ingress_replicas"]
    for name, deployment in deployments.items():
        assert deployment._deployment_config.max_queued_requests == args["max_queued_requests"], name
        cpus = {"Ingress": "ingress_cpus", "SketchEncoder": "encoder_cpus"}.get(name, "shard_cpus")
        assert deployment.ray_actor_options["num_cpus"] == args[cpus], name


def test_each_shard_reserves_memory_checks_its_snapshot_and_the_ingress_knows_the_gallerys_ids(built):
    args, deployments, cache = built
    shards = [deployments[f"Shard{i}"] for i in range(args["shards"])]
    folders = [Path(shard.init_args[0]) for shard in shards]
    for shard, folder in zip(shards, folders):
        config = shard._deployment_config
        assert config.num_replicas == args["shard_replicas"]
        assert config.health_check_period_s == args["health_check_period_s"]
        assert shard.ray_actor_options["memory"] > sum(p.stat().st_size for p in folder.iterdir())
        assert folder.is_relative_to(cache / "shards")
    ids = [pid for folder in folders for pid in PhotoIndex.saved_ids(folder)]
    listed = open_photos("procedural:photos=12").ids  # what a front end of this gallery lists, embedding nothing
    assert len(ids) == 12 and sorted(ids) == sorted(listed)
    assert deployments["Ingress"].init_args[4]["ids_digest"] == ids_digest(listed)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"port": 9000}, "retrieval.serving.serve_ray` only"),
        ({"prepare_only": True}, "retrieval.serving.serve_ray` only"),
        ({"replica": 2}, "unknown field"),
        ({"replicas": "two"}, "replicas"),
        ({"replicas": 4, "max_replicas": 2}, "max_replicas \\(2\\) is below replicas"),
        ({"target_ongoing_requests": 0}, "target_ongoing_requests"),
    ],
)
def test_the_app_builder_refuses_bad_settings_before_opening_anything(bad, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        app_builder({"model": str(tmp_path / "no-model"), **bad})
