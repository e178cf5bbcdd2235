"""Study-mode reliability: concurrent participants at human timing, then again with hostile clients.

Starts ``app.py --mode study`` and drives ``--sessions`` participants through its real UI events
(``retrieval/ui/ui_client.py``: the requests the browser page sends). Each participant draws the
procedural sketch of its trial's target stroke by stroke at human times (the sketch's own stroke
durations, Quick, Draw!-like pen-up gaps), sends the whole journal after every pen-up, waits for
the answer, gives up after ``--strokes-per-trial`` strokes and presses Next. The run has two phases
of ``--duration-s`` each on the same server (in A B B A blocks): honest participants only, and the
same load with ``--hostile-clients`` clients mixed in (in their own process) that send, one after
the other, what an attacker would: a 2000-event journal (as text, and as nested JSON), the largest
allowed journal on a fresh trial racing Give up + Next, hostile fields (10 MB ``dpr``, nested
extras, bad ``seq``), an oversized body, a deeply nested body and the ``rank`` API.

Reported: strokes sent vs stroke records on disk (must be equal), misfiled records (a record in a
participant's log that is not one of that participant's strokes under the trial it was drawn in,
or a duplicate: must be 0), client-side per-stroke latency p50/p95 of the honest participants in
each phase and the p95 ratio, errors, and the server's peak RSS (VmHWM).

    .venv/bin/python bench/bench_study_reliability.py                          # 30 sessions, 2 x 120 s
    .venv/bin/python bench/bench_study_reliability.py --sessions 4 --duration-s 20 --name study_quick
"""

from __future__ import annotations

import asyncio
import json
import shlex
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from common import (  # noqa: E402
    BENCH_CACHE,
    Target,
    command_line,
    header_lines,
    machine_info,
    percentiles,
    target_table,
    write_results,
)

from retrieval.cli import parse_config  # noqa: E402
from retrieval.ui.api_client import running_app  # noqa: E402
from retrieval.ui.ui_client import UiApp, UiError, UiSession  # noqa: E402


@dataclass
class Config:
    """Benchmark settings."""

    sessions: int = 30
    """Honest participants drawing at once."""
    duration_s: float = 120.0
    """Seconds of each phase (honest only; honest + hostile)."""
    rounds: int = 2
    """Blocks per phase of duration_s / rounds each, in A B B A order, so the drifting load of a
    shared machine falls on both phases alike."""
    hostile_clients: int = 4
    """Clients sending hostile requests in the second phase, each waiting for an answer before the next."""
    hostile_pause_s: float = 0.1
    """Pause of a hostile client between two of its requests."""
    strokes_per_trial: int = 6
    """A participant gives up after this many strokes when the target was not found."""
    gallery_size: int = 1000
    """Procedural photos in the app's gallery (the app's default)."""
    seed: int = 0
    app_args: str = ""
    """Extra app flags, e.g. "--batch 1"."""
    cache_dir: Path = BENCH_CACHE
    name: str = "study_reliability"
    """Result file name under bench/results."""


@dataclass
class Tally:
    """What one phase's honest participants sent and saw."""

    sent: dict[str, dict[str, set[int]]] = field(default_factory=dict)  # participant -> trial token -> seqs
    trials: dict[str, dict[str, tuple[int, str]]] = field(
        default_factory=dict
    )  # participant -> token -> (trial, target)
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    wall_s: float = 0.0

    def merge(self, other: Tally) -> None:
        self.sent.update(other.sent)
        self.trials.update(other.trials)
        self.latencies_ms += other.latencies_ms
        self.errors.update(other.errors)
        self.wall_s += other.wall_s


STUDY = {"name": "reliability", "random_targets": 50, "num_trials": 200, "found_k": 1, "time_limit_s": 0, "seed": 0}


def journal(token: str, events: list[dict], extra: dict | None = None) -> str:
    """The canvas journal as the page sends it: JSON text."""
    return json.dumps(journal_object(token, events, extra))


