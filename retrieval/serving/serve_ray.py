"""EarlySketch on Ray Serve: encoder replicas, one deployment per index shard, an HTTP ingress.

    make serve-cluster ARGS="--replicas 2 --shards 2"        # = python -m retrieval.serving.serve_ray ...
    curl -s 127.0.0.1:8000/rank -d '{"sketch": <stroke JSON>, "k": 10, "target_id": null}'
    serve deploy deploy/serve.yaml                          # a running, token-authenticated cluster

``make serve-cluster`` is the laptop path: a fresh local head, ``serve.run``, Ctrl-C stops it all.
On a cluster, deploy declaratively: deploy/serve.yaml names :func:`app_builder` with
:class:`ServeConfig` fields as ``args``, and Serve keeps the app at that config (docs/scaling.md).

The same per-stroke work as :class:`~retrieval.serving.retriever.Retriever`, spread over processes
(retrieval/serving/serve_deployments.py):

* ``SketchEncoder`` (``--replicas`` processes, autoscaled up to ``--max-replicas`` when set):
  :meth:`SketchEmbedder.embed_batch` under Serve's
  ``@serve.batch``. Concurrent strokes of any session that reach one replica share a forward.
  The batch takes what is queued and does not wait for more (``batch_wait_timeout_s`` 0), the
  policy of retrieval/serving/batching.py; ``RankBatcher`` itself is not used in this mode.
* ``Shard0`` .. ``ShardS-1`` (``--shard-replicas`` processes each): each loads its own
  :class:`PhotoIndex` folder (written by :func:`write_shards`) and answers ``target_vector`` /
  ``search`` (retrieval/serving/shards.py). ``check_health`` fails when the loaded snapshot is not
  the deployed one, so Serve replaces the replica.
* ``Ingress`` (``--ingress-replicas``; HTTP ``POST /rank``, or the handle method ``rank``): embed -> the target's vector
  (cached) -> every shard's top-k and certified count, each within ``--deadline-ms`` ->
  :func:`merge_answers`. It answers the app's ``rank`` API dict: ``ids``, ``scores``,
  ``target_rank``, ``rank_exact``, ``rank_bounds``, ``partial``, ``snapshot``, ``timings_ms``,
  ``gallery_size``, ``batch_size``. Bodies over ``--max-body-bytes`` get 413 before parsing;
  past ``max_queued_requests`` Serve answers 503 (backpressure). ``GET /info`` answers the
  ``snapshot``, ``gallery_size`` and ``ids_digest`` a front end checks its photos against.

Joining a running cluster (``--address auto``) requires Ray token authentication
(``RAY_AUTH_MODE=token`` and a token; see docs/scaling.md): an unauthenticated Ray cluster runs
any code sent to it.

The Gradio front end stays outside Ray and keeps per-session state; it calls this app over HTTP
(``app.py --serve-url``, retrieval/serving/serve_client.py). Only this module and serve_deployments.py
import ray. The local head
binds 127.0.0.1, has no dashboard, and stops with the process (Ctrl-C).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before ray starts: Ray reports usage online unless told not to
import ray  # noqa: E402
from ray import serve  # noqa: E402
from ray.serve import Application  # noqa: E402

from retrieval.cli import config_from_mapping  # noqa: E402
from retrieval.provenance import PROJECT_ROOT  # noqa: E402
from retrieval.serving.index import PhotoIndex  # noqa: E402
from retrieval.serving.ray_setup import (  # noqa: E402
    ServeConfig,
    encoder_options,
    ingress_options,
    prepare_shards,
    require_token_auth,
    shard_options,
)
from retrieval.serving.serve_deployments import IndexShardDeployment, Ingress, SketchEncoder  # noqa: E402
from retrieval.serving.versions import ids_digest  # noqa: E402

APP_NAME = "earlysketch"


# --- building and starting ---------------------------------------------------------------------
def build_app(model_dir: str | Path, shard_folders: list[Path], snapshot: str, cfg: ServeConfig) -> Application:
    """The Serve application: encoders (``cfg.replicas``, autoscaling up to ``cfg.max_replicas``), a
    deployment of ``cfg.shard_replicas`` replicas per shard folder, and ``cfg.ingress_replicas``
    ingress replicas, each with the options retrieval/serving/ray_setup.py derives from ``cfg``."""
    cfg.check()
    shards = [
        IndexShardDeployment.options(**shard_options(cfg, i, folder)).bind(str(folder), cfg.threads, snapshot)
        for i, folder in enumerate(shard_folders)
    ]
    shard_ids = [PhotoIndex.saved_ids(folder) for folder in shard_folders]  # ids only: the vectors stay on disk
    ingress_cfg = {
        "deadline_ms": cfg.deadline_ms,
        "max_body_bytes": cfg.max_body_bytes,
        "ids_digest": ids_digest(pid for ids in shard_ids for pid in ids),
    }
    encoder = SketchEncoder.options(**encoder_options(cfg))
    encoder_app = encoder.bind(str(model_dir), cfg.threads, cfg.max_batch, cfg.batch_wait_ms)
    sizes = [len(ids) for ids in shard_ids]
    return Ingress.options(**ingress_options(cfg)).bind(encoder_app, shards, sizes, snapshot, ingress_cfg)


# Settings of this module's command line only: a Serve config sets the proxy in http_options, and
# the cluster exists already.
COMMAND_LINE_ONLY = ("port", "num_cpus", "address", "prepare_only")


def app_builder(args: dict[str, Any]) -> Application:
    """The application for Ray's CLI, from :class:`ServeConfig` fields given as ``args``:

        serve deploy deploy/serve.yaml                     # import_path: retrieval.serving.serve_ray:app_builder
        serve run retrieval.serving.serve_ray:app_builder shards=4 max_replicas=8

    Opens the gallery with the model and writes (or reuses, by snapshot) its shard folders on the
    node that builds the app, as ``make serve-cluster`` does; every shard replica must see those
    folders (``cache_dir`` on storage shared by the nodes).

    Raises:
        ValueError: an unknown or ill-typed setting, or one that belongs to the local launcher.
    """
    local = sorted(set(args) & set(COMMAND_LINE_ONLY))
    if local:
        raise ValueError(f"{', '.join(local)}: settings of `python -m retrieval.serving.serve_ray` only, not app args")
    cfg = config_from_mapping(ServeConfig, args, "app_builder args")
    cfg.check()
    folders, snapshot = prepare_shards(cfg, cfg.shards)
    return build_app(cfg.model, folders, snapshot, cfg)


# What every replica's process starts with: no BLAS oversubscription, nothing phoned home.
REPLICA_ENV = {"OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}


def start_local_cluster(num_cpus: int = 0, port: int = 8000, address: str = "local") -> None:
    """A fresh local Ray head on 127.0.0.1 (no dashboard), or the running cluster at ``address``, and
    Serve's HTTP proxy on 127.0.0.1:``port``."""
    env = {"env_vars": {"PYTHONPATH": str(PROJECT_ROOT), **REPLICA_ENV}}
    if address != "local":
        require_token_auth()  # before connecting: refuse an unauthenticated cluster
        ray.init(address=address, runtime_env=env, logging_level="WARNING", log_to_driver=False)
    else:
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            object_store_memory=256 * 2**20,
            logging_level="WARNING",
            log_to_driver=False,
            runtime_env=env,
        )
    serve.start(http_options={"host": "127.0.0.1", "port": port})


