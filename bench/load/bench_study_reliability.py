"""Study-mode reliability: concurrent participants at human timing, then again with hostile clients.

Starts ``app.py --mode study`` and drives ``--sessions`` participants through its real UI events
(``harness/ui_client.py``: the requests the browser page sends). Each participant draws the
procedural sketch of its trial's target stroke by stroke at human times (the sketch's own stroke
durations, Quick, Draw!-like pen-up gaps), posts each stroke to ``POST /es/stroke`` after its
pen-up (only the events the server has not acknowledged), waits for the answer, gives up after ``--strokes-per-trial`` strokes and presses Next. The run has two phases
of ``--duration-s`` each on the same server (in A B B A blocks): honest participants only, and the
same load with ``--hostile-clients`` clients mixed in (in their own process) that send, one after
the other, what an attacker would: a 2000-event batch, the largest allowed batch on a fresh trial
racing Give up + Next, hostile fields (10 MB ``dpr``, nested pointer, bad ``seq``), a journal
replayed as clears, another trial's token, a stroke without a cookie, a deeply nested body and the
``rank`` API.

Reported: strokes sent vs stroke records on disk (must be equal), misfiled records (a record in a
participant's log that is not one of that participant's strokes under the trial it was drawn in,
or a duplicate: must be 0), client-side per-stroke latency p50/p95 of the honest participants in
each phase and the p95 ratio, errors, and the server's peak RSS (VmHWM).

    .venv/bin/python -m bench.load.bench_study_reliability                          # 30 sessions, 2 x 120 s
    .venv/bin/python -m bench.load.bench_study_reliability --sessions 4 --duration-s 20 --name study_quick
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass

import httpx
import numpy as np

from bench.lib.common import command_line, machine_info, percentiles, status_mb
from bench.lib.study_client import StudyPageClient
from bench.lib.study_traffic import Participant, StudyLoad, Tally, check_logs, hostile_process
from bench.load.study_report import report
from harness.api_client import running_app
from harness.ui_client import UiApp, UiSession
from retrieval.cli import parse_config


@dataclass
class Config(StudyLoad):
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
    name: str = "study_reliability"
    """Result file name under bench/results."""


STUDY = {"name": "reliability", "random_targets": 50, "num_trials": 200, "found_k": 1, "time_limit_s": 0, "seed": 0}


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
            people.append(Participant(f"{phase}-{i:02d}", StudyPageClient(UiSession(client, app)), tally, own_rng, cfg))
        began = time.monotonic()
        for result in await asyncio.gather(*(p.run(deadline) for p in people), return_exceptions=True):
            if isinstance(result, BaseException):
                tally.errors[f"client crashed: {result!r:.80}"] += 1
        tally.wall_s = time.monotonic() - began
    attacks = Counter(results.get(timeout=120)) if hostile else Counter()
    if hostile:
        attackers.join(30)
    return tally, attacks


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(Config, argv, __doc__)
    machine = machine_info()
    run_dir = cfg.cache_dir / f"study-reliability-{time.strftime('%Y%m%d-%H%M%S')}"
    log_dir, study = run_dir / "logs", run_dir / "study.json"
    run_dir.mkdir(parents=True, exist_ok=True)
    study.write_text(json.dumps(STUDY))
    app_args = cfg.app_argv(study, log_dir)
    tallies = {"honest": Tally(), "hostile": Tally()}
    attacks: Counter = Counter()
    block_s = cfg.duration_s / cfg.rounds
    with running_app(app_args, log_path=run_dir / "app.log") as app:
        for r in range(cfg.rounds):
            for phase in ("honest", "hostile") if r % 2 == 0 else ("hostile", "honest"):
                hostile = cfg.hostile_clients if phase == "hostile" else 0
                print(
                    f"{phase} block {r}: {cfg.sessions} participants, {hostile} hostile clients, {block_s:g} s",
                    flush=True,
                )
                tally, block_attacks = asyncio.run(run_phase(app.url, cfg, f"{phase}{r}", hostile, block_s))
                tallies[phase].merge(tally)
                attacks.update(block_attacks)
                print(f"  p95 {percentiles(tally.latencies_ms)['p95']:.0f} ms, errors {dict(tally.errors)}", flush=True)
        time.sleep(1.0)  # answers are sent after their records are written; let the last land
        rss, alive = status_mb("VmHWM", app.proc.pid, missing=float("nan")), app.proc.poll() is None
    phases = {
        phase: {
            **check_logs(log_dir, tally),
            "latency_ms": percentiles(tally.latencies_ms),
            "errors": dict(tally.errors),
            "wall_s": tally.wall_s,
        }
        for phase, tally in tallies.items()
    }
    phases["hostile"]["attacks"] = dict(attacks)
    phases["server"] = {"peak_rss_mb": rss, "alive": alive, "app_log": str(run_dir / "app.log")}
    report(phases, cfg, machine, command_line(__file__, argv))


if __name__ == "__main__":
    main()