def journal_object(token: str, events: list[dict], extra: dict | None = None) -> dict:
    return {"trial": token, "width": 256, "height": 256, "dpr": 1, "t0_utc_ms": time.time() * 1e3, "events": events,
            **(extra or {})}  # fmt: skip


def stroke_event(seq: int, stroke: np.ndarray, t0_ms: float) -> dict:
    points = [[round(float(x), 2), round(float(y), 2), round(float(t - stroke[0, 2] + t0_ms), 1), 0.5]
              for x, y, t in stroke]  # fmt: skip
    return {"seq": seq, "type": "stroke", "pointer": "mouse", "t_down": points[0][2], "t_up": points[-1][2],
            "points": points}  # fmt: skip


class Participant:
    """One honest participant: start, then trials of human-paced strokes until the deadline."""

    def __init__(self, name: str, tab: UiSession, tally: Tally, rng: np.random.Generator, cfg: Config) -> None:
        self.name, self.tab, self.tally, self.rng, self.cfg = name, tab, tally, rng, cfg
        self.app = tab.app
        tally.sent[name], tally.trials[name] = {}, {}

    def _trial(self, out: list, event) -> tuple[str, str] | None:
        canvas = self.app.output(out, "es-canvas", event)
        panel = self.app.output(out, "es-panel", event)
        if not canvas or not panel or not panel.get("target_id"):
            return None
        return canvas["trial"], panel["target_id"]

    async def run(self, deadline: float) -> None:
        from retrieval.data.procedural import generate_sketch
        from retrieval.data.procedural.timing import pen_up_gap

        start, stroke_ev = self.app.event("Start", "click"), self.app.event("es-canvas", "stroke_end")
        give_up, next_ev = self.app.event("Give up", "click"), self.app.event("Next trial", "click")
        current = self._trial(await self.tab.call(start, {"Participant id": self.name, "Session id": "S1"}), start)
        trial = 0
        while current is not None and time.monotonic() < deadline:
            token, target = current
            self.tally.trials[self.name][token] = (trial, target)
            sent = self.tally.sent[self.name].setdefault(token, set())
            sketch = generate_sketch(self.cfg.seed, int(target.rsplit("-", 1)[1]), int(self.rng.integers(3)))
            events, t_ms, locked = [], 0.0, False
            for i, stroke in enumerate(sketch.strokes[: self.cfg.strokes_per_trial]):
                pause_ms = (pen_up_gap(self.rng) if i else 300.0) + float(stroke[-1, 2] - stroke[0, 2])
                await asyncio.sleep(pause_ms / 1e3)
                t_ms += pause_ms
                events.append(stroke_event(len(events) + 1, stroke, t_ms))
                sent.add(len(events))
                locked = await self._send(stroke_ev, journal(token, events))
                if locked or time.monotonic() >= deadline:
                    break
            if time.monotonic() >= deadline:
                return
            if not locked:
                await self.tab.call(give_up)
            current = self._trial(await self.tab.call(next_ev), next_ev)
            trial += 1

    async def _send(self, event, payload: dict) -> bool:
        """Send the journal (again, up to 3 times, if the request fails); True once the trial ended."""
        for _ in range(3):
            began = time.perf_counter()
            try:
                out = await self.tab.call(event, {"es-canvas": payload})
            except (UiError, OSError, httpx.HTTPError) as exc:
                self.tally.errors[type(exc).__name__ + ": " + str(exc)[:60]] += 1
                continue
            self.tally.latencies_ms.append((time.perf_counter() - began) * 1e3)
            canvas = self.app.output(out, "es-canvas", event)
            return bool(canvas and canvas.get("locked"))
        return False


