"""Versions of a deployed gallery: one snapshot id on every answer, so one stroke never mixes two.

A snapshot is ``<encoder hash>-<gallery content hash>``: the weights that embedded the photos
(``gallery.model_hash``) and the photo ids with their embeddings, in order. Shards carry the
snapshot they were written for; a front end refuses shards (and answers) of another snapshot.
Caches key on the content hash, so a gallery whose files changed is never served from a stale
shard folder even when its photo count did not change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np


def content_hash(ids: Sequence[str], vectors: np.ndarray) -> str:
    """Hash of the photo ids and their float32 embeddings, in order (16 hex digits)."""
    digest = hashlib.sha256(json.dumps(list(ids)).encode())
    for start in range(0, len(vectors), 1 << 16):  # chunks: a memory map is never read whole
        digest.update(np.ascontiguousarray(vectors[start : start + (1 << 16)], np.float32).tobytes())
    return digest.hexdigest()[:16]


def snapshot_id(encoder_hash: str, gallery_hash: str) -> str:
    """``<encoder hash>-<content hash>``: what answers carry and shards must match."""
    return f"{encoder_hash or 'unknown-encoder'}-{gallery_hash}"


def encoder_hash_of(snapshot: str) -> str:
    """The encoder hash a :func:`snapshot_id` starts with (the content hash after the last ``-``)."""
    return snapshot.rpartition("-")[0]


def ids_digest(ids: Iterable[str]) -> str:
    """Hash of a gallery's photo ids as a set (16 hex digits): what a front end that lists the photos
    itself, without embedding them, compares with the cluster's (``GET /info``). Order-free, since a
    folder's listing order and its index's row order may differ."""
    return hashlib.sha256(json.dumps(sorted(ids)).encode()).hexdigest()[:16]


class SnapshotMismatch(RuntimeError):
    """A shard or encoder serves another snapshot than the one the front end was started for."""


SNAPSHOT_FILE = "snapshot.json"


def write_snapshot(folder: Path, snapshot: str, part: str) -> None:
    """Record in a shard folder the gallery snapshot it belongs to and its own content hash."""
    (Path(folder) / SNAPSHOT_FILE).write_text(json.dumps({"snapshot": snapshot, "part": part}))


def read_snapshot(folder: Path) -> str:
    """The gallery snapshot a shard folder was written for ("" when it predates snapshots)."""
    try:
        return str(json.loads((Path(folder) / SNAPSHOT_FILE).read_text())["snapshot"])
    except (OSError, ValueError, KeyError):
        return ""
