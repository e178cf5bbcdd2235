"""What a Ray Serve deployment is made from, without Ray: its settings (:class:`ServeConfig`) and the
options of each deployment they make, token authentication, and the shard folders of a gallery snapshot.

Kept apart from serve_ray.py (which imports ray) so they are checked and tested in isolation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.serving.index import PhotoIndex
from retrieval.serving.serving_config import ServingConfig
from retrieval.serving.shards import split_index
from retrieval.serving.versions import read_snapshot, write_snapshot


@dataclass
class ServeConfig(ServingConfig):
    """``python -m retrieval.serving.serve_ray``: the retriever on a local Ray Serve cluster (127.0.0.1)."""

    replicas: int = 2
    """encoder replicas (processes); each runs --threads torch threads"""
    shards: int = 2
    """index shards, one deployment (process) each, contiguous slices of the gallery"""
    max_batch: int = 8
    """most strokes per encoder forward (@serve.batch max_batch_size), as app.py --batch"""
    batch_wait_ms: float = 0.0
    """how long a replica waits to fill a batch; 0 takes only what is queued (RankBatcher's policy)"""
    port: int = 8000
    """HTTP port of the Serve proxy on 127.0.0.1"""
    num_cpus: int = 0
    """CPUs the local Ray head announces (0 = all cores)"""
    address: str = "local"
    """"local" starts a fresh Ray head on 127.0.0.1; "auto" joins the cluster of `ray start` on this node
    (token authentication required: docs/scaling.md)"""
    shard_replicas: int = 2
    """processes per index shard: a restarting replica does not fail the strokes"""
    deadline_ms: float = 250.0
    """how long the ingress waits for each shard fan-out; late shards make a flagged partial answer"""
    max_body_bytes: int = 262_144
    """largest POST /rank body; bigger ones get 413 before parsing"""
    max_queued_requests: int = 64
    """strokes queued per deployment before Serve answers 503"""
    ingress_replicas: int = 1
    """HTTP ingress replicas (processes); Serve's proxies spread requests over them, each caches target vectors"""
    max_replicas: int = 0
    """autoscale encoder replicas between --replicas and this many with the load (Serve autoscaling); 0 = fixed"""
    target_ongoing_requests: float = 2.0
    """strokes in flight per encoder replica the autoscaler aims for (in flight = strokes/s x seconds each)"""
    health_check_period_s: float = 5.0
    """how often Serve asks each shard replica whether it still holds the deployed snapshot"""
    encoder_cpus: float = 0.5
    """CPUs each encoder replica reserves, so Ray places replicas by capacity (whole cores on a real cluster)"""
    shard_cpus: float = 0.2
    """CPUs each shard replica reserves (defaults: 2 encoders, 2 shards x 2 and the ingress fit a 2-core head)"""
    ingress_cpus: float = 0.1
    """CPUs each ingress replica reserves"""
    prepare_only: bool = False
    """write the gallery's shard folders (embedding what the cache lacks) and exit: run before `serve deploy`"""

    def check(self) -> None:
        """Raises ``ValueError`` naming the setting when the deployments could not be built from it."""
        for name in ("replicas", "shards", "shard_replicas", "ingress_replicas", "max_batch", "max_queued_requests"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_replicas and self.max_replicas < self.replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) is below replicas ({self.replicas}): raise it or use 0"
            )
        if not 0 < self.target_ongoing_requests <= encoder_max_ongoing(self):
            limit = encoder_max_ongoing(self)
            raise ValueError(f"target_ongoing_requests must be in (0, {limit}], got {self.target_ongoing_requests}")
        if self.deadline_ms <= 0 or self.health_check_period_s <= 0:
            raise ValueError("deadline_ms and health_check_period_s must be positive")


def encoder_max_ongoing(cfg: ServeConfig) -> int:
    """Strokes one encoder replica takes at once: room for two full batches (one running, one filling)."""
    return max(16, 2 * cfg.max_batch)


def encoder_options(cfg: ServeConfig) -> dict[str, Any]:
    """``SketchEncoder.options(...)``: fixed ``replicas``, or autoscaling from ``replicas`` up to ``max_replicas``."""
    options: dict[str, Any] = {
        "max_ongoing_requests": encoder_max_ongoing(cfg),
        "max_queued_requests": cfg.max_queued_requests,
        "ray_actor_options": {"num_cpus": cfg.encoder_cpus},
    }
    if not cfg.max_replicas:
        return options | {"num_replicas": cfg.replicas}
    autoscaling = {
        "min_replicas": cfg.replicas,
        "initial_replicas": cfg.replicas,
        "max_replicas": cfg.max_replicas,
        "target_ongoing_requests": cfg.target_ongoing_requests,
    }
    return options | {"autoscaling_config": autoscaling}