async def hostile_client(tab: UiSession, name: str, deadline: float, pause_s: float, counts: Counter) -> None:
    """Back-to-back hostile requests on its own session (and on the open endpoints)."""
    app, client = tab.app, tab.client
    start, stroke_ev = app.event("Start", "click"), app.event("es-canvas", "stroke_end")
    give_up, next_ev = app.event("Give up", "click"), app.event("Next trial", "click")
    out = await tab.call(start, {"Participant id": name, "Session id": "S1"})
    token = app.output(out, "es-canvas", start)["trial"]
    line = np.array([[10.0 + i, 20.0 + i, 10.0 * i] for i in range(5)])
    flood = [stroke_event(s, line, 0.0) for s in range(1, 2001)]  # made once: the attacker's CPU is not the server's
    max_events = flood[:60]
    attacks = {
        "2000-event journal as text": lambda: journal(token, flood),
        "2000-event journal as nested JSON": lambda: journal_object(token, flood),
        "nested pointer": lambda: journal(token, [{**max_events[0], "pointer": json.loads("[" * 500 + "]" * 500)}]),
        "seq jump": lambda: journal(token, [max_events[0], {**max_events[1], "seq": 10**9}]),
    }
    huge = json.dumps({"data": [journal_object(token, max_events[:1], {"dpr": "9" * 10_000_000}), None],
                       "fn_index": stroke_ev.fn_index, "session_hash": tab.session_hash}).encode()  # fmt: skip
    while time.monotonic() < deadline:
        for attack, make in attacks.items():
            try:
                await tab.call(stroke_ev, {"es-canvas": make()}, timeout_s=60)
                counts[f"{attack}: answered"] += 1
            except (UiError, httpx.HTTPError) as exc:
                counts[f"{attack}: {refusal(exc)}"] += 1
            await asyncio.sleep(pause_s)
        for attack, request in {
            "rank API": lambda: client.post(f"{app.url}/gradio_api/call/rank", json={"data": ["{}", 5, None]}),
            "deeply nested body": lambda: client.post(f"{app.url}/gradio_api/queue/join", content="[" * 100_000),
            "10 MB dpr body": lambda: client.post(f"{app.url}/gradio_api/queue/join", content=huge),
        }.items():
            try:
                counts[f"{attack}: HTTP {(await request()).status_code}"] += 1
            except httpx.HTTPError as exc:
                counts[f"{attack}: {type(exc).__name__}"] += 1
            await asyncio.sleep(pause_s)
        # the largest journal allowed, on a fresh trial, racing Give up + Next: one forward, 60 records
        try:
            await tab.call(give_up)
            racing = asyncio.gather(tab.call(stroke_ev, {"es-canvas": journal(token, max_events)}), tab.call(next_ev))
            _, out = await racing
            token = app.output(out, "es-canvas", next_ev)["trial"]
            counts["largest journal racing Next: answered"] += 1
        except (UiError, httpx.HTTPError, TypeError) as exc:
            counts[f"largest journal racing Next: {refusal(exc)}"] += 1
        await asyncio.sleep(pause_s)


def refusal(exc: Exception) -> str:
    """How a hostile event was refused: the HTTP status at the door (413, 429...), else the error type."""
    status = getattr(exc, "status", None)
    return f"HTTP {status}" if status else f"refused ({type(exc).__name__})"


async def run_phase(url: str, cfg: Config, phase: str, hostile: int, duration_s: float) -> tuple[Tally, Counter]:
    """``cfg.sessions`` participants (named ``<phase>-NN``) for ``duration_s``, and ``hostile``
    hostile clients in a separate process (an attacker is another machine: building its payloads
    must not stall the event loop that times the participants)."""
    import multiprocessing

    tally = Tally()
    results = multiprocessing.get_context("spawn").Queue()
    attackers = multiprocessing.get_context("spawn").Process(
        target=hostile_process, args=(url, phase, hostile, duration_s, cfg.hostile_pause_s, results)
    )
    if hostile:
        attackers.start()
    limits = httpx.Limits(max_connections=4 * cfg.sessions + 8)
    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:
        app = await UiApp.connect(client, url)
        deadline = time.monotonic() + duration_s
        rng = np.random.default_rng([cfg.seed, *phase.encode()])
        people = []
        for i in range(cfg.sessions):
            own_rng = np.random.default_rng(rng.integers(1 << 32))
            people.append(Participant(f"{phase}-{i:02d}", UiSession(client, app), tally, own_rng, cfg))
        began = time.monotonic()
        for result in await asyncio.gather(*(p.run(deadline) for p in people), return_exceptions=True):
            if isinstance(result, BaseException):
                tally.errors[f"client crashed: {result!r:.80}"] += 1
        tally.wall_s = time.monotonic() - began
    attacks = Counter(results.get(timeout=120)) if hostile else Counter()
    if hostile:
        attackers.join(30)
    return tally, attacks