def deploy(cfg: ServeConfig, shard_folders: list[Path], snapshot: str) -> float:
    """Run the application on the started cluster; returns seconds until every replica was ready."""
    start = time.perf_counter()
    serve.run(build_app(cfg.model, shard_folders, snapshot, cfg), name=APP_NAME, route_prefix="/")
    return time.perf_counter() - start


def stop_local_cluster() -> None:
    serve.shutdown()
    ray.shutdown()


def main(argv: list[str] | None = None) -> None:
    from retrieval.cli import parse_config

    cfg = parse_config(ServeConfig, argv, __doc__, validate=ServeConfig.check)
    start = time.perf_counter()
    folders, snapshot = prepare_shards(cfg, cfg.shards)
    n = sum(len(PhotoIndex.saved_ids(f)) for f in folders)
    if cfg.prepare_only:
        print(
            f"{n:,} photos of snapshot {snapshot} in {cfg.shards} shard folder(s) under {folders[0].parent}", flush=True
        )
        return
    start_local_cluster(cfg.num_cpus, cfg.port, cfg.address)
    # After ray.init, which installs its own fatal-signal handler: SIGTERM and SIGINT (even from a
    # non-interactive shell) stop Serve and Ray cleanly, with no agent process left behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        deploy_s = deploy(cfg, folders, snapshot)
        print(
            f"EarlySketch on Ray Serve: POST http://127.0.0.1:{cfg.port}/rank ({n:,} photos in {cfg.shards} "
            f"shard(s) x {cfg.shard_replicas}, {cfg.replicas} encoder replica(s), snapshot {snapshot}; ready in {time.perf_counter() - start:.1f} s, "
            f"deploy {deploy_s:.1f} s). Front end: app.py --serve-url http://127.0.0.1:{cfg.port}. Ctrl-C stops.",
            flush=True,
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop_local_cluster()


if __name__ == "__main__":
    main()
