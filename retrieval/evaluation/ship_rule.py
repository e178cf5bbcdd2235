"""Which sketch head ships: the supervised one, unless another beats it on data that selected nothing.

Every RL or control run starts at the supervised head and keeps its best head on a small validation
split; picking the method with the best validation score then ships whichever got luckiest there
(issue 21: a head 3 points of A@1 worse on the test split shipped that way). The rule here turns the
default around: the supervised head ships unless a candidate wins, on a split no head was trained
or selected on, by a margin fixed before the run (``ShipRule.margin`` on ``ShipRule.metric``), with
its paired interval above 0, and without a significant loss on any guard metric. Intervals come from
``retrieval.evaluation.bootstrap.hierarchical_bootstrap`` (photos and seeds resampled, not only
sketches). Ties, and every unclear case, go to the supervised head.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from retrieval.evaluation.bootstrap import hierarchical_bootstrap, paired_runs
from retrieval.evaluation.metrics import HEADLINE_METRICS

BASELINE = "supervised"


@dataclass(frozen=True)
class ShipRule:
    """The rule, fixed before any candidate is scored, and written into the shipped model's card."""

    metric: str = "m@B"
    """the metric a candidate must improve (early retrieval: 1/rank over the drawing)"""
    margin: float = 1.0
    """points by which the candidate's mean must beat the supervised head's on ``metric``"""
    guards: tuple[str, ...] = ("A@1", "A@10", "m@A")
    """metrics on which the candidate's interval must not lie wholly below 0"""
    level: float = 0.95
    """coverage of the bootstrap intervals"""


@dataclass
class ShipDecision:
    """What ships and why: per candidate, its intervals against the supervised head and the verdict."""

    ship: str
    rule: ShipRule
    split: str
    candidates: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"ship": self.ship, "rule": asdict(self.rule), "split": self.split, "candidates": self.candidates}


def judge(rule: ShipRule, intervals: Mapping[str, Mapping[str, float]]) -> tuple[bool, str]:
    """Does one candidate pass? ``intervals`` = ``hierarchical_bootstrap`` output vs the supervised head."""
    main = intervals[rule.metric]
    if main["delta"] < rule.margin:
        return False, f"{rule.metric} {main['delta']:+.2f} is below the margin {rule.margin:+.2f}"
    if main["low"] <= 0:
        return False, f"{rule.metric} interval [{main['low']:+.2f}, {main['high']:+.2f}] reaches 0"
    losses = [g for g in rule.guards if intervals[g]["high"] < 0]
    if losses:
        return False, f"significant loss on {', '.join(losses)}"
    return True, f"{rule.metric} {main['delta']:+.2f} [{main['low']:+.2f}, {main['high']:+.2f}] clears the margin"


def decide(
    rule: ShipRule,
    baseline: list[dict],
    candidates: Mapping[str, list[dict]],
    photo_ids: list[list[str]],
    split: str,
    seed: int = 0,
) -> ShipDecision:
    """Apply ``rule`` to candidates scored on ``split``.

    Args:
        rule: the rule fixed in advance.
        baseline: per run (seed), ``metrics.per_sketch`` of the supervised head; a single entry is
            reused for every candidate seed (the supervised head is one model).
        candidates: ``{name: [per_sketch per seed]}``.
        photo_ids: per run, the photo of each sketch (a single list is reused likewise).
        split: the split the sketches come from (recorded; it must not have selected anything).

    Returns:
        The decision; among passing candidates the one with the highest lower bound ships.
    """
    keys = tuple(dict.fromkeys((rule.metric, *rule.guards, *HEADLINE_METRICS)))
    decision = ShipDecision(BASELINE, rule, split)
    best_low = 0.0
    for name, per_seed in candidates.items():
        runs = len(per_seed)
        base = baseline * runs if len(baseline) == 1 else baseline
        photos = photo_ids * runs if len(photo_ids) == 1 else photo_ids
        intervals = hierarchical_bootstrap(paired_runs(per_seed, base, photos), keys, level=rule.level, seed=seed)
        passed, reason = judge(rule, intervals)
        decision.candidates[name] = {"passed": passed, "reason": reason, "vs_supervised": intervals}
        if passed and intervals[rule.metric]["low"] > best_low:
            decision.ship, best_low = name, intervals[rule.metric]["low"]
    return decision
