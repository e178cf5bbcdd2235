"""Run every benchmark and collect them into bench/RESULTS.md (targets, measured, met / gap) + plots.

Runs each bench script in its own subprocess (bounded by a per-bench timeout; logs in
.cache/bench/logs), then writes ``bench/RESULTS.md``: the machine, one table of every target with
the measured number and met / NOT met (with the gap), and a section per benchmark linking its
result file and plot. Benchmarks that write ``bench/results/<name>.json`` (latency, encoder
options, concurrency, browser, study reliability) supply their targets; for the others (raster, procedural, encoder,
index) the targets are read from their Markdown tables, and a plot is drawn from their p50/p95
columns (``<name>.png``) when they do not make one.

    .venv/bin/python bench/run_all.py            # full: 1k-1M galleries, all options, 50 users (~17 min on 2 cores)
    .venv/bin/python bench/run_all.py --quick    # small sizes and fewer repetitions (~5-10 min)
    .venv/bin/python bench/run_all.py --only latency,browser
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    BENCH_CACHE,
    RESULTS,
    ROOT,
    Target,
    command_line,
    header_lines,
    machine_info,
    save_plot,
    use_agg,
)

from retrieval.cli import parse_config
from retrieval.serving.index import IndexParams

SUMMARY = ROOT / "bench" / "RESULTS.md"


@dataclass(frozen=True)
class Bench:
    """One benchmark script: its result name, full-mode and quick-mode arguments, time limit."""

    name: str
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    timeout_s: int
    owner_json: bool  # writes <name>.json with its own targets


BENCHES = (
    Bench("raster", "bench_raster.py", (), ("--reps", "500", "--step-reps", "50"), 900, True),
    Bench("procedural", "bench_procedural.py", (), ("--photos", "1000"), 1800, True),
    Bench(
        "encoder",
        "bench_encoder.py",
        (),
        ("--archs", "mobilenet_v3_small", "--sizes", "128", "--reps", "50"),
        3600,
        True,
    ),
    Bench("index", "bench_index.py", (), ("--sizes", "10000", "50000", "--queries", "200"), 1800, False),
    Bench("latency", "bench_latency.py", (), ("--sizes", "1k,10k", "--strokes", "150"), 5400, True),
    Bench(
        "encoder_options",
        "bench_encoder_options.py",
        (),
        ("--options", "eager,channels_last,res96,int8_dynamic", "--reps", "60", "--data", "procedural:photos=200"),
        3600,
        True,
    ),
    Bench(
        "concurrency", "bench_concurrency.py", (), ("--users", "50", "--strokes", "6", "--rounds", "2"), 1800, True
    ),  # targets name 50 users
    Bench(
        "concurrency_stress",
        "bench_concurrency.py",
        ("--pace", "4", "--name", "concurrency_stress"),
        ("--pace", "4", "--rounds", "1", "--name", "concurrency_stress"),
        1800,
        True,
    ),  # 4x human speed: saturated
    Bench("browser", "bench_browser.py", (), ("--strokes", "50"), 1800, True),  # target needs >= 50 strokes
    Bench(
        "study_reliability", "bench_study_reliability.py", (), ("--sessions", "10", "--duration-s", "30"), 1800, True
    ),  # full: 30 participants x 2 phases x 120 s (~6 min); quick: 10 x 2 x 30 s
    Bench(
        "hostile",
        "bench_hostile.py",
        (),
        ("--sessions", "10", "--class-s", "15", "--cpu-sessions", "0"),
        1800,
        True,
    ),  # full: 30 participants x 8 classes x 40 s + 50 honest x 40 s (~9 min)
)


# --- targets of the bench that only writes Markdown (bench_index) ---------------------------------
def md_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table in ``text`` as (header cells, rows of cells)."""
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.strip().startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            if len(block) >= 2 and set("".join(block[1])) <= set("-: "):
                tables.append((block[0], block[2:]))
            block = []
    return tables


def number(cell: str) -> float:
    match = re.search(r"-?[\d,]*\.?\d+", cell)
    return float(match.group().replace(",", "")) if match else float("nan")


def markdown_targets(name: str, text: str) -> list[Target]:
    """Targets stated in the design for the benches owned by others, read from their tables."""
    out = []
    for header, rows in md_tables(text):
        cols = {h: i for i, h in enumerate(header)}
        if name == "index" and "recall@10" in cols:
            default = f"nprobe={IndexParams().nprobe}"
            for row in rows:  # the library's IVF-Flat (nlist 4*sqrt(N)), used above the exact-search threshold
                if row[cols["index"]].startswith("IVF-Flat") and row[cols["index"]].endswith(default):
                    out.append(
                        Target(
                            f"IVF-Flat default ({default}) recall@10 at {row[0]} photos",
                            number(row[cols["recall@10"]]),
                            0.95,
                            ">=",
                            "",
                        )
                    )
    return out


