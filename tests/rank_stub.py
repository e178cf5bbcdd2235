"""What the study session reads of a ranking (``RankResult``), for tests whose ranker is a stand-in."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RankResultStub:
    ids: list
    scores: list
    target_rank: int | None
    timings_ms: dict
    rank_exact: bool = True
    rank_bounds: tuple[int, int] | None = None
    snapshot: str = ""
