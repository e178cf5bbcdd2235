"""Index shards: the photo index split across processes or machines, with the target rank certified.

A shard holds a contiguous slice of the gallery and answers two calls:

* ``target_vector(photo_id)`` -> the float32 embedding of a photo it owns, else None. The front
  end caches it (:class:`TargetVectors`), so the target's score survives its owner being slow or
  down, and computes ``s_target`` itself with the canonical kernel (exact_rank.py).
* ``search(queries, k, thresholds, cap)`` -> :class:`ShardAnswer`: its own top-``k`` and, per
  query, its certified ``#(score >= thresholds[b])`` (a :class:`TargetRank`; None where NaN).

The merged rank is the project's rule (``true_ranks`` below: ties count against the query) split
into a sum, ``rank = sum over shards of #(score >= s_target)``: the target is counted once, by its
own shard, as the ``1 +`` of the definition. Every score compared is canonical, so the target
always counts itself. The merged top-k is every shard's top-k sorted by score; exactly tied
photos keep shard order (faiss itself does not order ties).

Fail soft: :meth:`ShardedIndex.search_and_rank` waits at most ``deadline_s`` for the shards. A
shard that misses it, raises, or answers for another snapshot is left out: the top-k comes from
the others, the rank becomes the interval ``[sum answered lower, sum answered upper + sum missing
sizes]`` (``exact`` False), and ``missing`` names the shards.
``retrieval/serving/serve_ray.py`` runs the same calls against Ray Serve shard deployments and
merges with the same functions.

Example:
    >>> sharded = ShardedIndex.split(index, 4, deadline_s=0.2)   # 4 in-process shards of one PhotoIndex
    >>> answer = sharded.rank(queries, 10, ["proc-v1-s0-17", None])
    >>> answer.ranks[0].exact, answer.missing
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from retrieval.serving.exact_rank import DEFAULT_RANK_CAP, TargetRank, canonical_scores, pad_rows, with_target_in_top_k
from retrieval.serving.index import PhotoIndex, _as_matrix


class ShardAnswer(NamedTuple):
    """One shard's answer to :meth:`IndexShard.search`."""

    scores: np.ndarray  # (B, k') float32, best first
    ids: list[list[str]]  # (B, <=k') photo ids of those scores
    counts: list[TargetRank | None]  # per query: photos of this shard scoring >= its threshold
    snapshot: str = ""  # the gallery snapshot the shard serves


class IndexShard(Protocol):
    """What the merge needs from a shard (in-process :class:`LocalShard`, or a Ray deployment)."""

    snapshot: str

    def __len__(self) -> int: ...

    def target_vector(self, photo_id: str) -> np.ndarray | None: ...

    def search(self, queries: np.ndarray, k: int, thresholds: np.ndarray, cap: int | None) -> ShardAnswer: ...


class LocalShard:
    """A :class:`PhotoIndex` as a shard, serving the gallery snapshot ``snapshot``."""

    def __init__(self, index: PhotoIndex, snapshot: str = "") -> None:
        self.index = index
        self.snapshot = snapshot

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, photo_id: str) -> bool:
        return photo_id in self.index

    @property
    def ids(self) -> list[str]:
        return self.index.ids

    def target_vector(self, photo_id: str) -> np.ndarray | None:
        vectors, _, row_of = self.index._snapshot
        row = row_of.get(photo_id)
        return None if row is None else np.array(vectors[row], np.float32)

    def search(self, queries: np.ndarray, k: int, thresholds: np.ndarray, cap: int | None = None) -> ShardAnswer:
        q = _as_matrix(queries, self.index.dim)
        thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if len(thresholds) != len(q):
            raise ValueError(f"got {len(q)} queries but {len(thresholds)} thresholds; pass NaN for no target")
        scores, ids = self.index.search(q, k)
        counts = [
            self.index.count_at_or_above(q[b], float(t), cap) if np.isfinite(t) else None
            for b, t in enumerate(thresholds)
        ]
        return ShardAnswer(scores, ids, counts, self.snapshot)


