"""The report of ``bench_study_reliability.py``: strokes sent against records written, misfiled
records, honest latency with and without hostile traffic, and how each attack was answered.

Writes ``<name>.md`` and ``<name>.json`` (targets: nothing lost or misfiled, honest p95 at most
x1.5 with the attackers, no honest-session errors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.lib.common import Target, header_lines, markdown_table, target_table, write_results

if TYPE_CHECKING:
    from bench.load.bench_study_reliability import Config


def limit_line(cfg: Config) -> str:
    """The app's per-tab rate limit in this run (on by default in study mode)."""
    from retrieval.ui.rate_limits import RATE_BURST, RATE_PER_S

    if "--rate-limit" in cfg.app_args:
        return f"App flags `{cfg.app_args}`."
    return f"Per-tab rate limit on (the study-mode default: {RATE_BURST} events in a row, then {RATE_PER_S:g}/s)."


def report(phases: dict, cfg: Config, machine: dict, command: str) -> None:
    server, runs = phases["server"], {name: phases[name] for name in ("honest", "hostile")}
    honest, hostile = runs["honest"], runs["hostile"]
    ratio = hostile["latency_ms"]["p95"] / honest["latency_ms"]["p95"]
    targets = (
        [
            Target(
                f"{name}: stroke records written - strokes sent", p["records_written"] - p["strokes_sent"], 0, unit=""
            )
            for name, p in runs.items()
        ]
        + [
            Target(f"{name}: misfiled or duplicated records", p["misfiled"] + p["duplicated"], 0, unit="")
            for name, p in runs.items()
        ]
        + [
            Target("honest p95 latency with / without hostile traffic", ratio, 1.5, unit="x"),
            Target("honest-session request errors", sum(sum(p["errors"].values()) for p in runs.values()), 0, unit=""),
        ]
    )
    lines = header_lines("Study-mode reliability under hostile traffic", command, machine)
    lines += [
        "",
        f"{cfg.sessions} participants at a time, at human timing, for {cfg.duration_s:g} s per phase "
        f"({cfg.rounds} blocks each, A B B A); gallery {cfg.gallery_size} procedural photos; "
        f"{cfg.hostile_clients} hostile clients (own process) during the hostile blocks. {limit_line(cfg)}",
        "",
        *markdown_table(
            ("phase", "strokes sent", "stroke records written", "misfiled", "p50 ms", "p95 ms", "p99 ms", "errors"),
            [
                (name, p["strokes_sent"], p["records_written"], p["misfiled"])
                + tuple(f"{p['latency_ms'][q]:.0f}" for q in ("p50", "p95", "p99"))
                + (sum(p["errors"].values()),)
                for name, p in runs.items()
            ],
            "l" * 8,
        ),
    ]
    sent = sum(hostile["attacks"].values())
    lines += [
        "",
        f"p95 ratio (with / without hostile traffic): **{ratio:.2f}x**. Server peak RSS (VmHWM): "
        f"**{server['peak_rss_mb']:.0f} MiB**; alive at the end: {server['alive']}.",
        "",
        f"Hostile requests: {sent} in {hostile['wall_s']:.0f} s ({sent / hostile['wall_s']:.1f}/s; "
        f"{cfg.hostile_pause_s:g} s pause between a client's requests), outcome: count",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in sorted(hostile["attacks"].items())]
    errors = {k: v for p in runs.values() for k, v in p["errors"].items()}
    if errors:
        lines += ["", "Honest-session errors:", "", *(f"- {k}: {v}" for k, v in errors.items())]
    lines += ["", *target_table(targets)]
    write_results(cfg.name, lines, targets, phases, machine)
