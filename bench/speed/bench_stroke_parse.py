"""Parse-and-validate time of stroke payloads: a typical sketch, the largest the limits allow, every hostile case.

The app validates every stroke payload an untrusted client sends (``parse_stroke_json`` with the default
``StrokeLimits``) before it ranks it. The time is measured here and not in unit tests
(``tests/test_fuzz.py`` bounds the memory instead):

- typical: a procedural chair sketch of 300 points (the raster bench's sketch), as the canvas sends it;
- largest allowed: 5 strokes x 10,000 points, a seeded pen walk (``harness.stroke_payloads``);
- hostile: the fuzz tests' cases (``harness.stroke_payloads.hostile_payloads``), summarised by class.

Targets come from the per-stroke budget, a server p95 of 40 ms per stroke at 10k photos
(``bench/results/latency.md``): a typical payload within 5 % of it (2 ms); the largest allowed payload
within the whole of it (one request as large as the limits allow costs no more than one stroke); the
worst hostile case no slower than the largest allowed payload (the time twin of the fuzz test's memory bound).

    .venv/bin/python -m bench.speed.bench_stroke_parse                  # ~1 min on 2 cores
    .venv/bin/python -m bench.speed.bench_stroke_parse --reps 20 --case-reps 5
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from bench.lib.common import (
    Target,
    command_line,
    header_lines,
    machine_info,
    markdown_table,
    percentiles,
    target_table,
    time_calls,
    write_results,
)
from bench.speed.bench_raster import sketch_with_points
from harness.stroke_payloads import hostile_payloads, largest_allowed_payload, payload_class
from retrieval.cli import parse_config
from retrieval.data.formats.stroke_json import StrokeLimits, StrokePayloadError, parse_stroke_json, to_stroke_json

STROKE_BUDGET_P95_MS = 40.0  # per-stroke server p95 at 10k photos (bench/results/latency.md)


@dataclass
class Config:
    """Time the stroke payload parser on typical, largest allowed and hostile payloads."""

    reps: int = 200
    """timed parses of the typical and of the largest allowed payload"""
    case_reps: int = 30
    """timed parses of each hostile case"""
    mutations: int = 300
    """seeded random mutations among the hostile cases (as in tests/test_fuzz.py)"""
    points: int = 300
    """points of the typical sketch"""
    name: str = "stroke_parse"
    """result file name under bench/results"""


def typical_payload(points: int) -> str:
    """The raster bench's procedural chair sketch of ``points`` points, as JSON text (what the canvas sends)."""
    return json.dumps(to_stroke_json(sketch_with_points(points)))


def parse_or_refuse(payload: object) -> str:
    """``"accepted"`` or ``"refused"``: what the parser did with ``payload``."""
    try:
        parse_stroke_json(payload, StrokeLimits())
    except StrokePayloadError:
        return "refused"
    return "accepted"


def timed(payload: object, reps: int) -> np.ndarray:
    """Milliseconds of ``reps`` parses of ``payload`` after 2 untimed ones (a refusal counts as a parse)."""

    def parse() -> None:
        with contextlib.suppress(StrokePayloadError):
            parse_stroke_json(payload, StrokeLimits())

    return time_calls(parse, reps, warmup=2, max_s=60.0)


def size_of(payload: object) -> str:
    return f"{len(payload):,} B" if isinstance(payload, str | bytes) else type(payload).__name__


def measure(cfg: Config) -> tuple[dict, dict, list[dict]]:
    """Percentiles of the typical and the largest allowed payload, and one row per hostile case."""
    typical, largest = typical_payload(cfg.points), largest_allowed_payload()
    base = {
        "payload": f"typical ({cfg.points} points)",
        "size": size_of(typical),
        **percentiles(timed(typical, cfg.reps)),
    }
    print(base, flush=True)
    big = {"payload": "largest allowed (50,000 points)", "size": size_of(largest)}
    big |= percentiles(timed(largest, cfg.reps))
    print(big, flush=True)
    cases = []
    for name, payload in hostile_payloads(mutations=cfg.mutations):
        stats = percentiles(timed(payload, cfg.case_reps))
        cases.append({"case": name, "class": payload_class(name), "outcome": parse_or_refuse(payload), **stats})
    return base, big, cases


