"""The report of ``bench_latency.py``: per-stroke stage times and index cost per gallery size.

Writes ``<name>.md`` / ``<name>.json`` (targets: per-stroke p50/p95 at 10k photos; search p50,
recall@10 and build time at 1M) and ``<name>.png`` (stacked stage p50s; index cost vs size).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from bench.lib.common import Target, header_lines, markdown_table, model_label, size_label, target_table, write_results
from bench.lib.plots import save_plot, use_agg

if TYPE_CHECKING:
    from bench.speed.bench_latency import Config

# the stages of one per-stroke call, as RankResult.timings_ms names them, plus the endpoint's response
STAGES = ("validate", "render", "encode", "search", "response")


def targets_of(rows: list[dict]) -> list[Target]:
    by_n = {r["n"]: r for r in rows}
    out = []
    if 10_000 in by_n:
        st = by_n[10_000]["stages"]["total"]
        out += [
            Target("per-stroke server p50 at 10k photos", st["p50"], 20),
            Target("per-stroke server p95 at 10k photos", st["p95"], 40),
        ]
    if 1_000_000 in by_n:
        r = by_n[1_000_000]
        out += [
            Target("index search p50 at 1M photos", r["search"]["p50"], 5),
            Target("recall@10 vs exact at 1M photos", r["recall@10"], 0.95, ">=", ""),
            Target(
                "index build at 1M photos",
                r["build_s"] / 60,
                10,
                "<=",
                "min",
                f"RSS +{r['rss_delta_mb']:.0f} MB, peak +{r['peak_delta_mb']:.0f} MB",
            ),
        ]
    return out


def plot(rows: list[dict], cfg: Config) -> None:
    use_agg()
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [size_label(r["n"]) for r in rows]
    bottom = np.zeros(len(rows))
    for stage in STAGES:
        vals = np.array([r["stages"][stage]["p50"] for r in rows])
        ax1.bar(labels, vals, bottom=bottom, label=stage)
        bottom += vals
    ax1.plot(labels, [r["stages"]["total"]["p95"] for r in rows], "k_", markersize=30, mew=2, label="total p95")
    ax1.axhline(20, color="g", ls="--", lw=1, label="p50 target (10k)")
    ax1.axhline(40, color="r", ls="--", lw=1, label="p95 target (10k)")
    ax1.set(title="per-stroke server time (stage p50, stacked)", xlabel="gallery photos", ylabel="ms")
    ax1.legend(fontsize=7)
    ns = [r["n"] for r in rows]
    ax2.loglog(ns, [r["search"]["p50"] for r in rows], "o-", label="k-NN search p50 (index)")
    ax2.loglog(ns, [r["search"]["p95"] for r in rows], "o--", label="k-NN search p95")
    ax2.loglog(ns, [r["target_rank"]["p50"] for r in rows], "s-", label="exact target rank p50")
    ax2.axhline(5, color="r", ls="--", lw=1, label="1M search target")
    ax2.set(title="index cost vs gallery size", xlabel="gallery photos", ylabel="ms")
    ax2.legend(fontsize=7)
    save_plot(fig, cfg.name)


def stage_row(r: dict) -> tuple:
    """One gallery size's row: build, memory, p50 of every stage, total p50/p95, search, recall, target rank."""
    st = r["stages"]
    return (
        *(f"{r['n']:,}", r["kind"], f"{r['build_s']:.1f}", f"{r['rss_delta_mb']:.0f} ({r['peak_delta_mb']:.0f})"),
        *(f"{st[s]['p50']:.2f}" for s in STAGES),
        *(f"{st['total'][q]:.2f}" for q in ("p50", "p95")),
        f"{r['search']['p50']:.3f} / {r['search']['p95']:.3f}",
        *(f"{r['recall@10']:.3f}", f"{r['target_rank']['p50']:.2f}", r["synthetic"] or "-"),
    )


def report(rows: list[dict], cfg: Config, machine: dict, command: str) -> None:
    targets = targets_of(rows)
    lines = header_lines("Per-stroke latency vs gallery size", command, machine)
    lines += [
        f"- model: {model_label(cfg.model)}; torch threads {cfg.threads}; k={cfg.k}; "
        f"{cfg.strokes} timed strokes per size after {cfg.warmup} warm-up",
        f"- sketches: every stroke prefix of procedural sketches of {cfg.sketch_photos} random gallery photos, sent "
        "as stroke-JSON text with the photo as target (the app's challenge/study call)",
        f"- galleries: up to {size_label(cfg.render_max)} rendered procedural photos embedded by the model; larger "
        "sizes add synthetic embeddings without rendering (how: last column; recall queries are sketch embeddings, or jittered gallery points when the model's embeddings collapsed)",
        "- stages: validate/render/encode/search from RankResult.timings_ms (search includes the exact target "
        "rank), response = building + JSON-encoding the endpoint's dict, total = wall time of all",
        "",
        *target_table(targets),
        "",
        *markdown_table(
            (
                *("photos", "index", "build s", "RSS +MB (peak)", "validate", "render", "encode", "search+rank"),
                *("response", "total p50", "total p95", "k-NN p50 / p95", "recall@10", "target rank p50"),
                "synthetic part",
            ),
            [stage_row(r) for r in rows],
            "rl" + "r" * 13,
        ),
    ]
    lines += ["", "Stage columns are p50 in ms. Plot: `latency.png`."]
    compared = [(r, alt) for r in rows for alt in r.get("alternatives", [])]
    if compared:
        lines += [
            "",
            "Index kinds on the same vectors and queries (the first row of each size is the default):",
            "",
            *markdown_table(
                ("photos", "index", "build s", "RSS +MB", "k-NN p50 / p95 ms", "recall@10"),
                [
                    (f"{r['n']:,}", alt["kind"], f"{alt['build_s']:.1f}", f"{alt['rss_delta_mb']:.0f}")
                    + (f"{alt['search']['p50']:.3f} / {alt['search']['p95']:.3f}", f"{alt['recall@10']:.3f}")
                    for r in rows
                    for alt in ([r, *r.get("alternatives", [])] if r.get("alternatives") else [])
                ],
                "rlrrrr",
            ),
        ]
    write_results(
        cfg.name, lines, targets, {"rows": rows, "config": {k: str(v) for k, v in vars(cfg).items()}}, machine
    )
    plot(rows, cfg)