def plot_markdown(name: str, text: str) -> Path | None:
    """Bar chart of the first table with p50 (and p95) columns: one bar pair per row."""
    for header, rows in md_tables(text):
        p50 = next((i for i, h in enumerate(header) if h.startswith("p50")), None)
        if p50 is None or not rows:
            continue
        p95 = next((i for i, h in enumerate(header) if h.startswith("p95")), None)
        skip = {p50, p95} | {i for i, h in enumerate(header) if re.search(r"ms|MB|/s|recall| s$|human|p\d", h)}
        labels = [" ".join(c for i, c in enumerate(r) if i not in skip)[:48] for r in rows]
        use_agg()
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, max(3.0, 0.22 * len(rows) + 1)))
        y = range(len(rows))
        ax.barh([v + 0.2 for v in y], [number(r[p50]) for r in rows], height=0.4, label=header[p50])
        if p95 is not None:
            ax.barh([v - 0.2 for v in y], [number(r[p95]) for r in rows], height=0.4, label=header[p95])
        ax.set_yticks(list(y), labels, fontsize=6)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set(title=f"{name}: {header[p50]}" + (f" / {header[p95]}" if p95 is not None else ""))
        ax.legend(fontsize=7)
        return save_plot(fig, name)
    return None


# --- running ---------------------------------------------------------------------------------------
def run_bench(bench: Bench, quick: bool, log_dir: Path) -> dict:
    args = bench.quick if quick else bench.full
    cmd = [sys.executable, str(ROOT / "bench" / bench.script), *args]
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
        "command": " ".join(["python", *cmd[1:]]).replace(str(ROOT) + "/", ""),
        "tail": tail,
    }


def collect(run: dict) -> tuple[list[Target], list[str]]:
    """Targets and the Markdown section of one benchmark run."""
    bench: Bench = run["bench"]
    md, js, png = (RESULTS / f"{bench.name}{ext}" for ext in (".md", ".json", ".png"))
    targets: list[Target] = []
    # Written by this run, not a stale file (benches left out by --only keep their earlier files).
    fresh = md.exists() and (run["status"] == "not re-run" or md.stat().st_mtime >= run["started_at"] - 1)
    if fresh and bench.owner_json and js.exists():
        targets = [
            Target(**{k: t[k] for k in ("name", "measured", "limit", "op", "unit", "note")})
            for t in json.loads(js.read_text())["targets"]
        ]
    elif fresh:
        targets = markdown_targets(bench.name, md.read_text())
    if fresh and not (png.exists() and png.stat().st_mtime >= run["started_at"] - 1):
        plot_markdown(bench.name, md.read_text())  # a bench that drew no plot of its own gets its latency bars
    done = f"{run['status']} in {run['seconds']:.0f} s"
    if run["status"] == "not re-run":
        done = f"not re-run: result of an earlier run{' (' + run['earlier'] + ')' if run['earlier'] else ''}"
    lines = [f"## {bench.name}", "", f"- command: `{run['command']}` — {done}"]
    if fresh:
        lines.append(
            f"- results: [results/{md.name}](results/{md.name})"
            + (f", plot ![{bench.name}](results/{png.name})" if png.exists() else "")
        )
    else:
        lines.append("- no fresh result file from this run")
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


def write_summary(runs: list[dict], quick: bool, machine: dict, command: str) -> None:
    all_targets: list[tuple[str, Target]] = []
    sections: list[str] = []
    for run in runs:
        targets, lines = collect(run)
        all_targets += [(run["bench"].name, t) for t in targets]
        sections += lines
    met = sum(t.met for _, t in all_targets)
    lines = header_lines(f"EarlySketch benchmark results ({'quick' if quick else 'full'} run)", command, machine)
    lines += [
        "",
        f"{met} of {len(all_targets)} targets met. Targets are checked here, never by timed unit tests; each row "
        "is p50/p95 over many repetitions, ratios come from the same run.",
        "",
        "| bench | target | limit | measured | verdict |",
        "|---|---|---|---|---|",
        *(f"| {name} " + t.row() + (f" {t.note} |" if t.note else "") for name, t in all_targets),
        "",
        *gap_lines(all_targets),
        *sections,
    ]
    SUMMARY.write_text("\n".join(lines) + "\n")
    print(f"wrote {SUMMARY}: {met}/{len(all_targets)} targets met", flush=True)


@dataclass
class Config:
    """Run every bench and write the summary."""

    quick: bool = False
    """small sizes / few repetitions (~5-10 min)"""
    only: str = ""
    """comma-separated bench names (default: all; see BENCHES)"""


def selected_benches(config: Config) -> set[str]:
    only = {n.strip() for n in config.only.split(",") if n.strip()}
    unknown = only - {b.name for b in BENCHES}
    if unknown:
        raise ValueError(f"unknown benches {sorted(unknown)}; choose from {[b.name for b in BENCHES]}")
    return only


def main(argv: list[str] | None = None) -> int:
    args = parse_config(Config, argv, description=__doc__, validate=selected_benches)
    only = selected_benches(args)
    machine = machine_info()
    log_dir = BENCH_CACHE / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    runs = [run_bench(b, args.quick, log_dir) if not only or b.name in only else earlier_run(b) for b in BENCHES]
    write_summary(runs, args.quick, machine, command_line(__file__, argv))
    return 0 if all(r["status"] in ("ok", "not re-run") for r in runs) else 1


def earlier_run(bench: Bench) -> dict:
    """A bench left out by ``--only``: its result files from an earlier run stay in the summary."""
    md = RESULTS / f"{bench.name}.md"
    lines = md.read_text().splitlines() if md.exists() else []
    command = next((line.split("`")[1] for line in lines if line.startswith("- command: `")), "(no earlier result)")
    when = next((line.removeprefix("- date: ") for line in lines if line.startswith("- date: ")), "")
    return {
        "bench": bench,
        "status": "not re-run",
        "seconds": 0.0,
        "started_at": 0.0,
        "earlier": when,
        "command": command,
        "tail": "",
    }


if __name__ == "__main__":
    sys.exit(main())
