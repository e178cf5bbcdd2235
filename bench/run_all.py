"""Run the benchmarks and collect them into bench/RESULTS.md (targets, measured, met / gap) + plots.

Every benchmark script is registered in ``BENCHES`` with its purpose: **speed** (one component's
latency or throughput), **load** (many sessions against the running app: latency under load,
reliability, hostile clients) or **accuracy** (retrieval quality of models and levers). Each runs in
its own subprocess (bounded by a per-bench timeout; logs in .cache/bench/logs) and writes
``bench/results/<name>.md`` + ``<name>.json`` through ``common.write_results``. The summary is
built from those JSON files only (targets, machine, the command that wrote them), grouped by
purpose; ``--collect-only`` rebuilds it from the committed files without running anything.
Benches outside the default run (hours of training, the Ray extra, a scratch disk) run by name.

    .venv/bin/python -m bench.run_all                  # the default run (~35 min on 2 cores)
    .venv/bin/python -m bench.run_all --quick          # small sizes and fewer repetitions (~5-10 min)
    .venv/bin/python -m bench.run_all --only latency,browser
    .venv/bin/python -m bench.run_all --collect-only   # RESULTS.md from bench/results/*.json, nothing run
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.lib.common import (
    BENCH_CACHE,
    RESULTS,
    ROOT,
    Target,
    code_version,
    command_line,
    header_lines,
    machine_info,
    markdown_table,
)
from bench.lib.plots import plot_percentile_rows
from bench.registry import BENCHES, PURPOSES, Bench
from retrieval.cli import parse_config

SUMMARY = ROOT / "bench" / "RESULTS.md"


# --- running ---------------------------------------------------------------------------------------
def run_bench(bench: Bench, quick: bool, log_dir: Path) -> dict:
    args = (bench.quick or bench.full) if quick else bench.full
    cmd = [sys.executable, "-m", bench.module, *args]
    log = log_dir / f"{bench.name}.log"
    print(f"== {bench.name}: {' '.join(cmd[1:])} (log {log})", flush=True)
    started_at = time.time()
    start = time.monotonic()
    try:
        with open(log, "w") as fh:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=bench.timeout_s).returncode
        status = "ok" if rc == 0 else f"failed (exit {rc})"
    except subprocess.TimeoutExpired:
        status = f"timed out after {bench.timeout_s} s"
    seconds = time.monotonic() - start
    print(f"   {status} in {seconds:.0f} s", flush=True)
    tail = "" if status == "ok" else log.read_text(errors="replace")[-1500:]
    return {
        "bench": bench,
        "status": status,
        "seconds": seconds,
        "started_at": started_at,
        "command": " ".join(["python", *cmd[1:]]),
        "tail": tail,
    }


def result_file(name: str) -> dict | None:
    """``bench/results/<name>.json`` as written by ``common.write_results`` (None when absent)."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def collect(run: dict) -> tuple[list[Target], list[str]]:
    """Targets and the Markdown section of one benchmark's result, read from its JSON file."""
    bench: Bench = run["bench"]
    result = result_file(bench.name)
    md, png = RESULTS / f"{bench.name}.md", RESULTS / f"{bench.name}.png"
    # Written by this run, not a stale file (benches not run keep their earlier files).
    fresh = result is not None and (run["status"] == "not re-run" or md.stat().st_mtime >= run["started_at"] - 1)
    targets = (
        [
            Target(**{k: t[k] for k in ("name", "measured", "limit", "op", "unit", "note")})
            for t in result.get("targets", [])
        ]
        if fresh
        else []
    )
    rows = (result or {}).get("data", {}).get("rows") if isinstance((result or {}).get("data"), dict) else None
    if fresh and not png.exists() and isinstance(rows, list):
        plot_percentile_rows(bench.name, rows)  # a bench that drew no plot: its p50/p95 bars
    if run["status"] == "not re-run":
        machine = (result or {}).get("machine", {})
        when = f"{machine.get('date_utc', 'date unknown')}, commit {machine.get('commit', 'unknown')}"
        done = f"not re-run: result of an earlier run ({when})" if result else "no result file yet"
    else:
        done = f"{run['status']} in {run['seconds']:.0f} s"
    command = (result or {}).get("command") or run["command"]
    lines = [f"### {bench.name}", "", f"- command: `{command}` — {done}" + ("" if bench.default else " (run by name)")]
    if fresh:
        lines.append(
            f"- results: [results/{md.name}](results/{md.name})"
            + (f", plot ![{bench.name}](results/{png.name})" if png.exists() else "")
        )
    else:
        lines.append(
            f"- no results file{'' if result is None else ' from this run'} (`python -m bench.run_all --only {bench.name}`)"
        )
    if run["tail"]:
        lines += ["", "```", run["tail"].strip()[-1200:], "```"]
    return targets, lines + [""]


