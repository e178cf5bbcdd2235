"""The report of ``bench_cluster.py``: per server, start-up and idle cost, then every measured load.

Writes ``<name>.md`` / ``<name>.json`` (no targets: a comparison) and ``<name>.png`` (p50 and p95
per-stroke latency against concurrent sessions, one line pair per server).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING

from bench.lib.common import header_lines, markdown_table, model_label, percentiles, versions, write_results
from bench.lib.plots import save_plot, use_agg

if TYPE_CHECKING:
    from bench.load.bench_cluster import Config


def summary(run: dict) -> dict:
    ok = [r for r in run["rows"] if "latency_ms" in r]
    return {
        "latency": percentiles([r["latency_ms"] for r in ok]),
        "server": percentiles([r["server_ms"] for r in ok]),
        "throughput": len(ok) / max(run["wall_s"], 1e-9),
        "batches": dict(sorted(Counter(r["batch_size"] for r in ok).items())),
        "errors": len(run["rows"]) - len(ok) + run["expected"] - len(run["rows"]),
        "checks": {c: sum(r.get("check") == c for r in ok) for c in ("exact", "equivalent", "mixup")},
        "rank_ok": sum(bool(r.get("rank_ok")) for r in ok),
        "n": len(ok),
    }


TABLE_HEADER = (
    *("server", "sessions", "strokes", "throughput strokes/s", "p50 ms", "p95 ms", "p99 ms", "server p50 / p95 ms"),
    *("strokes per forward: count", "answers exact / equiv. / mix-up", "target rank equal", "errors"),
    *("server CPU ms per stroke (all / above idle)", "load-gen CPU % of 2 cores", "load avg after"),
)


def table(results: dict) -> list[str]:
    rows = [
        run_row(name, users, run, res["idle_cores"])
        for name, res in results.items()
        for users, run in res["runs"].items()
    ]
    return markdown_table(TABLE_HEADER, rows, "l" + "r" * 7 + "l" + "r" * 6)


def run_row(name: str, users: int, run: dict, idle: float) -> tuple:
    """One server and session count: latency, server time, batching, answer checks, CPU per stroke."""
    st = summary(run)
    lat, c, n = st["latency"], st["checks"], st["n"]
    return (
        *(name, users, n, f"{st['throughput']:.1f}", *(f"{lat[q]:.1f}" for q in ("p50", "p95", "p99"))),
        f"{st['server']['p50']:.1f} / {st['server']['p95']:.1f}",
        ", ".join(f"{b}: {k}" for b, k in st["batches"].items()),
        f"{c['exact']} / {c['equivalent']} / {c['mixup']}",
        f"{st['rank_ok']} / {n}",
        st["errors"],
        f"{1e3 * run['server_cpu_s'] / max(n, 1):.1f} / {1e3 * (run['server_cpu_s'] - idle * run['wall_s']) / max(n, 1):.1f}",
        f"{100 * run['client_cpu_s'] / max(run['wall_s'], 1e-9) / (os.cpu_count() or 1):.0f}",
        f"{run['load_avg']:.2f}",
    )


def cost_tables(results: dict, costs: dict) -> list[str]:
    """Each server's start-up, memory, idle CPU and warm-up; then the encoder forward alone per batch size."""
    return [
        *markdown_table(
            (
                *("server", "start-up s", "resident MiB (all its processes)", "idle CPU, cores", "warm-up strokes"),
                "warm-up p50 / p95 ms",
            ),
            [
                (name, f"{res['startup_s']:.1f}", f"{res['rss_mb']:.0f}", f"{res['idle_cores']:.2f}", warm["n"])
                + (f"{warm['latency']['p50']:.1f} / {warm['latency']['p95']:.1f}",)
                for name, res in results.items()
                for warm in [summary(res["warmup"])]
            ],
        ),
        "",
        "Encoder forward alone (this process, channels_last, 1 torch thread, 30 calls after 3 warm-up):",
        "",
        *markdown_table(
            ("strokes per forward", "p50 ms", "p95 ms", "p50 ms per stroke"),
            [(b, f"{c['p50']:.2f}", f"{c['p95']:.2f}", f"{c['p50'] / b:.2f}") for b, c in costs.items()],
            "rrrr",
        ),
    ]


def report(
    results: dict, costs: dict, laptop: dict | None, cfg: Config, machine: dict, command: str, n_strokes: int
) -> None:
    lines = header_lines("Closed-loop sessions: single process vs Ray Serve", command, machine)
    ray_version = versions(("ray",)).get("ray", "not installed")
    lines += [
        f"- ray {ray_version}; model: {model_label(cfg.model)}; gallery: {cfg.gallery_size:,} procedural photos; "
        f"k={cfg.k}; every stroke asks the exact rank of the session's own photo",
        f"- load: closed loop, {cfg.strokes} strokes per session at human times x{cfg.pace:g} (answer, then pen-up "
        f"gap + next stroke); cap {cfg.max_s:.0f} s per load; {n_strokes} stroke states checked",
        f"- Ray app: {cfg.shards} index shards, encoder replicas as named, @serve.batch max 8, no batch wait",
        "- every server starts fresh in its own process group; the load generator (this process) runs on the "
        "same 2 cores (its CPU share is a column)",
        "",
        *cost_tables(results, costs),
        "",
        *(
            [
                f"Laptop path (`Retriever.rank` in process, {laptop['strokes']} strokes with a target, alternating): "
                f"commit {laptop['base_commit']} p50 {laptop['base_p50_ms']:.2f} ms, this tree {laptop['new_p50_ms']:.2f} ms, "
                f"ratio x{laptop['ratio']:.3f}; identical answers (ids, scores, rank) {laptop['identical']} / "
                f"{laptop['strokes']}.",
                "",
            ]
            if laptop
            else []
        ),
        *table(results),
        "",
        "Answers: `exact` = same ids as the single-process library; `equivalent` = same scores from the "
        "session's own embedding within 1e-4, near-tied order; target rank equal = the exact rank equals the "
        "library's for that sketch (a batched forward can move a score by float noise).",
    ]
    raw = {"encoder_batch_ms": costs, "laptop": laptop}
    raw |= {
        name: {
            "startup_s": r["startup_s"],
            "rss_mb": r["rss_mb"],
            "idle_cores": r["idle_cores"],
            "warmup": r["warmup"],
            "runs": {str(u): v for u, v in r["runs"].items()},
        }
        for name, r in results.items()
    }
    write_results(cfg.name, lines, [], {"results": raw, "config": {k: str(v) for k, v in vars(cfg).items()}}, machine)
    plot_latency(cfg, results)


def plot_latency(cfg: Config, results: dict) -> None:
    """p50 and p95 per-stroke latency against the number of concurrent sessions, one line pair per server."""
    use_agg()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, res in results.items():
        users = sorted(res["runs"])
        ax.plot(users, [summary(res["runs"][u])["latency"]["p95"] for u in users], marker="o", label=f"{name} p95")
        ax.plot(
            users, [summary(res["runs"][u])["latency"]["p50"] for u in users], ls="--", marker=".", label=f"{name} p50"
        )
    ax.set(xlabel="concurrent sessions", ylabel="per-stroke latency ms", title="closed-loop sessions, 2 cores")
    ax.legend(fontsize=7)
    save_plot(fig, cfg.name)
