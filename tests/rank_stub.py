"""What the study session reads of a ranking (``RankResult``), for tests whose ranker is a stand-in."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RankResultStub:
    ids: list
    scores: list
    target_rank: int | None
    timings_ms: dict
