"""Hostile traffic beside honest study participants: one attack class at a time, every run reported.

Starts the real app (``app.py --mode study`` with the default model, assets/model, through
``bench/load/faulty_app.py``, which only adds two switchable faults) and drives ``--sessions`` honest
participants through the study page's own requests (``study_client.StudyPageClient``): each
draws its trial's target stroke by stroke, sending each stroke when its pen lifts, at human
timing: pen-up gaps sampled from the Quick, Draw! raw drawings in ../shared/data/quickdraw-raw
when present (else the lognormal calibrated on them, retrieval/data/procedural/timing.py) and
the sketch's own stroke durations. Beside them, one class at a time for ``--class-s`` seconds:

- ``none``: honest participants only (the reference: run first and last);
- ``session_flood``: 10,000 session creations on ``/gradio_api/component_server``;
- ``rotating_identity``: stroke events under a fresh ``session_hash`` each, after a decoy key;
- ``journal_replay``: study sessions re-sending their journal with earlier strokes as ``clear``;
- ``nested_json``: 3.3 MB of nested JSON (and 200-deep JSON) on every route a client can POST to;
- ``disk_full``: the study log's write seam fails with ENOSPC for ``--fault-on-s`` of every ``--fault-period-s``;
- ``ranker_failure``: the ranker raises for the same windows.

Attackers run in their own process from 127.0.0.2 (another client address). Reported per class:
strokes sent against stroke records on disk (lost, duplicated, misfiled), honest per-stroke
latency p50/p95/p99 and the p95 ratio to the ``none`` runs, server CPU per honest stroke, the
attackers' outcomes; plus one honest-only run at ``--cpu-sessions`` for the CPU target.

    flock /work/notes/timing.lock .venv/bin/python -m bench.load.bench_hostile
    .venv/bin/python -m bench.load.bench_hostile --sessions 4 --class-s 10 --classes none,nested_json --name hostile_quick
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from bench.lib.common import (
    RESULTS,
    ROOT,
    Target,
    command_line,
    header_lines,
    machine_info,
    markdown_table,
    percentiles,
    status_mb,
    target_table,
    write_results,
)
from bench.lib.study_client import StudyPageClient
from bench.lib.study_traffic import Participant, StudyLoad, Tally, calibrated_gaps, check_logs
from bench.load.hostile_attacks import ATTACKS, attack_process
from harness.api_client import running_app
from harness.ui_client import UiApp, UiSession
from retrieval.cli import parse_config

FAULTS = {"disk_full": "disk_full", "ranker_failure": "ranker_down"}  # class -> bench/load/faulty_app.py switch
CLASSES = "none,session_flood,rotating_identity,journal_replay,nested_json,disk_full,ranker_failure,none"
STUDY = {"name": "hostile", "random_targets": 50, "num_trials": 200, "found_k": 1, "time_limit_s": 0, "seed": 0}


@dataclass
class Config(StudyLoad):
    """Benchmark settings."""

    sessions: int = 30
    """Honest participants drawing at once in every class."""
    cpu_sessions: int = 50
    """Honest participants of the last, honest-only run that measures server CPU per stroke (0: skip)."""
    class_s: float = 40.0
    """Seconds of each class (honest participants and the attack side by side)."""
    classes: str = CLASSES
    """Classes to run, in order (comma separated)."""
    fault_on_s: float = 2.0
    """disk_full / ranker_failure: seconds each fault window lasts..."""
    fault_period_s: float = 8.0
    """...out of every this many seconds."""
    name: str = "hostile"
    """Result file name under bench/results."""


def quickdraw_gaps(folder: Path) -> np.ndarray | None:
    """Every pen-up to next pen-down gap (ms) of the Quick, Draw! raw drawings in ``folder`` (None: absent)."""
    gaps = []
    for path in sorted(folder.glob("*.ndjson")) if folder.is_dir() else []:
        for line in path.read_text().splitlines():
            strokes = [s for s in json.loads(line)["drawing"] if s[2]]
            gaps += [b[2][0] - a[2][-1] for a, b in zip(strokes, strokes[1:]) if b[2][0] >= a[2][-1]]
    return np.asarray(gaps, dtype=np.float64) if gaps else None


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def honest(url: str, cfg: Config, label: str, sessions: int, duration_s: float, gap_ms) -> Tally:
    tally = Tally()
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=4 * sessions + 8), trust_env=False) as client:
        app = await UiApp.connect(client, url)
        rng = np.random.default_rng([cfg.seed, *label.encode()])
        people = [
            Participant(
                f"{label}-{i:02d}",
                StudyPageClient(UiSession(client, app)),
                tally,
                np.random.default_rng(rng.integers(1 << 32)),
                cfg,
                gap_ms,
            )
            for i in range(sessions)
        ]
        began = time.monotonic()
        for result in await asyncio.gather(*(p.run(began + duration_s) for p in people), return_exceptions=True):
            if isinstance(result, BaseException):
                tally.errors[f"client crashed: {result!r:.80}"] += 1
        tally.wall_s = time.monotonic() - began
    return tally


async def toggle_fault(control: Path, fault: str, cfg: Config, duration_s: float) -> list[tuple[float, float]]:
    """Switch ``fault`` on for ``fault_on_s`` of every ``fault_period_s`` until ``duration_s`` passed;
    the windows opened, as ``time.monotonic()`` (start, end)."""
    windows, began = [], time.monotonic()
    while time.monotonic() - began + cfg.fault_on_s < duration_s:
        await asyncio.sleep(cfg.fault_period_s - cfg.fault_on_s)
        control.write_text(fault)
        opened = time.monotonic()
        await asyncio.sleep(cfg.fault_on_s)
        control.write_text("")
        windows.append((opened, time.monotonic()))
    return windows


def outside_windows(tally: Tally, windows: list[tuple[float, float]]) -> list[float]:
    """Latencies of the strokes whose request (first send to answer) overlapped no fault window."""
    return [
        latency
        for latency, sent in zip(tally.latencies_ms, tally.sent_at)
        if not any(sent < end and sent + latency / 1e3 > start for start, end in windows)
    ]


def run_class(
    url: str, pid: int, cfg: Config, control: Path, log_dir: Path, index: int, attack: str, sessions: int, gap_ms
) -> dict:
    label = f"c{index}-{attack}"
    results = multiprocessing.get_context("spawn").Queue()
    attacker = None
    if attack in ATTACKS:
        attacker = multiprocessing.get_context("spawn").Process(
            target=attack_process, args=(url, attack, cfg.class_s, results)
        )
        attacker.start()
    cpu0, began = cpu_s(pid), time.monotonic()

    async def both() -> tuple[Tally, list[tuple[float, float]]]:
        faults = toggle_fault(control, FAULTS[attack], cfg, cfg.class_s) if attack in FAULTS else asyncio.sleep(0, [])
        tally, windows = await asyncio.gather(honest(url, cfg, label, sessions, cfg.class_s, gap_ms), faults)
        return tally, windows

    tally, windows = asyncio.run(both())
    outcomes = Counter(results.get(timeout=300)) if attacker else Counter()
    if attacker:
        attacker.join(30)
    time.sleep(1.0)  # answers are sent after their records are written: let the last land
    cpu = cpu_s(pid) - cpu0
    records = check_logs(log_dir, tally)
    row = {
        "class": attack,
        "label": label,
        "sessions": sessions,
        **records,
        "latency_ms": percentiles(tally.latencies_ms),
        "latency_outside_faults_ms": percentiles(outside_windows(tally, windows)) if windows else None,
        "errors": dict(tally.errors),
        "honest_requests_per_s": tally.requests / max(tally.wall_s, 1e-9),
        "server_cpu_s": round(cpu, 2),
        "server_cpu_ms_per_stroke": 1e3 * cpu / max(1, records["strokes_sent"]),
        "wall_s": round(time.monotonic() - began, 1),
        "attack": dict(outcomes),
        "attack_requests_per_s": sum(v for k, v in outcomes.items() if k.startswith(("POST", "GET", "replayed")))
        / cfg.class_s,
        "fault_windows": len(windows),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    lat = row["latency_ms"]
    print(
        f"{label}: sent {records['strokes_sent']} written {records['records_written']} lost {records['lost']} "
        f"dup {records['duplicated']} misfiled {records['misfiled']}; p50 {lat['p50']:.0f} p95 {lat['p95']:.0f} ms; "
        f"cpu {row['server_cpu_ms_per_stroke']:.1f} ms/stroke; errors {dict(tally.errors)}",
        flush=True,
    )
    return row


def add_ratios(rows: list[dict], cfg: Config) -> float:
    """Each run's honest p95 over the mean p95 of the ``none`` runs (and for strokes that overlapped no
    fault window); returns that reference p95."""
    reference = [r["latency_ms"]["p95"] for r in rows if r["class"] == "none" and r["sessions"] == cfg.sessions]
    base_p95 = float(np.mean(reference)) if reference else float("nan")
    for r in rows:
        r["p95_ratio"] = r["latency_ms"]["p95"] / base_p95 if reference else float("nan")
        outside = r.get("latency_outside_faults_ms")
        r["p95_ratio_outside_faults"] = outside["p95"] / base_p95 if outside and reference else None
    return base_p95


def hostile_targets(rows: list[dict], cfg: Config) -> list[Target]:
    attacked = [r for r in rows if r["sessions"] == cfg.sessions]
    targets = [
        Target(f"{r['label']}: lost + duplicated + misfiled", r["lost"] + r["duplicated"] + r["misfiled"], 0, unit="")
        for r in attacked
    ]
    targets += [
        Target(f"{r['label']}: honest p95 / p95 without attackers", r["p95_ratio"], 1.5, unit="x")
        for r in attacked
        if r["class"] != "none"
    ]
    targets += [
        Target(f"{r['label']}: strokes overlapping no fault window: p95 / p95 without", ratio, 1.5, unit="x")
        for r in attacked
        if (ratio := r["p95_ratio_outside_faults"]) is not None
    ]
    return targets + [
        Target(f"{r['label']}: server CPU per stroke", r["server_cpu_ms_per_stroke"], 15.0)
        for r in rows
        if r["sessions"] == cfg.cpu_sessions and r["class"] == "none"
    ]


def report(rows: list[dict], cfg: Config, machine: dict, command: str, gaps: str, rss: float) -> None:
    base_p95 = add_ratios(rows, cfg)
    targets = hostile_targets(rows, cfg)
    lines = header_lines("Hostile traffic beside honest study participants", command, machine)
    lines += [
        "",
        f"{cfg.sessions} honest participants per class for {cfg.class_s:g} s each, on the real app (study mode, default "
        f"model assets/model, gallery {cfg.gallery_size} procedural photos, default limits), strokes on the app's stroke route "
        f"(POST /es/stroke) and buttons as Gradio events, a fresh app per class. Pen-up gaps: {gaps}. "
        f"Attackers from 127.0.0.2, sending as fast as answered (rotating identities through hand-written HTTP/1.1 over 8 kept-alive sockets: a few microseconds of the attacker's CPU a request on the shared 2 cores); faults {cfg.fault_on_s:g} s of every {cfg.fault_period_s:g} s. "
        f"p95 ratio against the mean p95 of the `none` runs ({base_p95:.0f} ms). Server CPU includes the attack's cost. "
        f"Server peak RSS (VmHWM) {rss:.0f} MiB.",
        "",
        *markdown_table(
            (
                *("run", "class", "sessions", "strokes sent", "records", "lost", "dup", "misfiled"),
                *("p50 ms", "p95 ms", "p99 ms", "p95 ratio", "CPU ms/stroke", "honest req/s", "errors"),
            ),
            [
                (r["label"], r["class"], r["sessions"], r["strokes_sent"], r["records_written"], r["lost"])
                + (r["duplicated"], r["misfiled"], *(f"{r['latency_ms'][q]:.0f}" for q in ("p50", "p95", "p99")))
                + (f"{r['p95_ratio']:.2f}", f"{r['server_cpu_ms_per_stroke']:.1f}", f"{r['honest_requests_per_s']:.1f}")
                + (sum(r["errors"].values()),)
                for r in rows
            ],
            "l" * 15,
        ),
    ]
    lines += ["", "What each attack got (route: outcome: count) and the honest clients' errors:", ""]
    for r in rows:
        if r["attack"] or r["errors"] or r["fault_windows"]:
            extra = [f"{k}: {v}" for k, v in sorted(r["attack"].items())]
            extra += [f"attack requests/s: {r['attack_requests_per_s']:.0f}"] if r["attack"] else []
            if r["fault_windows"]:
                outside = r["latency_outside_faults_ms"]
                extra += [
                    f"fault windows: {r['fault_windows']}",
                    f"{outside['n']} strokes overlapped no window: p50/p95 "
                    f"{outside['p50']:.0f}/{outside['p95']:.0f} ms",
                ]
            extra += [f"honest error {k}: {v}" for k, v in sorted(r["errors"].items())]
            lines.append(f"- **{r['label']}**: " + "; ".join(extra))
    lines += ["", *target_table(targets)]
    write_results(
        cfg.name, lines, targets, {"runs": rows, "reference_p95_ms": base_p95, "gaps": gaps}, machine, RESULTS
    )


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(Config, argv, __doc__)
    classes = [c for c in cfg.classes.split(",") if c]
    unknown = set(classes) - {"none", *ATTACKS, *FAULTS}
    if unknown:
        raise SystemExit(f"unknown classes {sorted(unknown)}; choose from none, {', '.join([*ATTACKS, *FAULTS])}")
    machine = machine_info()
    pool = quickdraw_gaps(ROOT.parent / "shared" / "data" / "quickdraw-raw")
    if pool is not None:
        gaps = f"sampled from {pool.size} Quick, Draw! gaps (p10/p50/p90 {np.percentile(pool, 10):.0f}/{np.percentile(pool, 50):.0f}/{np.percentile(pool, 90):.0f} ms)"

        def gap_ms(rng: np.random.Generator) -> float:
            return float(pool[rng.integers(pool.size)])
    else:
        gaps, gap_ms = "the calibrated lognormal (Quick, Draw! data absent)", calibrated_gaps
    run_dir = cfg.cache_dir / f"hostile-{time.strftime('%Y%m%d-%H%M%S')}"
    log_dir, study, control = run_dir / "logs", run_dir / "study.json", run_dir / "faults"
    run_dir.mkdir(parents=True, exist_ok=True)
    study.write_text(json.dumps(STUDY))
    control.write_text("")
    app_args = cfg.app_argv(study, log_dir)
    entry = Path(__file__).with_name("faulty_app.py")
    rows, rss = [], float("nan")
    runs = [(c, cfg.sessions) for c in classes] + ([("none", cfg.cpu_sessions)] if cfg.cpu_sessions else [])
    for index, (attack, sessions) in enumerate(runs):
        # a fresh app per class: no class inherits another's drained buckets or still-running studies
        with running_app(
            app_args, log_path=run_dir / f"app{index}.log", env={"EARLYSKETCH_FAULTS": str(control)}, entry=entry
        ) as app:
            rows.append(run_class(app.url, app.proc.pid, cfg, control, log_dir, index, attack, sessions, gap_ms))
            rss = float(np.fmax(rss, status_mb("VmHWM", app.proc.pid, missing=float("nan"))))  # NaN: not read
    report(rows, cfg, machine, command_line(__file__, argv), gaps, rss)


if __name__ == "__main__":
    main()
