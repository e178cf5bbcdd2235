"""Drawing sessions and the user-study trial state machine, independent of any UI.

The browser canvas keeps an append-only *journal* of what the person did in the current trial
(strokes with every point, undo, clear), each event numbered by ``seq``. After every change the
whole journal is sent; :meth:`DrawingSession.update` logs and ranks only the events it has not
seen, so events coalesced by the UI (two quick strokes during one slow ranking) are still each
logged and ranked. The per-stroke ranking is an injected callable, normally
``retrieval.retriever.Retriever.rank``.

Canvas payload (JSON object, what the canvas puts in its value)::

    {"trial": "<token>", "width": 512, "height": 512, "dpr": 2, "t0_utc_ms": 1714557600000,
     "events": [{"seq": 1, "type": "stroke", "pointer": "mouse", "t_down": 812.4, "t_up": 1190.0,
                 "points": [[x, y, t_ms, pressure], ...]},
                {"seq": 2, "type": "undo", "t": 1500.2}, {"seq": 3, "type": "clear", "t": 1800}]}

``t`` values are ``performance.now()`` milliseconds since the trial (or sketch) started.

Study phases: ``consent`` -> per trial ``drawing`` -> ``found`` | ``gave_up`` | ``timed_out`` ->
... -> ``done``.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.formats.stroke_json import StrokeLimits, parse_stroke_json
from retrieval.sketch import Sketch
from retrieval.study_log import StudyLog, utc_now

MAX_EVENTS = 2_000
MAX_POINTS = 50_000
EVENT_TYPES = ("stroke", "undo", "clear")
END_PHASES = ("found", "gave_up", "timed_out")


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


# --- canvas payload -----------------------------------------------------------------------------
def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r:.40}")
    return float(value)


def parse_canvas_payload(value: Any) -> dict:
    """Validate the canvas journal (dict or JSON string); raises ``ValueError`` saying what is wrong.

    Points are checked by :func:`retrieval.formats.stroke_json.parse_stroke_json` (types, NaN,
    bounds, counts); each stroke event gets ``xyt``, its ``(n, 3)`` array, and keeps its raw
    ``points`` (with pressure) for the log.
    """
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else {}
    if not isinstance(value, dict):
        raise ValueError(f"canvas payload must be a JSON object, got {type(value).__name__}")
    events = value.get("events", [])
    if not isinstance(events, list) or len(events) > MAX_EVENTS:
        raise ValueError(f"'events' must be a list of at most {MAX_EVENTS} events")
    width = _number(value.get("width", 256), "width")
    height = _number(value.get("height", 256), "height")
    if width <= 0 or height <= 0:
        raise ValueError(f"canvas size must be positive, got {width}x{height}")
    for i, event in enumerate(events):
        if not isinstance(event, dict) or event.get("type") not in EVENT_TYPES:
            raise ValueError(f"event {i} must be an object with type in {EVENT_TYPES}")
        _number(event.get("seq"), f"event {i} seq")
    strokes = [e for e in events if e["type"] == "stroke"]
    arrays = ()
    if strokes:
        wire = {"canvas": {"width": width, "height": height}, "strokes": [e.get("points") for e in strokes]}
        arrays = parse_stroke_json(wire, StrokeLimits(max_points=MAX_POINTS)).strokes
    xyt = iter(arrays)
    clean = [{**e, "seq": int(e["seq"]), **({"xyt": next(xyt)} if e["type"] == "stroke" else {})} for e in events]
    return {**value, "events": clean, "width": width, "height": height}


def replay(events: list[dict]) -> list[np.ndarray]:
    """The strokes on the canvas after the events (stroke adds, undo removes the last, clear empties)."""
    strokes: list[np.ndarray] = []
    for event in events:
        if event["type"] == "stroke":
            strokes.append(event["xyt"])
        elif event["type"] == "undo" and strokes:
            strokes.pop()
        elif event["type"] == "clear":
            strokes = []
    return strokes


def strokes_to_sketch(strokes: list[np.ndarray], width: float, height: float) -> Sketch:
    """A :class:`Sketch` of the canvas strokes, times rebased to the sketch's first point."""
    t0 = strokes[0][0, 2] if strokes else 0.0
    xyt = []
    for s in strokes:
        a = s[:, :3].copy()
        a[:, 2] -= t0
        xyt.append(a)
    return Sketch(tuple(xyt), width, height)


