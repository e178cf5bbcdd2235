"""A user study's plan: its configuration file and the deterministic trial order of each participant."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class StudyConfig:
    """What a study asks of each participant (loaded from JSON, see assets/study_example.json).

    Attributes:
        name: Study name, written into every log record.
        targets: Explicit target photo ids (used in this order before shuffling); empty = random.
        random_targets: With no explicit targets, draw this many distinct photos from the gallery.
        num_trials: Trials per session (targets cycle if fewer than this).
        seed: Seed of the target draw and of the trial order.
        per_participant_order: Mix the participant id into the order seed (counterbalancing).
        found_k: The target counts as found once its rank is <= this.
        time_limit_s: Seconds per trial before it ends as timed out (0 = no limit).
        show_k: Photos shown in the result grid.
        conditions: Condition labels, assigned to trials round-robin and logged with each record.
        instructions: Text shown before the first trial.
    """

    name: str = "study"
    targets: tuple[str, ...] = ()
    random_targets: int = 5
    num_trials: int = 5
    seed: int = 0
    per_participant_order: bool = True
    found_k: int = 1
    time_limit_s: float = 60.0
    show_k: int = 12
    conditions: tuple[str, ...] = ("default",)
    instructions: str = "Draw the photo shown on the left. Stop when it appears among the results."

    def __post_init__(self) -> None:
        problems = []
        if self.num_trials < 1:
            problems.append("num_trials must be >= 1")
        if not self.targets and self.random_targets < 1:
            problems.append("give 'targets' (photo ids) or 'random_targets' >= 1")
        if self.found_k < 1 or self.show_k < 1:
            problems.append("found_k and show_k must be >= 1")
        if self.time_limit_s < 0 or not math.isfinite(self.time_limit_s):
            problems.append("time_limit_s must be a finite number >= 0 (0 = no limit)")
        if not self.conditions:
            problems.append("conditions must name at least one condition")
        if problems:
            raise ValueError("invalid study config: " + "; ".join(problems))

    @classmethod
    def load(cls, path: str | Path) -> StudyConfig:
        """Read a JSON study config; unknown keys are an error (they are usually typos)."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown study config keys {unknown}; known keys: {sorted(known)}")
        for key in ("targets", "conditions"):
            if key in data:
                data[key] = tuple(str(v) for v in data[key])
        return cls(**data)


@dataclass(frozen=True)
class TrialPlan:
    index: int
    target_id: str
    condition: str


def _stable_seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def plan_trials(config: StudyConfig, gallery_ids: list[str], participant: str) -> list[TrialPlan]:
    """The trials of one session: targets (explicit or drawn), order and conditions; deterministic."""
    known = set(gallery_ids)
    if config.targets:
        missing = [t for t in config.targets if t not in known]
        if missing:
            raise ValueError(f"study targets not in the gallery: {missing[:5]}; use ids of the gallery photos")
        pool = list(config.targets)
    else:
        draw = np.random.default_rng(config.seed)
        count = min(config.random_targets, len(gallery_ids))
        pool = [gallery_ids[i] for i in sorted(draw.choice(len(gallery_ids), size=count, replace=False))]
    targets = [pool[i % len(pool)] for i in range(config.num_trials)]
    order_seed = _stable_seed(config.seed, participant) if config.per_participant_order else config.seed
    np.random.default_rng(order_seed).shuffle(targets)
    conditions = config.conditions
    return [TrialPlan(i, t, conditions[i % len(conditions)]) for i, t in enumerate(targets)]
