"""A user study's plan: its configuration file and the deterministic trial order of each participant.

Conditions, their assignment to trials and the counterbalanced order: :mod:`retrieval.study.conditions`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.study.conditions import (
    ASSIGNMENTS,
    COUNTERBALANCE,
    INHERITED_KEYS,
    Condition,
    balanced_latin_square,
    condition_schedule,
    latin_row,
    resolve_condition,
    stable_seed,
)


@dataclass(frozen=True)
class StudyConfig:
    """What a study asks of each participant (loaded from JSON, see assets/study_example.json).

    The per-trial settings (``model``, ``feedback``, ``show_k``, ``show_rank``, ``found_k``,
    ``time_limit_s``) set here are the defaults of every condition; a condition overrides them.

    Attributes:
        name: Study name, written into every log record.
        targets: Explicit target photo ids (used in this order before shuffling); empty = random.
        random_targets: With no explicit targets, draw this many distinct photos from the gallery.
        num_trials: Trials per session (targets cycle if fewer than this).
        seed: Seed of the target draw, of the trial order and of the ``hash`` counterbalancing.
        per_participant_order: Mix the participant id into the target order seed.
        model: Default key of ``models`` that ranks ("" = the app's ``--model``).
        feedback: Default feedback mode (see ``retrieval.study.conditions.FEEDBACK_MODES``).
        found_k: The target counts as found once its rank is <= this.
        time_limit_s: Seconds per trial before it ends as timed out (0 = no limit).
        show_k: Photos shown in the result grid.
        show_rank: Show the target's rank and the rank curve.
        models: ``{key: checkpoint folder}`` the conditions may name; each is loaded once at start.
        conditions: Condition names (all settings default) or objects ``{"name": ..., <settings>}``.
        assignment: ``within_interleaved``, ``within_blocked`` or ``between`` (one condition per participant).
        counterbalance: ``participant_number`` or ``hash``: which Latin-square row a participant gets.
        instructions: Text shown before the first trial.
    """

    name: str = "study"
    targets: tuple[str, ...] = ()
    random_targets: int = 5
    num_trials: int = 5
    seed: int = 0
    per_participant_order: bool = True
    model: str = ""
    feedback: str = "every_stroke"
    found_k: int = 1
    time_limit_s: float = 60.0
    show_k: int = 12
    show_rank: bool = True
    models: dict[str, str] = field(default_factory=dict)
    conditions: tuple[Condition, ...] = ("default",)
    assignment: str = "within_interleaved"
    counterbalance: str = "hash"
    instructions: str = "Draw the photo shown on the left. Stop when it appears among the results."

    def __post_init__(self) -> None:
        defaults = {key: getattr(self, key) for key in INHERITED_KEYS}
        problems = Condition(name="(study defaults)", **defaults).problems("study config")
        if problems:
            raise ValueError("invalid study config: " + "; ".join(problems))
        entries = (self.conditions,) if isinstance(self.conditions, str | dict) else self.conditions
        resolved = tuple(resolve_condition(e, defaults, f"conditions[{i}]") for i, e in enumerate(entries))
        object.__setattr__(self, "conditions", resolved)
        object.__setattr__(self, "targets", tuple(str(t) for t in self.targets))
        object.__setattr__(self, "models", {str(k): str(v) for k, v in dict(self.models).items()})
        problems = self._problems()
        if problems:
            raise ValueError("invalid study config: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        problems = []
        if self.num_trials < 1:
            problems.append("num_trials must be >= 1")
        if not self.targets and self.random_targets < 1:
            problems.append("give 'targets' (photo ids) or 'random_targets' >= 1")
        if not self.conditions:
            problems.append("conditions must name at least one condition")
        names = [c.name for c in self.conditions]
        if len(set(names)) != len(names):
            problems.append(f"condition names must differ, got {names}")
        for i, condition in enumerate(self.conditions):
            problems += condition.problems(f"conditions[{i}]")
            if condition.model and condition.model not in self.models:
                known = sorted(self.models) or "none declared"
                problems.append(
                    f"conditions[{i}].model is {condition.model!r}: not a key of 'models' ({known}); "
                    "declare it in 'models' or leave it empty for the app's --model"
                )
        if self.assignment not in ASSIGNMENTS:
            problems.append(f"assignment is {self.assignment!r}; allowed: {', '.join(ASSIGNMENTS)}")
        elif self.assignment != "between" and self.num_trials % len(self.conditions):
            problems.append(
                f"num_trials ({self.num_trials}) must be a multiple of the {len(self.conditions)} conditions "
                f"with assignment {self.assignment!r}, so each participant meets each condition equally often"
            )
        if self.counterbalance not in COUNTERBALANCE:
            problems.append(f"counterbalance is {self.counterbalance!r}; allowed: {', '.join(COUNTERBALANCE)}")
        return problems

    @classmethod
    def load(cls, path: str | Path) -> StudyConfig:
        """Read a JSON study config; unknown keys are an error (they are usually typos)."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a study config is a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown study config keys {unknown}; known keys: {sorted(known)}")
        if not isinstance(data.get("models", {}), dict):
            raise ValueError(f'{path}: \'models\' maps a key to a checkpoint folder, e.g. {{"rl": "runs/rl/model"}}')
        for key in ("targets", "conditions"):
            if key in data:
                data[key] = tuple(data[key]) if isinstance(data[key], list) else data[key]
        try:
            return cls(**data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def models_used(self) -> dict[str, str]:
        """``{key: folder}`` of the models the conditions name ("" is the app's own)."""
        return {c.model: self.models[c.model] for c in self.conditions if c.model}

    def as_record(self) -> dict[str, Any]:
        """The config as plain JSON values (for the log's ``session_start``)."""
        record = {key: getattr(self, key) for key in self.__dataclass_fields__}
        record["conditions"] = [c.as_record() for c in self.conditions]
        return record


@dataclass(frozen=True)
class TrialPlan:
    """One trial: its target, its condition and where that condition sits in the participant's order."""

    index: int
    target_id: str
    condition: Condition
    condition_position: int = 0  # 0-based position of the condition in ``condition_order``
    condition_order: tuple[str, ...] = ()  # this participant's Latin-square row, as condition names
    latin_row: int = 0

    def log_fields(self) -> dict[str, Any]:
        """Fields every record of this trial carries (the analysis checks the balance from them)."""
        return {
            "trial": self.index,
            "condition": self.condition.name,
            "condition_position": self.condition_position,
            "condition_order": list(self.condition_order),
            "latin_row": self.latin_row,
            "target_id": self.target_id,
        }


def plan_trials(config: StudyConfig, gallery_ids: list[str], participant: str) -> list[TrialPlan]:
    """The trials of one session: targets (explicit or drawn), order and conditions; deterministic.

    Raises:
        ValueError: a target is not in the gallery, or the participant id has no number while
            the study counterbalances by participant number.
    """
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
    order_seed = stable_seed(config.seed, participant) if config.per_participant_order else config.seed
    np.random.default_rng(order_seed).shuffle(targets)
    square = balanced_latin_square(len(config.conditions))
    row = latin_row(config.counterbalance, participant, config.seed, len(square))
    order = square[row]
    names = tuple(config.conditions[c].name for c in order)
    schedule = condition_schedule(config.assignment, order, config.num_trials)
    return [
        TrialPlan(i, t, config.conditions[c], position, names, row)
        for i, (t, (c, position)) in enumerate(zip(targets, schedule))
    ]