class TargetVectors:
    """LRU cache of target embeddings at the front end: the target's score needs no round-trip to
    its owner after the first stroke, and survives the owner missing a deadline."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, photo_id: str) -> np.ndarray | None:
        with self._lock:
            vector = self._cache.get(photo_id)
            if vector is not None:
                self._cache.move_to_end(photo_id)
            return vector

    def put(self, photo_id: str, vector: np.ndarray) -> None:
        with self._lock:
            self._cache[photo_id] = np.asarray(vector, np.float32)
            self._cache.move_to_end(photo_id)
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)


def owner_vector(found: Sequence[np.ndarray | None], photo_id: str, complete: bool) -> np.ndarray | None:
    """The target's vector from the shards' ``target_vector`` answers (exactly one owner).

    Raises:
        KeyError: every shard answered and none owns it (not in the gallery), or several do.
    """
    owners = [v for v in found if v is not None]
    if len(owners) > 1:
        raise KeyError(f"photo ids on more than one shard: {[photo_id]}; split the gallery without overlap")
    if not owners and complete:
        raise KeyError(f"photo ids not in the index: {[photo_id]}")
    return owners[0] if owners else None


def thresholds_for(queries: np.ndarray, targets: Sequence[np.ndarray | None]) -> np.ndarray:
    """Canonical target score per query (NaN where no target or its vector is unknown)."""
    return np.array(
        [np.nan if v is None else canonical_scores(q, v[None, :])[0] for q, v in zip(queries, targets)], np.float64
    )


@dataclass
class MergedAnswer:
    """The sharded search's answer: top-k, certified ranks, and what was left out."""

    scores: np.ndarray  # (B, k') float32
    ids: list[list[str]]
    ranks: list[TargetRank | None]  # None: no target, or its owner unreachable and its vector unknown
    missing: list[int] = field(default_factory=list)  # shards left out (deadline, error, other snapshot)
    snapshot: str = ""

    @property
    def partial(self) -> bool:
        return bool(self.missing)


def merge_answers(
    answers: Sequence[ShardAnswer | None],
    sizes: Sequence[int],
    k: int,
    target_ids: Sequence[str | None],
    thresholds: np.ndarray,
    snapshot: str = "",
) -> MergedAnswer:
    """Merged top-``k`` and certified ranks from every shard's answer (None = shard left out).

    Shards are in gallery order; a stable sort keeps tied photos in that order. A left-out shard
    widens every rank's upper bound by its size.
    """
    batch = len(target_ids)
    answered = [a for a in answers if a is not None]
    missing = [i for i, a in enumerate(answers) if a is None]
    unanswered = int(sum(sizes[i] for i in missing))
    rows, merged_ids = [], []
    ranks: list[TargetRank | None] = []
    for b in range(batch):
        scores = np.concatenate([a.scores[b, : len(a.ids[b])] for a in answered] or [np.zeros(0, np.float32)])
        ids = [pid for a in answered for pid in a.ids[b]]
        order = np.argsort(-scores.astype(np.float32), kind="stable")[:k]
        row, row_ids = scores[order].astype(np.float32), [ids[i] for i in order]
        rank = None
        if target_ids[b] is not None and np.isfinite(thresholds[b]):
            rank = TargetRank.of(0)
            for a in answered:
                rank = rank + a.counts[b]
            rank = rank.widened(unanswered)
            row, row_ids = with_target_in_top_k(row, row_ids, target_ids[b], thresholds[b], rank, k)
        ranks.append(rank)
        rows.append(row)
        merged_ids.append(row_ids)
    return MergedAnswer(pad_rows(rows), merged_ids, ranks, missing, snapshot)