def shard_options(cfg: ServeConfig, index: int, folder: Path) -> dict[str, Any]:
    """``IndexShardDeployment.options(...)`` of shard ``index``: its replicas, CPUs, memory and health check."""
    return {
        "name": f"Shard{index}",
        "num_replicas": cfg.shard_replicas,
        "max_queued_requests": cfg.max_queued_requests,
        "health_check_period_s": cfg.health_check_period_s,
        "ray_actor_options": {"num_cpus": cfg.shard_cpus, "memory": shard_memory_bytes(folder)},
    }


def ingress_options(cfg: ServeConfig) -> dict[str, Any]:
    """``Ingress.options(...)``: its replicas and CPUs, and the queue bound past which Serve answers 503."""
    return {
        "num_replicas": cfg.ingress_replicas,
        "max_queued_requests": cfg.max_queued_requests,
        "ray_actor_options": {"num_cpus": cfg.ingress_cpus},
    }


TOKEN_AUTH_HOWTO = """\
joining a running Ray cluster (--address auto) needs Ray token authentication: an unauthenticated
cluster runs any code anyone who reaches it sends. On every node, before `ray start`:
    export RAY_AUTH_MODE=token
    ray get-auth-token --generate          # once; writes ~/.ray/auth_token (or set RAY_AUTH_TOKEN_PATH)
    ray start --head --node-ip-address 127.0.0.1 --port 6379 --disable-usage-stats
then run this command with the same RAY_AUTH_MODE and token (docs/scaling.md, "Cluster security")."""


def require_token_auth(env: Mapping[str, str] | None = None, home: Path | None = None) -> str:
    """Where the Ray token comes from; raises ``PermissionError`` with the setup steps when token
    authentication is off or no token is available (Ray 2.60 reads ``RAY_AUTH_MODE``,
    ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``)."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    if env.get("RAY_AUTH_MODE", "").lower() != "token":
        raise PermissionError(
            f"RAY_AUTH_MODE is {env.get('RAY_AUTH_MODE', 'unset')!r}, not 'token'.\n{TOKEN_AUTH_HOWTO}"
        )
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    path = Path(env["RAY_AUTH_TOKEN_PATH"]) if env.get("RAY_AUTH_TOKEN_PATH") else home / ".ray" / "auth_token"
    try:
        if path.read_text().strip():
            return str(path)
    except OSError:
        pass
    raise PermissionError(f"RAY_AUTH_MODE=token but no token at {path}.\n{TOKEN_AUTH_HOWTO}")


def shard_memory_bytes(folder: Path, overhead: float = 1.5) -> int:
    """Memory a shard replica requests: its files on disk (vectors + faiss index) times ``overhead``
    (numpy + faiss copies and list bounds), so Ray does not place more shards on a node than fit."""
    size = sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())
    return int(size * overhead) + 64 * 2**20


def write_shards(index: PhotoIndex, num_shards: int, folder: Path, snapshot: str = "") -> list[Path]:
    """Save ``index`` as ``num_shards`` contiguous :class:`PhotoIndex` folders, each recording the
    gallery ``snapshot`` (reused when present and of that snapshot)."""
    folders = [folder / f"shard-{i}-of-{num_shards}" for i in range(num_shards)]
    if all((f / "index.json").exists() and read_snapshot(f) == snapshot for f in folders):
        return folders
    for part, target in zip(split_index(index, num_shards), folders):
        part.save(target)
        write_snapshot(target, snapshot, part.content_hash())
    return folders


def prepare_shards(cfg: ServingConfig, num_shards: int) -> tuple[list[Path], str]:
    """Open (or build and cache) the gallery with the model, and write its shard folders, keyed by
    the gallery snapshot (encoder + content hash): changed photos never reuse stale shards."""
    from retrieval.model.encoder import Encoder
    from retrieval.serving.gallery import open_gallery

    if not (Path(cfg.model) / "model.safetensors").exists():
        raise FileNotFoundError(f"no model at {cfg.model}: run `make default-model` or pass --model FOLDER")
    encoder = Encoder.load(cfg.model)
    cache = cfg.cache_path()
    gallery = open_gallery(encoder, cfg.gallery_spec(), cache, progress=True)
    snapshot = gallery.snapshot
    return write_shards(gallery.index, num_shards, cache / "shards" / snapshot, snapshot), snapshot