def hostile_process(url: str, phase: str, clients: int, duration_s: float, pause_s: float, results) -> None:
    """Entry point of the attackers' process: run the hostile clients, put their outcome counts on ``results``."""

    async def attack() -> Counter:
        counts: Counter = Counter()
        async with httpx.AsyncClient(trust_env=False) as client:
            app = await UiApp.connect(client, url)
            deadline = time.monotonic() + duration_s
            tabs = [UiSession(client, app) for _ in range(clients)]
            runs = [hostile_client(tab, f"X-{phase}-{i}", deadline, pause_s, counts) for i, tab in enumerate(tabs)]
            for result in await asyncio.gather(*runs, return_exceptions=True):
                if isinstance(result, BaseException):
                    counts[f"hostile client crashed: {result!r:.80}"] += 1
        return counts

    results.put(dict(asyncio.run(attack())))


def check_logs(log_dir: Path, tally: Tally) -> dict:
    """Strokes sent vs stroke records on disk, and misfiled records, for one phase's participants."""
    from retrieval.study.log import StudyLog, read_log

    sent = sum(len(seqs) for trials in tally.sent.values() for seqs in trials.values())
    written = misfiled = 0
    for name, trials in tally.sent.items():
        path = StudyLog(log_dir, name, "S1").path
        seen: set[tuple[str, int]] = set()
        for record in read_log(path) if path.exists() else []:
            if record.get("type") != "stroke":
                continue
            written += 1
            key = (record.get("trial_token"), record.get("seq"))
            trial = tally.trials[name].get(key[0])
            if (record.get("participant") != name or trial is None or key in seen or key[1] not in trials.get(key[0], ())
                    or (record.get("trial"), record.get("target_id")) != trial):  # fmt: skip
                misfiled += 1
            seen.add(key)
    return {"strokes_sent": sent, "records_written": written, "misfiled": misfiled}


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(Config, argv, __doc__)
    machine = machine_info()
    run_dir = cfg.cache_dir / f"study-reliability-{time.strftime('%Y%m%d-%H%M%S')}"
    log_dir, study = run_dir / "logs", run_dir / "study.json"
    run_dir.mkdir(parents=True, exist_ok=True)
    study.write_text(json.dumps(STUDY))
    app_args = ["--mode", "study", "--study", str(study), "--log-dir", str(log_dir), "--gallery-size",
                str(cfg.gallery_size), "--cache-dir", str(cfg.cache_dir), *shlex.split(cfg.app_args)]  # fmt: skip
    tallies = {"honest": Tally(), "hostile": Tally()}
    attacks: Counter = Counter()
    block_s = cfg.duration_s / cfg.rounds
    with running_app(app_args, log_path=run_dir / "app.log") as app:
        for r in range(cfg.rounds):
            for phase in ("honest", "hostile") if r % 2 == 0 else ("hostile", "honest"):
                hostile = cfg.hostile_clients if phase == "hostile" else 0
                print(f"{phase} block {r}: {cfg.sessions} participants, {hostile} hostile clients, {block_s:g} s",
                      flush=True)  # fmt: skip
                tally, block_attacks = asyncio.run(run_phase(app.url, cfg, f"{phase}{r}", hostile, block_s))
                tallies[phase].merge(tally)
                attacks.update(block_attacks)
                print(f"  p95 {percentiles(tally.latencies_ms)['p95']:.0f} ms, errors {dict(tally.errors)}", flush=True)
        time.sleep(1.0)  # answers are sent after their records are written; let the last land
        rss, alive = peak_rss_mb(app.proc.pid), app.proc.poll() is None
    phases = {
        phase: {**check_logs(log_dir, tally), "latency_ms": percentiles(tally.latencies_ms),
                "errors": dict(tally.errors), "wall_s": tally.wall_s}
        for phase, tally in tallies.items()
    }  # fmt: skip
    phases["hostile"]["attacks"] = dict(attacks)
    phases["server"] = {"peak_rss_mb": rss, "alive": alive, "app_log": str(run_dir / "app.log")}
    report(phases, cfg, machine, command_line(__file__, argv))