def class_rows(cases: list[dict], base: dict, big: dict) -> list[dict]:
    """Per hostile class: cases, outcomes, median and worst case p95, ratios to the typical and largest payload."""
    by_class: dict[str, list[dict]] = defaultdict(list)
    for case in cases:
        by_class[case["class"]].append(case)
    rows = []
    for name, members in by_class.items():
        worst = max(members, key=lambda c: c["p95"])
        rows.append(
            {
                "class": name,
                "cases": len(members),
                "refused": sum(c["outcome"] == "refused" for c in members),
                "p50_ms": float(np.median([c["p50"] for c in members])),
                "p95_ms": worst["p95"],
                "worst_case": worst["case"],
                "p95_vs_typical": worst["p95"] / base["p95"],
                "p95_vs_largest": worst["p95"] / big["p95"],
            }
        )
    return sorted(rows, key=lambda r: -r["p95_ms"])


def report(cfg: Config, machine: dict, base: dict, big: dict, cases: list[dict], argv: list[str] | None) -> None:
    classes = class_rows(cases, base, big)
    worst = classes[0]
    targets = [
        Target("typical payload parse p95 (5 % of the 40 ms stroke budget)", base["p95"], STROKE_BUDGET_P95_MS / 20),
        Target("largest allowed payload parse p95 (one stroke's budget)", big["p95"], STROKE_BUDGET_P95_MS),
        Target(
            "worst hostile case p95 / largest allowed payload p95",
            worst["p95_vs_largest"],
            1.0,
            unit="x",
            note=f"worst: {worst['worst_case']}",
        ),
    ]
    payload_rows = [
        (
            r["payload"],
            r["size"],
            f"{r['p50']:.3f}",
            f"{r['p95']:.3f}",
            f"{r['p99']:.3f}",
            f"{r['p50'] / base['p50']:.1f}",
        )
        for r in (base, big)
    ]
    hostile_rows = [
        (
            r["class"],
            r["cases"],
            r["refused"],
            f"{r['p50_ms']:.4f}",
            f"{r['p95_ms']:.4f}",
            f"{r['p95_vs_typical']:.2f}",
            f"{r['p95_vs_largest']:.4f}",
        )
        for r in classes
    ]
    lines = [
        *header_lines("Stroke payload parse and validation time", command_line(__file__, argv), machine),
        "",
        f"`parse_stroke_json` with the default `StrokeLimits`, one thread. {cfg.reps} timed parses of the typical and "
        f"of the largest allowed payload, {cfg.case_reps} of each of the {len(cases)} hostile cases, after 2 "
        "untimed ones; a refusal counts as a parse. Budget: a server p95 of 40 ms per stroke at 10k photos "
        "(results/latency.md).",
        "",
        *target_table(targets),
        "",
        *markdown_table(("payload", "size", "p50 ms", "p95 ms", "p99 ms", "p50 / typical p50"), payload_rows),
        "",
        "Hostile cases by class (slowest first; p50: median over the class's cases, p95: its worst case's):",
        "",
        *markdown_table(
            ("class", "cases", "refused", "p50 ms", "p95 ms", "p95 / typical p95", "p95 / largest p95"), hostile_rows
        ),
    ]
    data = {"rows": [base, big], "classes": classes, "cases": cases}
    write_results(cfg.name, lines, targets, data, machine)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(Config, argv, description=__doc__)
    machine = machine_info()  # load average at the start, before the timing loops
    base, big, cases = measure(cfg)
    report(cfg, machine, base, big, cases, argv)


if __name__ == "__main__":
    main()
