"""What one ranking answers, in Python and in JSON: :class:`RankResult` and the ``k`` every rank API accepts.

One home for the rank response: the in-process :class:`~retrieval.serving.retriever.Retriever`
returns it, the app's ``rank`` API and the Serve app's ``POST /rank`` send :meth:`RankResult.to_json`,
and their clients (``serve_client``, ``harness.api_client``) read it back with :meth:`RankResult.from_json`.
Free of torch and faiss, so the Serve ingress imports it without loading a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_K = 1000  # the most photos one rank request may ask for (every rank API: the app's and the Serve app's)
SHARED_TIMINGS = ("queue",)  # timings that depend on other sessions' requests: diagnostics only


def check_k(k: object) -> int:
    """``k`` of a rank request: an ``int`` in ``1..MAX_K``; ``True`` is refused though Python counts it an int."""
    if type(k) is not int or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer between 1 and {MAX_K}, got {str(k)[:20]!r}")
    return k


def proven_rank(target_rank: int | None, rank_exact: bool = True, rank_bounds: Any = None) -> float:
    """The rank an answer proves: its rank when exact, else the upper end of its certified interval
    (``inf`` without one); NaN without a rank. "Found in the top k" and "first entry into the top k"
    go by this, so an estimate (above the exact-rank cap, or shards that missed their deadline)
    never ends a trial as found nor counts as an entry."""
    if target_rank is None:
        return float("nan")
    if rank_exact:
        return float(target_rank)
    return float(rank_bounds[1]) if rank_bounds is not None else float("inf")


@dataclass(frozen=True)
class RankResult:
    """Ranking of the gallery for one (partial) sketch.

    Attributes:
        ids: top-k photo ids, best first.
        scores: their cosine similarities.
        target_rank: 1-based rank of the target photo (ties count against), or None; exact when
            ``rank_exact``, else an estimate inside ``rank_bounds``.
        timings_ms: milliseconds per stage: ``validate``, ``render``, ``encode``, ``search``,
            ``total``. In :meth:`Retriever.rank_batch` they are the whole batch's stages.
        n_gallery: photos ranked against.
        error: why this item was not ranked (only from ``rank_batch(..., errors="return")``).
        batch_size: sketches encoded in the same forward as this one.
        rank_exact: False when the rank is above the cap (retrieval/serving/exact_rank.py) or some
            shards missed their deadline; then ``rank_bounds`` holds the certified interval.
        rank_bounds: ``(lower, upper)`` of the target's rank (equal when exact), or None.
        snapshot: the gallery snapshot ranked against (encoder hash + gallery content hash).
    """

    ids: list[str]
    scores: list[float]
    target_rank: int | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    n_gallery: int = 0
    error: str | None = None
    batch_size: int = 1
    rank_exact: bool = True
    rank_bounds: tuple[int, int] | None = None
    snapshot: str = ""

    def to_json(self, *, diagnostics: bool = True) -> dict[str, Any]:
        """The rank answer in plain JSON types: the app's ``rank`` API and the Serve app's ``POST /rank``.

        Without ``diagnostics`` nothing that depends on other sessions' requests is sent (the batch
        size, the queue wait): a public endpoint must not show what other people are doing.
        """
        answer: dict[str, Any] = {
            "ids": [str(i) for i in self.ids],
            "scores": [float(s) for s in self.scores],
            "target_rank": None if self.target_rank is None else int(self.target_rank),
            "rank_exact": bool(self.rank_exact),
            "rank_bounds": None if self.rank_bounds is None else [int(b) for b in self.rank_bounds],
            "gallery_size": int(self.n_gallery),
            "snapshot": self.snapshot,
            "timings_ms": {n: float(v) for n, v in self.timings_ms.items() if diagnostics or n not in SHARED_TIMINGS},
        }
        if diagnostics:
            answer["batch_size"] = int(self.batch_size)
        return answer

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> RankResult:
        """The :class:`RankResult` of a :meth:`to_json` answer; ``KeyError`` / ``TypeError`` / ``ValueError``
        name what is malformed. A Serve answer's ``partial`` (some shard missed its deadline) makes
        the rank inexact; an answer without diagnostics reads as a batch of one."""
        bounds = body.get("rank_bounds")
        target_rank = body["target_rank"]
        return cls(
            ids=[str(i) for i in body["ids"]],
            scores=[float(s) for s in body["scores"]],
            target_rank=None if target_rank is None else int(target_rank),
            timings_ms={str(n): float(v) for n, v in dict(body["timings_ms"]).items()},
            n_gallery=int(body["gallery_size"]),
            batch_size=int(body.get("batch_size", 1)),
            rank_exact=bool(body.get("rank_exact", True)) and not body.get("partial", False),
            rank_bounds=None if bounds is None else (int(bounds[0]), int(bounds[1])),
            snapshot=str(body.get("snapshot", "")),
        )
