"""EarlySketch on Ray Serve: encoder replicas, one deployment per index shard, an HTTP ingress.

    make serve-cluster ARGS="--replicas 2 --shards 2"        # = python -m retrieval.serving.serve_ray ...
    curl -s 127.0.0.1:8000/rank -d '{"sketch": <stroke JSON>, "k": 10, "target_id": null}'

The same per-stroke work as :class:`~retrieval.serving.retriever.Retriever`, spread over processes:

* ``SketchEncoder`` (``--replicas`` processes): :meth:`SketchEmbedder.embed_batch` under Serve's
  ``@serve.batch``. Concurrent strokes of any session that reach one replica share a forward.
  The batch takes what is queued and does not wait for more (``batch_wait_timeout_s`` 0), the
  policy of retrieval/serving/batching.py; ``RankBatcher`` itself is not used in this mode.
* ``Shard0`` .. ``ShardS-1``: each loads its own :class:`PhotoIndex` folder (written by
  :func:`write_shards`) and answers ``target_scores`` / ``search`` (retrieval/serving/shards.py).
* ``Ingress`` (HTTP ``POST /rank``, or the handle method ``rank``): embed -> the target's score
  from its shard -> every shard's top-k and count -> :func:`merge_answers`. It answers the app's
  ``rank`` API dict: ``ids``, ``scores``, ``target_rank``, ``timings_ms``, ``gallery_size``,
  ``batch_size``.

The Gradio front end stays outside Ray and keeps per-session state; it calls this app over HTTP
(``app.py --serve-url``, retrieval/serving/serve_client.py). Only this module imports ray. The local head
binds 127.0.0.1, has no dashboard, and stops with the process (Ctrl-C).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before ray starts: Ray reports usage online unless told not to
import ray  # noqa: E402
from ray import serve  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402

from retrieval.data.formats.stroke_json import StrokePayloadError  # noqa: E402
from retrieval.provenance import DEFAULT_MODEL_DIR, PROJECT_ROOT
from retrieval.serving.index import PhotoIndex, set_faiss_threads  # noqa: E402
from retrieval.serving.shards import ShardAnswer, merge_answers, owner_scores, split_index  # noqa: E402

APP_NAME = "earlysketch"


@dataclass
class ServeConfig:
    """``python -m retrieval.serving.serve_ray``: the retriever on a local Ray Serve cluster (127.0.0.1)."""

    model: Path = DEFAULT_MODEL_DIR
    """checkpoint folder (model.safetensors + model.json), as for app.py --model"""
    gallery: str = ""
    """gallery spec (dataset spec, QMUL folder, photo folder); default: procedural of --gallery-size"""
    gallery_size: int = 1000
    """photos of the default procedural gallery"""
    cache_dir: str = ""
    """gallery and shard cache (default ~/.cache/earlysketch)"""
    replicas: int = 2
    """encoder replicas (processes); each runs --threads torch threads"""
    shards: int = 2
    """index shards, one deployment (process) each, contiguous slices of the gallery"""
    max_batch: int = 8
    """most strokes per encoder forward (@serve.batch max_batch_size), as app.py --batch"""
    batch_wait_ms: float = 0.0
    """how long a replica waits to fill a batch; 0 takes only what is queued (RankBatcher's policy)"""
    threads: int = 1
    """torch / faiss threads per replica"""
    port: int = 8000
    """HTTP port of the Serve proxy on 127.0.0.1"""
    num_cpus: int = 0
    """CPUs the local Ray head announces (0 = all cores)"""
    address: str = "local"
    """"local" starts a fresh Ray head on 127.0.0.1; "auto" joins the cluster of `ray start` on this node"""


# --- deployments -----------------------------------------------------------------------------------
@serve.deployment(name="SketchEncoder", ray_actor_options={"num_cpus": 0})
class SketchEncoder:
    """Validate -> render -> embed, batched across sessions by ``@serve.batch``."""

    def __init__(self, model_dir: str, threads: int, max_batch: int, batch_wait_ms: float) -> None:
        import torch

        from retrieval.model.encoder import Encoder
        from retrieval.serving.retriever import SketchEmbedder  # torch: only the encoder replicas import it

        torch.set_num_threads(max(1, threads))
        # channels_last, as app.py serves it (bench/results/encoder_options.md).
        self.embedder = SketchEmbedder(Encoder.load(model_dir, channels_last=True))
        self.embed.set_max_batch_size(max_batch)
        self.embed.set_batch_wait_timeout_s(batch_wait_ms / 1e3)
        self.embedder.embed_batch([_WARM_UP_SKETCH] * max_batch)  # first strokes fast: shapes warmed
        for size in range(1, max_batch):
            self.embedder.embed_batch([_WARM_UP_SKETCH] * size)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def embed(self, sketches: list[Any]) -> list[dict[str, Any]]:
        batch = await asyncio.to_thread(self.embedder.embed_batch, sketches, "return")
        rows = {i: batch.queries[row] for row, i in enumerate(batch.todo)}
        return [
            {
                "query": rows.get(i),
                "error": batch.failures.get(i),
                "timings_ms": batch.timings_ms,
                "batch_size": len(sketches),
            }
            for i in range(len(sketches))
        ]


@serve.deployment(ray_actor_options={"num_cpus": 0})
class IndexShardDeployment:
    """One :class:`PhotoIndex` folder as a shard (retrieval/serving/shards.py ``LocalShard``)."""

    def __init__(self, folder: str, threads: int) -> None:
        from retrieval.serving.shards import LocalShard

        self.shard = LocalShard(PhotoIndex.load(folder))
        set_faiss_threads(threads)

    def target_scores(self, queries: np.ndarray, target_ids: list[str | None]) -> np.ndarray:
        return self.shard.target_scores(queries, target_ids)

    def search(self, queries: np.ndarray, k: int, target_scores: np.ndarray) -> ShardAnswer:
        return self.shard.search(queries, k, target_scores)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
class Ingress:
    """HTTP ``POST /rank`` and handle method ``rank``: the app's ``rank`` API over the cluster."""

    def __init__(self, encoder: Any, shards: list[Any], n_gallery: int) -> None:
        self.encoder, self.shards, self.n_gallery = encoder, list(shards), int(n_gallery)

    async def rank(self, sketch: Any, k: int = 10, target_id: str | None = None) -> dict[str, Any]:
        """Rank for one stroke-JSON payload. Raises StrokePayloadError / KeyError like Retriever.rank."""
        start = time.perf_counter()
        embedded = await self.encoder.embed.remote(sketch)
        if embedded["error"] is not None:
            raise StrokePayloadError(embedded["error"])
        timings = dict(embedded["timings_ms"])
        if embedded["query"] is None:  # nothing drawn yet
            ids, scores, rank = [], [], None
        else:
            t = time.perf_counter()
            queries, targets = embedded["query"][None, :], [target_id]
            thresholds = np.full(1, np.nan, np.float32)
            if target_id is not None:
                per_shard = await asyncio.gather(*(s.target_scores.remote(queries, targets) for s in self.shards))
                thresholds = owner_scores(per_shard, targets)
            answers = await asyncio.gather(*(s.search.remote(queries, k, thresholds) for s in self.shards))
            merged, merged_ids, ranks = merge_answers(answers, k, targets)
            ids, scores, rank = merged_ids[0], merged[0, : len(merged_ids[0])].astype(float).tolist(), ranks[0]
            timings["search"] = (time.perf_counter() - t) * 1e3
        timings["total"] = (time.perf_counter() - start) * 1e3
        return {
            "ids": ids,
            "scores": scores,
            "target_rank": rank,
            "timings_ms": timings,
            "gallery_size": self.n_gallery,
            "batch_size": embedded["batch_size"],
        }

    async def __call__(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
            if not isinstance(body, dict) or "sketch" not in body:
                raise StrokePayloadError('send {"sketch": <stroke JSON>, "k": 10, "target_id": null}')
            k = body.get("k", 10)
            if not isinstance(k, int) or not 1 <= k <= 1000:
                raise StrokePayloadError(f"k must be an integer between 1 and 1000, got {k!r}")
            return JSONResponse(await self.rank(body["sketch"], k, body.get("target_id")))
        except (StrokePayloadError, ValueError, TypeError) as exc:
            return JSONResponse({"error": f"invalid request: {exc}", "kind": "payload"}, status_code=400)
        except KeyError as exc:
            return JSONResponse({"error": str(exc).strip("\"'"), "kind": "target"}, status_code=404)


_WARM_UP_SKETCH = {"canvas": {"width": 256, "height": 256}, "strokes": [[[10, 10, 0], [200, 180, 50]]]}


# --- building and starting ---------------------------------------------------------------------
def write_shards(index: PhotoIndex, num_shards: int, folder: Path) -> list[Path]:
    """Save ``index`` as ``num_shards`` contiguous :class:`PhotoIndex` folders (reused when present)."""
    folders = [folder / f"shard-{i}-of-{num_shards}" for i in range(num_shards)]
    if all((f / "index.json").exists() for f in folders):
        return folders
    for part, target in zip(split_index(index, num_shards), folders):
        part.save(target)
    return folders


def build_app(model_dir: str | Path, shard_folders: list[Path], n_gallery: int, cfg: ServeConfig) -> Any:
    """The Serve application: ``cfg.replicas`` encoders + one deployment per shard folder + ingress."""
    encoder = SketchEncoder.options(num_replicas=cfg.replicas, max_ongoing_requests=max(16, 2 * cfg.max_batch))
    shards = [
        IndexShardDeployment.options(name=f"Shard{i}").bind(str(folder), cfg.threads)
        for i, folder in enumerate(shard_folders)
    ]
    return Ingress.bind(encoder.bind(str(model_dir), cfg.threads, cfg.max_batch, cfg.batch_wait_ms), shards, n_gallery)


def prepare_shards(cfg: ServeConfig) -> tuple[list[Path], int]:
    """Open (or build and cache) the gallery with the model, and write its shard folders."""
    from retrieval.model.encoder import Encoder
    from retrieval.serving.gallery import default_cache_dir, model_hash, open_gallery

    if not (Path(cfg.model) / "model.safetensors").exists():
        raise FileNotFoundError(f"no model at {cfg.model}: run `make default-model` or pass --model FOLDER")
    encoder = Encoder.load(cfg.model)
    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    gallery = open_gallery(encoder, cfg.gallery or f"procedural:photos={cfg.gallery_size}", cache, progress=True)
    key = hashlib.sha1(f"{gallery.source}|{model_hash(encoder)}|{len(gallery.index)}".encode()).hexdigest()[:16]
    return write_shards(gallery.index, cfg.shards, cache / "shards" / key), len(gallery.index)


def start_local_cluster(num_cpus: int = 0, port: int = 8000, address: str = "local") -> None:
    """A fresh local Ray head on 127.0.0.1 (no dashboard), or the running cluster at ``address``, and
    Serve's HTTP proxy on 127.0.0.1:``port``."""
    env = {
        "env_vars": {
            "PYTHONPATH": str(PROJECT_ROOT),
            "OMP_NUM_THREADS": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_OFFLINE": "1",
        }
    }
    if address != "local":
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


def deploy(cfg: ServeConfig, shard_folders: list[Path], n_gallery: int) -> float:
    """Run the application on the started cluster; returns seconds until every replica was ready."""
    start = time.perf_counter()
    serve.run(build_app(cfg.model, shard_folders, n_gallery, cfg), name=APP_NAME, route_prefix="/")
    return time.perf_counter() - start


def stop_local_cluster() -> None:
    serve.shutdown()
    ray.shutdown()


def main(argv: list[str] | None = None) -> None:
    from retrieval.cli import parse_config

    cfg = parse_config(ServeConfig, argv, __doc__)
    start = time.perf_counter()
    folders, n = prepare_shards(cfg)
    start_local_cluster(cfg.num_cpus, cfg.port, cfg.address)
    # After ray.init, which installs its own fatal-signal handler: SIGTERM and SIGINT (even from a
    # non-interactive shell) stop Serve and Ray cleanly, with no agent process left behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        deploy_s = deploy(cfg, folders, n)
        print(
            f"EarlySketch on Ray Serve: POST http://127.0.0.1:{cfg.port}/rank ({n:,} photos in {cfg.shards} "
            f"shard(s), {cfg.replicas} encoder replica(s); ready in {time.perf_counter() - start:.1f} s, "
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
