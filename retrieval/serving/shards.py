"""Index shards: the photo index split across processes or machines, with the target rank kept exact.

A shard holds a contiguous slice of the gallery and answers two calls:

* ``target_scores(queries, target_ids)`` -> ``(B,)`` float32: the score of each query's target
  when the target lives on this shard, NaN otherwise. Computed from the same score row the shard
  counts with, so the target always counts itself.
* ``search(queries, k, target_scores)`` -> ``(scores, ids, count_at_or_above)``: its own top-``k``
  and, per query, how many of its photos score ``>= target_scores[b]`` (0 where NaN).

The merged rank is the project's rule (``metrics.true_ranks``: ties count against the query)
split into a sum, ``rank = sum over shards of #(score >= s_target)``: the target is counted once,
by its own shard, as the ``1 +`` of the definition. The merged top-k is every shard's top-k sorted
by score; exactly tied photos keep shard order (faiss itself does not order ties).

Two phases per stroke: the owner of the target gives its score, then every shard searches and
counts. :class:`ShardedIndex` runs them in-process; ``retrieval/serving/serve_ray.py`` runs the same two
phases against Ray Serve shard deployments and merges with the same functions.

Example:
    >>> sharded = ShardedIndex.split(index, 4)                 # 4 in-process shards of one PhotoIndex
    >>> scores, ids, ranks = sharded.search_and_rank(queries, 10, ["proc-v1-s0-17", None])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np

from retrieval.serving.index import PhotoIndex, _as_matrix


class ShardAnswer(NamedTuple):
    """One shard's answer to :meth:`IndexShard.search`."""

    scores: np.ndarray  # (B, k') float32, best first
    ids: list[list[str]]  # (B, <=k') photo ids of those scores
    count_at_or_above: np.ndarray  # (B,) int64: photos of this shard scoring >= the query's target score


class IndexShard(Protocol):
    """What the merge needs from a shard (in-process :class:`LocalShard`, or a Ray deployment)."""

    def target_scores(self, queries: np.ndarray, target_ids: Sequence[str | None]) -> np.ndarray: ...

    def search(self, queries: np.ndarray, k: int, target_scores: np.ndarray) -> ShardAnswer: ...


