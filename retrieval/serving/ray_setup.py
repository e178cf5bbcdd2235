"""What a Ray Serve deployment is made from, without Ray: token authentication, per-deployment
resources, and the shard folders of a gallery snapshot.

Kept apart from serve_ray.py (which imports ray) so they are checked and tested in isolation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class ClusterResources:
    """CPUs each replica reserves, so Ray places replicas by capacity instead of piling them on a node.

    The defaults fit 2 encoder replicas, 2 shards x 2 replicas and the ingress on a 2-core head
    (2 x 0.5 + 4 x 0.2 + 0.1 = 1.9 CPUs); on a bigger cluster raise them to whole cores.
    """

    encoder_cpus: float = 0.5
    shard_cpus: float = 0.2
    ingress_cpus: float = 0.1


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