RankFn = Callable[[Sketch, "str | None"], Any]  # (sketch, target_id) -> RankResult-like


@dataclass
class RankPoint:
    """One point of the rank-evolution curve: after ``strokes`` strokes, rank and top-1 score."""

    strokes: int
    target_rank: int | None
    top1_score: float
    server_ms: float


@dataclass
class DrawingSession:
    """Per-browser-tab state: the current sketch's seen events, last ranking, and the study trial.

    Plain data (no open files), so UI frameworks can copy it per session.
    """

    mode: str = "free"
    target_id: str | None = None
    token: str = field(default_factory=lambda: secrets.token_hex(6))
    seen_seq: int = 0
    strokes_drawn: int = 0
    curve: list[RankPoint] = field(default_factory=list)
    last: Any = None  # the latest RankResult, or None for an empty canvas
    last_server_ms: float = 0.0
    # study-only state
    config: StudyConfig | None = None
    log: StudyLog | None = None
    plan: list[TrialPlan] = field(default_factory=list)
    trial: int = -1
    phase: str = "consent"
    trial_start_mono: float = 0.0
    trial_start_utc: str = ""

    # --- trials --------------------------------------------------------------------------
    def new_sketch(self, target_id: str | None = None) -> None:
        """Forget the sketch (new canvas token) and set the target, keeping the study progress."""
        self.token = secrets.token_hex(6)
        self.target_id = target_id
        self.seen_seq, self.strokes_drawn, self.curve, self.last = 0, 0, [], None

    def begin_study(self, config: StudyConfig, log: StudyLog, gallery_ids: list[str], extra: dict) -> None:
        """Plan the session's trials and write ``session_start`` (``extra``: e.g. gallery size)."""
        self.mode, self.config, self.log = "study", config, log
        self.plan = plan_trials(config, gallery_ids, log.participant)
        log.append({"type": "session_start", "study": config.name, "config": config.__dict__, **extra})
        self.trial = -1
        self.next_trial()

    @property
    def current(self) -> TrialPlan | None:
        return self.plan[self.trial] if 0 <= self.trial < len(self.plan) else None

    def next_trial(self) -> TrialPlan | None:
        """Start the next trial (``trial_start``) or finish the session (``session_end``)."""
        self.trial += 1
        plan = self.current
        if plan is None:
            self.phase = "done"
            self.new_sketch(None)
            self.log.append({"type": "session_end", "trials": len(self.plan)})
            return None
        self.new_sketch(plan.target_id)
        self.phase = "drawing"
        self.trial_start_mono, self.trial_start_utc = time.monotonic(), utc_now()
        self._log({"type": "trial_start", "trial_start_utc": self.trial_start_utc, "trial_token": self.token})
        return plan

    def elapsed_s(self) -> float:
        return time.monotonic() - self.trial_start_mono

    def end_trial(self, outcome: str) -> None:
        """End the current trial as ``found``, ``gave_up`` or ``timed_out`` (``trial_end`` summary)."""
        if self.phase != "drawing":
            return
        self.phase = outcome
        ranks = [p.target_rank for p in self.curve]
        self._log({
            "type": "trial_end", "outcome": outcome, "found": outcome == "found",
            "strokes_drawn": self.strokes_drawn, "seconds": round(self.elapsed_s(), 3),
            "final_rank": ranks[-1] if ranks else None, "best_rank": min((r for r in ranks if r), default=None),
        })  # fmt: skip

    def check_time(self) -> bool:
        """End the trial as timed out when its limit passed; True if it did."""
        limit = self.config.time_limit_s if self.config else 0
        if self.phase == "drawing" and limit and self.elapsed_s() >= limit:
            self.end_trial("timed_out")
            return True
        return False

    def _log(self, record: dict) -> None:
        plan = self.current
        if self.log is not None and plan is not None:
            self.log.append({"trial": plan.index, "condition": plan.condition, "target_id": plan.target_id, **record})

    # --- per stroke ----------------------------------------------------------------------
    def update(self, payload: Any, rank: RankFn) -> bool:
        """Take the canvas journal: log and rank new events; False when there was nothing new.

        In study mode each new stroke is ranked and logged on its own; elsewhere only the final
        state is ranked (coalesced strokes cost one encoder call). Events that arrive after the
        trial ended (a race with the timer or the give-up button) are still logged. Payloads of
        an older canvas token (a previous trial) are ignored.
        """
        received_mono, received_utc = time.monotonic(), utc_now()
        canvas = parse_canvas_payload(payload)
        if canvas.get("trial") != self.token:
            return False
        if self.mode == "study":
            self.check_time()  # a stroke that arrives after the limit does not count as found
        events = canvas["events"]
        new = [e for e in events if e["seq"] > self.seen_seq]
        if not new:
            return False
        for pos, event in enumerate(events):
            if event["seq"] <= self.seen_seq:
                continue
            self.seen_seq = event["seq"]
            is_last = event is new[-1]
            if event["type"] == "stroke":
                self.strokes_drawn += 1
            if self.mode != "study" and not is_last:
                continue
            strokes = replay(events[: pos + 1])
            self._rank(strokes, canvas, rank)
            if self.mode == "study":
                self._log_event(event, strokes, canvas, received_mono, received_utc)
                found = event["type"] == "stroke" and self.last is not None and self.last.target_rank is not None
                if found and self.last.target_rank <= self.config.found_k:
                    self.end_trial("found")  # no-op when the trial already ended
        return True

    def _rank(self, strokes: list[np.ndarray], canvas: dict, rank: RankFn) -> None:
        if not strokes:
            self.last = None
            return
        start = time.perf_counter()
        self.last = rank(strokes_to_sketch(strokes, canvas["width"], canvas["height"]), self.target_id)
        server_ms = (time.perf_counter() - start) * 1000.0
        self.last_server_ms = server_ms
        top1 = float(self.last.scores[0]) if len(self.last.scores) else float("nan")
        self.curve.append(RankPoint(len(strokes), self.last.target_rank, top1, server_ms))

    def _log_event(self, event: dict, strokes: list, canvas: dict, received_mono: float, received_utc: str) -> None:
        record = {
            "type": event["type"], "seq": event["seq"], "phase": self.phase,
            "strokes_on_canvas": len(strokes), "trial_token": self.token,
            "canvas_width": canvas["width"], "canvas_height": canvas["height"], "dpr": canvas.get("dpr"),
            "client_t0_utc_ms": canvas.get("t0_utc_ms"), "trial_start_utc": self.trial_start_utc,
            "server_received_utc": received_utc,
            "server_received_s": round(received_mono - self.trial_start_mono, 4),
        }  # fmt: skip
        if event["type"] == "stroke":
            record.update(stroke_index=self.strokes_drawn - 1, points=event["points"], pointer=event.get("pointer"),
                          t_down=event.get("t_down"), t_up=event.get("t_up"))  # fmt: skip
        else:
            record["t"] = event.get("t")
        if self.last is not None and strokes:
            record.update(target_rank=self.last.target_rank, top_ids=list(self.last.ids),
                          top_scores=[round(float(s), 5) for s in self.last.scores],
                          server_ms=round(self.last_server_ms, 2), timings_ms=dict(self.last.timings_ms))  # fmt: skip
        self._log(record)
