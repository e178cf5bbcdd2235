"""Study conditions: what each trial gives the participant, and which participant gets which order.

A :class:`Condition` is a named set of settings that changes what the participant gets: the
model that ranks, when results are shown (:data:`FEEDBACK_MODES`), how many photos, whether the
target's rank and rank curve are shown, when the target counts as found, and the time limit.

Assignment (:data:`ASSIGNMENTS`) says how conditions map to a participant's trials:

- ``within_interleaved``: every participant meets every condition, in turn (A B A B ...);
- ``within_blocked``: every participant meets every condition, one block each (A A B B);
- ``between``: one condition per participant.

The order of conditions is counterbalanced across participants by a balanced Latin square
(Williams design: each condition appears once in each position and, for an even number of
conditions, follows each other condition exactly once). Which row a participant gets
(:data:`COUNTERBALANCE`): ``participant_number`` takes the number in the participant id (P01 ->
row 0, P02 -> row 1, ...: balanced as long as participants are numbered consecutively), ``hash``
a seeded hash of the id (any ids; balanced only on average).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

FEEDBACK_MODES = ("every_stroke", "on_request", "after_trial")
"""``every_stroke``: results after every stroke (on-the-fly retrieval; the trial ends as soon as
the target is found); ``on_request``: results only when the participant presses Search (the trial
ends when a search finds the target); ``after_trial``: no results until the participant presses
Done (found if the target then ranks within ``found_k``). Every stroke is ranked and logged in
all three modes, so the analysis sees the rank curve the participant did not."""
ASSIGNMENTS = ("within_interleaved", "within_blocked", "between")
COUNTERBALANCE = ("participant_number", "hash")


@dataclass(frozen=True)
class Condition:
    """One condition's settings (the study config's top-level values are the defaults).

    Attributes:
        name: Label written into every record of its trials.
        model: Key of the study's ``models`` map that ranks this condition's strokes; "" = the
            app's ``--model``.
        feedback: One of :data:`FEEDBACK_MODES`.
        show_k: Photos shown in the result grid.
        show_rank: Show the target's rank and the rank-after-each-stroke curve.
        found_k: The target counts as found once its rank is <= this.
        time_limit_s: Seconds per trial before it ends as timed out (0 = no limit).
    """

    name: str = "default"
    model: str = ""
    feedback: str = "every_stroke"
    show_k: int = 12
    show_rank: bool = True
    found_k: int = 1
    time_limit_s: float = 60.0

    def problems(self, where: str) -> list[str]:
        """What is wrong with these settings, each naming the key and what it allows."""
        out = []
        if not isinstance(self.name, str) or not self.name.strip():
            out.append(f"{where}.name must be a non-empty string")
        if not isinstance(self.model, str):
            out.append(f"{where}.model must be a key of 'models' (a string), got {self.model!r}")
        if self.feedback not in FEEDBACK_MODES:
            out.append(f"{where}.feedback is {self.feedback!r}; allowed: {', '.join(FEEDBACK_MODES)}")
        for key in ("show_k", "found_k"):
            value = getattr(self, key)
            if type(value) is not int or value < 1:
                out.append(f"{where}.{key} must be an integer >= 1, got {value!r}")
        if type(self.show_rank) is not bool:
            out.append(f"{where}.show_rank must be true or false, got {self.show_rank!r}")
        limit = self.time_limit_s
        if type(limit) not in (int, float) or not math.isfinite(limit) or limit < 0:
            out.append(f"{where}.time_limit_s must be a finite number >= 0 (0 = no limit), got {limit!r}")
        return out

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


CONDITION_KEYS = tuple(f.name for f in fields(Condition))
INHERITED_KEYS = CONDITION_KEYS[1:]  # settings the study config sets for every condition that does not


def resolve_condition(entry: Any, defaults: dict[str, Any], where: str) -> Condition:
    """A condition from a config entry: a name (all settings from ``defaults``) or a dict of overrides.

    Raises:
        ValueError: an unknown key (the message lists the allowed ones) or an entry of another type.
    """
    if isinstance(entry, Condition):
        return entry
    if isinstance(entry, str):
        return Condition(name=entry, **defaults)
    if not isinstance(entry, dict):
        raise ValueError(f"invalid study config: {where} must be a name or an object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(CONDITION_KEYS))
    if unknown:
        raise ValueError(f"invalid study config: {where} has unknown keys {unknown}; allowed: {list(CONDITION_KEYS)}")
    if "name" not in entry:
        raise ValueError(f"invalid study config: {where} needs a 'name'")
    return Condition(**{**defaults, **entry})


def balanced_latin_square(n: int) -> list[tuple[int, ...]]:
    """Rows of condition indices: each index once per position and (even ``n``) once after each other.

    Williams (1949): the first row is 0, 1, n-1, 2, n-2, ...; row r adds r (mod n). For odd ``n``
    the mirrored rows are appended (2n rows), which balances first-order carry-over too.
    """
    if n < 1:
        raise ValueError("a Latin square needs at least one condition")
    first, low, high = [0], 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    rows = [tuple((c + r) % n for c in first) for r in range(n)]
    return rows + [row[::-1] for row in rows] if n % 2 else rows


def participant_number(participant: str) -> int:
    """The last run of digits in a participant id (``P07`` -> 7).

    Raises:
        ValueError: the id holds no digits (``counterbalance: participant_number`` needs them).
    """
    digits = re.findall(r"\d+", participant)
    if not digits:
        raise ValueError(
            f"participant id {participant!r} has no number: this study counterbalances by participant "
            "number (e.g. P01, P02, ...)"
        )
    return int(digits[-1])


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from any values, the same on every machine and Python run (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def latin_row(counterbalance: str, participant: str, seed: int, rows: int) -> int:
    """The Latin-square row a participant gets (see the module docstring)."""
    if counterbalance == "participant_number":
        return (participant_number(participant) - 1) % rows
    return stable_seed("latin", seed, participant) % rows


def condition_schedule(assignment: str, order: tuple[int, ...], num_trials: int) -> list[tuple[int, int]]:
    """``(condition index, position in the participant's order)`` for each trial."""
    if assignment == "between":
        return [(order[0], 0)] * num_trials
    if assignment == "within_blocked":
        block = num_trials // len(order)
        return [(order[i // block], i // block) for i in range(num_trials)]
    return [(order[i % len(order)], i % len(order)) for i in range(num_trials)]