def limit_line(cfg: Config) -> str:
    """The app's per-tab rate limit in this run (on by default in study mode)."""
    from retrieval.serving.request_limits import RATE_BURST, RATE_PER_S

    if "--rate-limit" in cfg.app_args:
        return f"App flags `{cfg.app_args}`."
    return f"Per-tab rate limit on (the study-mode default: {RATE_BURST} events in a row, then {RATE_PER_S:g}/s)."


def report(phases: dict, cfg: Config, machine: dict, command: str) -> None:
    server, runs = phases["server"], {name: phases[name] for name in ("honest", "hostile")}
    honest, hostile = runs["honest"], runs["hostile"]
    ratio = hostile["latency_ms"]["p95"] / honest["latency_ms"]["p95"]
    targets = [
        Target(f"{name}: stroke records written - strokes sent", p["records_written"] - p["strokes_sent"], 0, unit="")
        for name, p in runs.items()
    ] + [Target(f"{name}: misfiled records", p["misfiled"], 0, unit="") for name, p in runs.items()] + [
        Target("honest p95 latency with / without hostile traffic", ratio, 1.5, unit="x"),
        Target("honest-session request errors", sum(sum(p["errors"].values()) for p in runs.values()), 0, unit=""),
    ]  # fmt: skip
    lines = header_lines("Study-mode reliability under hostile traffic", command, machine)
    lines += ["", f"{cfg.sessions} participants at a time, at human timing, for {cfg.duration_s:g} s per phase "
              f"({cfg.rounds} blocks each, A B B A); gallery {cfg.gallery_size} procedural photos; "
              f"{cfg.hostile_clients} hostile clients (own process) during the hostile blocks. {limit_line(cfg)}", "",
              "| phase | strokes sent | stroke records written | misfiled | p50 ms | p95 ms | p99 ms | errors |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, p in runs.items():
        lat = p["latency_ms"]
        lines.append(f"| {name} | {p['strokes_sent']} | {p['records_written']} | {p['misfiled']} | {lat['p50']:.0f} | "
                     f"{lat['p95']:.0f} | {lat['p99']:.0f} | {sum(p['errors'].values())} |")  # fmt: skip
    sent = sum(hostile["attacks"].values())
    lines += ["", f"p95 ratio (with / without hostile traffic): **{ratio:.2f}x**. Server peak RSS (VmHWM): "
              f"**{server['peak_rss_mb']:.0f} MiB**; alive at the end: {server['alive']}.", "",
              f"Hostile requests: {sent} in {hostile['wall_s']:.0f} s ({sent / hostile['wall_s']:.1f}/s; "
              f"{cfg.hostile_pause_s:g} s pause between a client's requests), outcome: count", ""]  # fmt: skip
    lines += [f"- {k}: {v}" for k, v in sorted(hostile["attacks"].items())]
    errors = {k: v for p in runs.values() for k, v in p["errors"].items()}
    if errors:
        lines += ["", "Honest-session errors:", "", *(f"- {k}: {v}" for k, v in errors.items())]
    lines += ["", *target_table(targets)]
    write_results(cfg.name, lines, targets, phases, machine)


if __name__ == "__main__":
    main()