class LocalShard:
    """A :class:`PhotoIndex` as a shard. Score rows come from the same ``q @ vectors.T`` as
    :meth:`PhotoIndex.rank_of`, so one shard gives bit-identical ranks to the unsharded index."""

    def __init__(self, index: PhotoIndex) -> None:
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, photo_id: str) -> bool:
        return photo_id in self.index

    @property
    def ids(self) -> list[str]:
        return self.index.ids

    def _score_row(self, vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
        return (query[None, :] @ vectors.T)[0]  # exactly PhotoIndex.ranks_of's matmul, one query at a time

    def target_scores(self, queries: np.ndarray, target_ids: Sequence[str | None]) -> np.ndarray:
        q = _as_matrix(queries, self.index.dim)
        if len(target_ids) != len(q):
            raise ValueError(f"got {len(q)} queries but {len(target_ids)} target ids")
        vectors, _, row_of = self.index._snapshot
        out = np.full(len(q), np.nan, np.float32)
        for b, target in enumerate(target_ids):
            if target is not None and target in row_of:
                out[b] = self._score_row(vectors, q[b])[row_of[target]]
        return out

    def search(self, queries: np.ndarray, k: int, target_scores: np.ndarray) -> ShardAnswer:
        q = _as_matrix(queries, self.index.dim)
        thresholds = np.asarray(target_scores, dtype=np.float32).reshape(-1)
        if len(thresholds) != len(q):
            raise ValueError(f"got {len(q)} queries but {len(thresholds)} target scores; pass NaN for no target")
        scores, ids = self.index.search(q, k)
        vectors = self.index._snapshot[0]
        counts = np.zeros(len(q), np.int64)
        for b in np.flatnonzero(np.isfinite(thresholds)):
            counts[b] = int((self._score_row(vectors, q[b]) >= thresholds[b]).sum())
        return ShardAnswer(scores, ids, counts)


def owner_scores(per_shard: Sequence[np.ndarray], target_ids: Sequence[str | None]) -> np.ndarray:
    """Each query's target score from the shards' ``target_scores`` answers (exactly one owner each).

    Raises:
        KeyError: a target is on no shard (not in the gallery), or on several (ids must be unique).
    """
    stacked = np.stack([np.asarray(s, dtype=np.float32) for s in per_shard])  # (S, B)
    owners = np.isfinite(stacked).sum(axis=0)
    missing = [t for t, n in zip(target_ids, owners) if t is not None and n == 0]
    if missing:
        raise KeyError(f"photo ids not in the index: {missing[:5]}")
    repeated = [t for t, n in zip(target_ids, owners) if n > 1]
    if repeated:
        raise KeyError(f"photo ids on more than one shard: {repeated[:5]}; split the gallery without overlap")
    best = np.where(np.isfinite(stacked), stacked, -np.inf).max(axis=0)
    return np.where(owners > 0, best, np.nan).astype(np.float32)


def merge_answers(
    answers: Sequence[ShardAnswer], k: int, target_ids: Sequence[str | None]
) -> tuple[np.ndarray, list[list[str]], list[int | None]]:
    """Merged top-``k`` (scores ``(B, k')``, ids) and exact target ranks from every shard's answer.

    Shards are in gallery order; a stable sort keeps tied photos in that order.
    """
    batch = len(target_ids)
    merged_ids: list[list[str]] = []
    rows = []
    for b in range(batch):
        scores = np.concatenate([a.scores[b, : len(a.ids[b])] for a in answers]).astype(np.float32)
        ids = [pid for a in answers for pid in a.ids[b]]
        order = np.argsort(-scores, kind="stable")[:k]
        rows.append(scores[order])
        merged_ids.append([ids[i] for i in order])
    # Rows can be shorter than k (an IVF shard may find fewer hits): pad like faiss does.
    merged = np.full((batch, max((len(r) for r in rows), default=0)), -np.finfo(np.float32).max, np.float32)
    for b, row in enumerate(rows):
        merged[b, : len(row)] = row
    counts = np.sum([a.count_at_or_above for a in answers], axis=0) if answers else np.zeros(batch, np.int64)
    ranks = [None if t is None else int(counts[b]) for b, t in enumerate(target_ids)]
    return merged, merged_ids, ranks


class ShardedIndex:
    """Several shards behind the interface :class:`~retrieval.serving.retriever.Retriever` searches through.

    In-process reference of the distributed index: same merge as the Ray Serve app, no network.
    Shards must hold disjoint photo ids and be listed in gallery order.
    """

    def __init__(self, shards: Sequence[LocalShard]) -> None:
        if not shards:
            raise ValueError("a ShardedIndex needs at least one shard")
        dims = {s.index.dim for s in shards}
        if len(dims) != 1:
            raise ValueError(f"shards hold embeddings of different sizes {sorted(dims)}; build them with one model")
        self.shards = list(shards)
        self.dim = dims.pop()

    @classmethod
    def split(cls, index: PhotoIndex, num_shards: int, kind: str | None = None) -> ShardedIndex:
        """``index``'s photos in ``num_shards`` contiguous slices (each built as ``kind``, default the
        index's requested kind)."""
        return cls([LocalShard(part) for part in split_index(index, num_shards, kind)])

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)

    def __contains__(self, photo_id: str) -> bool:
        return any(photo_id in s for s in self.shards)

    @property
    def ids(self) -> list[str]:
        return [pid for s in self.shards for pid in s.ids]

    def search_and_rank(
        self, queries: np.ndarray, k: int, target_ids: Sequence[str | None]
    ) -> tuple[np.ndarray, list[list[str]], list[int | None]]:
        """Top-``k`` per query and the exact rank of each query's target (None where none)."""
        q = _as_matrix(queries, self.dim)
        targets = list(target_ids)
        if any(t is not None for t in targets):
            thresholds = owner_scores([s.target_scores(q, targets) for s in self.shards], targets)
        else:
            thresholds = np.full(len(q), np.nan, np.float32)
        return merge_answers([s.search(q, k, thresholds) for s in self.shards], k, targets)


def split_index(index: PhotoIndex, num_shards: int, kind: str | None = None) -> list[PhotoIndex]:
    """``index``'s photos as ``num_shards`` contiguous, near-equal :class:`PhotoIndex` slices."""
    n = len(index)
    if not 1 <= num_shards <= max(1, n):
        raise ValueError(f"num_shards must be between 1 and the gallery size {n}, got {num_shards}")
    bounds = np.linspace(0, n, num_shards + 1).astype(np.int64)
    vectors, ids = index.vectors, index.ids
    return [
        PhotoIndex.build(vectors[a:b], ids[a:b], kind or index.requested_kind, index.params)
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