def gap_lines(all_targets: list[tuple[str, Target]]) -> list[str]:
    """The targets not met, each with its measured number and where the explanation is."""
    missed = [(name, t) for name, t in all_targets if not t.met]
    if not missed:
        return []
    return [
        "Gaps (measured number against the target; the linked result file says why):",
        "",
        *(
            f"- {name}: {t.name}: measured {t.measured:.3g} {t.unit}, target {t.op} {t.limit:g} {t.unit} "
            f"([results/{name}.md](results/{name}.md))"
            for name, t in missed
        ),
        "",
    ]


def write_summary(runs: list[dict], mode: str, machine: dict, command: str) -> None:
    all_targets: list[tuple[str, Target]] = []
    sections: list[str] = []
    for purpose, title in PURPOSES.items():
        sections += [f"## {title}", ""]
        for run in (r for r in runs if r["bench"].purpose == purpose):
            targets, lines = collect(run)
            all_targets += [(run["bench"].name, t) for t in targets]
            sections += lines
    met = sum(t.met for _, t in all_targets)
    if machine:
        lines = header_lines(f"EarlySketch benchmark results ({mode})", command, machine)
    else:  # collected, not measured here: each result file names the machine it ran on
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines = [f"# EarlySketch benchmark results ({mode})", "", f"- date: {now}", f"- commit: {code_version()}"]
        lines.append(f"- command: `{command}`")
    lines += [
        "",
        f"{met} of {len(all_targets)} targets met. Targets are checked here, never by timed unit tests; each row "
        "is p50/p95 over many repetitions, ratios come from the same run. Each result file names its own "
        "machine, date and commit (benches are run one at a time on a quiet machine).",
        "",
        *markdown_table(
            ("bench", "target", "limit", "measured", "verdict"),
            [(name, *t.cells()) for name, t in all_targets],
            "lllll",
        ),
        "",
        *gap_lines(all_targets),
        *sections,
        *other_results(),
    ]
    SUMMARY.write_text("\n".join(lines) + "\n")
    print(f"wrote {SUMMARY}: {met}/{len(all_targets)} targets met", flush=True)


def other_results() -> list[str]:
    """Result files no registered bench writes (one-off runs with other settings): listed, not summarised."""
    names = {b.name for b in BENCHES}
    others = sorted(p for p in RESULTS.glob("*.json") if p.stem not in names)
    if not others:
        return []
    return [
        "## Other recorded runs",
        "",
        "One-off runs with settings no registered bench uses; their targets are not in the table above.",
        "",
        *(
            f"- [results/{p.stem}.md](results/{p.stem}.md): `{json.loads(p.read_text()).get('command', 'command not recorded')}`"
            for p in others
        ),
        "",
    ]


@dataclass
class Config:
    """Run the benchmarks (all of the default run, or some by name) and write the summary."""

    quick: bool = False
    """small sizes / few repetitions (~5-10 min)"""
    only: str = ""
    """comma-separated bench names, any registered one (default: the default run; see BENCHES)"""
    collect_only: bool = False
    """run nothing: rebuild bench/RESULTS.md from the result files in bench/results"""


def selected_benches(config: Config) -> set[str]:
    only = {n.strip() for n in config.only.split(",") if n.strip()}
    unknown = only - {b.name for b in BENCHES}
    if unknown:
        raise ValueError(f"unknown benches {sorted(unknown)}; choose from {[b.name for b in BENCHES]}")
    if only and config.collect_only:
        raise ValueError("--collect-only runs nothing: leave out --only")
    return only


def main(argv: list[str] | None = None) -> int:
    args = parse_config(Config, argv, description=__doc__, validate=selected_benches)
    only = selected_benches(args)
    log_dir = BENCH_CACHE / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    chosen = (lambda b: False) if args.collect_only else (lambda b: b.name in only if only else b.default)
    machine = {} if args.collect_only else machine_info()
    runs = [run_bench(b, args.quick, log_dir) if chosen(b) else earlier_run(b) for b in BENCHES]
    mode = "collected from the result files" if args.collect_only else ("quick run" if args.quick else "full run")
    write_summary(runs, mode, machine, command_line(__file__, argv))
    return 0 if all(r["status"] in ("ok", "not re-run") for r in runs) else 1


def earlier_run(bench: Bench) -> dict:
    """A bench not run now: its result files from an earlier run stay in the summary."""
    command = " ".join(["python", "-m", bench.module, *bench.full])
    return {"bench": bench, "status": "not re-run", "seconds": 0.0, "started_at": 0.0, "command": command, "tail": ""}


if __name__ == "__main__":
    sys.exit(main())