class ShardedIndex:
    """Several shards behind the interface :class:`~retrieval.serving.retriever.Retriever` searches through.

    In-process reference of the distributed index: same merge as the Ray Serve app, no network.
    Shards must hold disjoint photo ids, be listed in gallery order and serve one snapshot.

    Args:
        deadline_s: how long one fan-out waits for the shards (None: forever). A stroke makes one
            fan-out, two when a target's vector is not cached yet.
        rank_cap: ranks above this are intervals (:data:`DEFAULT_RANK_CAP`).
    """

    def __init__(
        self, shards: Sequence[IndexShard], deadline_s: float | None = None, rank_cap: int | None = DEFAULT_RANK_CAP
    ) -> None:
        if not shards:
            raise ValueError("a ShardedIndex needs at least one shard")
        dims = {s.index.dim for s in shards if isinstance(s, LocalShard)}
        if len(dims) > 1:
            raise ValueError(f"shards hold embeddings of different sizes {sorted(dims)}; build them with one model")
        snapshots = {s.snapshot for s in shards}
        if len(snapshots) != 1:
            raise ValueError(f"shards serve different gallery snapshots {sorted(snapshots)}; redeploy them together")
        self.shards = list(shards)
        self.snapshot = snapshots.pop()
        self.dim = dims.pop() if dims else None
        self.deadline_s, self.rank_cap = deadline_s, rank_cap
        self.sizes = [len(s) for s in self.shards]
        self.targets = TargetVectors()
        # One pool per shard: a hung shard ties up only its own threads, never another shard's.
        self._pools = [ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"shard{i}") for i in range(len(shards))]

    @classmethod
    def split(cls, index: PhotoIndex, num_shards: int, kind: str | None = None, **kwargs) -> ShardedIndex:
        """``index``'s photos in ``num_shards`` contiguous slices (each built as ``kind``, default the
        index's requested kind)."""
        return cls([LocalShard(part) for part in split_index(index, num_shards, kind)], **kwargs)

    def __len__(self) -> int:
        return sum(self.sizes)

    def __contains__(self, photo_id: str) -> bool:
        return any(photo_id in s for s in self.shards)

    @property
    def ids(self) -> list[str]:
        return [pid for s in self.shards for pid in s.ids]

    def _fan_out(self, call: Callable[[IndexShard], object]) -> tuple[list[object | None], list[int]]:
        """``call(shard)`` on every shard at once: the answers (None where missing) and the shards
        that raised or missed the deadline."""
        futures: list[Future] = [pool.submit(call, s) for pool, s in zip(self._pools, self.shards)]
        wait(futures, timeout=self.deadline_s)
        out: list[object | None] = []
        missing: list[int] = []
        for i, f in enumerate(futures):
            if f.done() and f.exception() is None:
                out.append(f.result())
            else:
                f.cancel()
                out.append(None)
                missing.append(i)
        return out, missing

    def target_vectors(self, target_ids: Sequence[str | None]) -> list[np.ndarray | None]:
        """Each target's vector: from the cache, else asked of every shard (then cached)."""
        vectors: list[np.ndarray | None] = []
        for target in target_ids:
            vector = None if target is None else self.targets.get(target)
            if target is not None and vector is None:
                found, missing = self._fan_out(lambda s, t=target: s.target_vector(t))
                vector = owner_vector(found, target, complete=not missing)
                if vector is not None:
                    self.targets.put(target, vector)
            vectors.append(vector)
        return vectors

    def rank(
        self, queries: np.ndarray, k: int, target_ids: Sequence[str | None], rank_cap: int | None = None
    ) -> MergedAnswer:
        """Top-``k`` per query and each target's certified rank, within the deadline (``rank_cap``
        defaults to the index's)."""
        q = _as_matrix(queries, self.dim)
        targets = list(target_ids)
        if len(targets) != len(q):
            raise ValueError(f"got {len(q)} queries but {len(targets)} target ids")
        thresholds = thresholds_for(q, self.target_vectors(targets))
        cap = self.rank_cap if rank_cap is None else rank_cap
        answers, _ = self._fan_out(lambda s: s.search(q, k, thresholds, cap))
        answers = [a if a is not None and a.snapshot == self.snapshot else None for a in answers]
        return merge_answers(answers, self.sizes, k, targets, thresholds, self.snapshot)

    def search_and_rank(
        self, queries: np.ndarray, k: int, target_ids: Sequence[str | None], rank_cap: int | None = None
    ) -> tuple[np.ndarray, list[list[str]], list[TargetRank | None]]:
        """:meth:`rank` as the tuple :class:`PhotoIndex` answers (``Retriever``'s seam)."""
        answer = self.rank(queries, k, target_ids, rank_cap)
        return answer.scores, answer.ids, answer.ranks

    def close(self) -> None:
        for pool in self._pools:
            pool.shutdown(wait=False, cancel_futures=True)


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
