"""Encoder inference options side by side: per-stroke latency and the accuracy they cost.

Options (all built in one process and timed interleaved, 10 calls of each in turn, so load changes
on a shared machine hit every option alike and the ratios to ``eager`` are fair; an option that fails
to build here, e.g. torch.compile without a compiler, is reported with its error):

- ``eager``: the model as the app runs it (reference for every ratio).
- ``channels_last``: NHWC memory format (``Encoder(channels_last=True)``).
- ``compile``: ``torch.compile`` (inductor, CPU) of the sketch and photo branches; first-call
  compile time reported separately.
- ``res96`` / ``res112``: lower network input resolution (same rasters, resized by the encoder; the
  gallery is embedded at that resolution too).
- ``int8_dynamic``: ``torch.ao.quantization.quantize_dynamic`` of the Linear layers (weights int8).

Not measured: static int8 (needs a calibrated, fused conv graph: a port of the network, not an
option) and ONNX Runtime (not in requirements.txt; adding a large dependency needs a measured
reason first: the eager encoder already meets the budget, see bench/results/latency.md).

Latency: render + embed of one partial sketch (stroke prefixes of procedural sketches), batch 1,
``--threads`` torch threads. Accuracy: ``retrieval.evaluation.protocol.evaluate_split`` on the procedural
``val`` split of ``--data`` (m@B, m@A, A@1, A@10).

    .venv/bin/python -m bench.speed.bench_encoder_options                       # all options (~1-2 min on 2 cores)
    .venv/bin/python -m bench.speed.bench_encoder_options --options eager,res96 --reps 100 --data procedural:photos=300
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.lib.common import (
    DEFAULT_MODEL,
    Target,
    command_line,
    header_lines,
    load_encoder,
    machine_info,
    markdown_table,
    model_label,
    percentiles,
    target_table,
    write_results,
)
from bench.lib.plots import save_plot, use_agg
from retrieval.cli import parse_config
from retrieval.runtime import set_threads

OPTIONS = ("eager", "channels_last", "compile", "res96", "res112", "int8_dynamic")
SERVED = "channels_last"  # what app.py serves: Encoder.load(model, channels_last=True)


@dataclass
class Config:
    """Benchmark settings."""

    options: str = ",".join(OPTIONS)  # comma-separated subset of OPTIONS
    reps: int = 300  # timed per-stroke embeddings per option
    warmup: int = 20
    threads: int = 1  # torch threads
    data: str = "procedural:photos=1000"  # dataset spec whose val split measures accuracy
    model: Path = DEFAULT_MODEL
    seed: int = 0
    name: str = "encoder_options"


def build_option(name: str, model: Path):
    """The Encoder for one option (see module docstring)."""
    import torch

    from retrieval.model.encoder import Encoder

    if name == "channels_last":
        return load_encoder(model, channels_last=True)
    encoder = load_encoder(model)
    if name == "eager":
        return encoder
    if name.startswith("res"):
        return Encoder(encoder.net, {**encoder.meta, "input_size": int(name[3:])})
    if name == "int8_dynamic":
        quantised = torch.ao.quantization.quantize_dynamic(encoder.net, {torch.nn.Linear}, dtype=torch.qint8)
        return Encoder(quantised, encoder.meta)
    if name == "compile":
        net = encoder.net
        net.embed_sketches = torch.compile(net.embed_sketches)  # instance attributes shadow the methods
        net.embed_photos = torch.compile(net.embed_photos)
        return encoder
    raise ValueError(f"unknown option {name!r}; choose from {OPTIONS}")


def partial_sketches(n: int, seed: int) -> list:
    """Stroke prefixes of procedural sketches: what the app embeds after each stroke."""
    from retrieval.data.procedural import generate_sketch

    out = []
    for index in range(n):
        sketch = generate_sketch(seed, index, 0)
        out += [sketch.first_strokes(k) for k in range(1, sketch.num_strokes + 1)]
    return out


def latencies(encoders: dict, cfg: Config) -> dict[str, dict]:
    """Interleaved timing: rounds of 10 calls per option, so load changes hit every option alike."""
    sketches = partial_sketches(20, cfg.seed)
    times: dict[str, list[float]] = {name: [] for name in encoders}
    rounds = max(1, (cfg.warmup + cfg.reps) // 10)
    for r in range(rounds):
        for name, encoder in encoders.items():
            for i in range(10):
                sketch = sketches[(r * 10 + i) % len(sketches)]
                start = time.perf_counter()
                encoder.embed_sketches(encoder.render(sketch))
                if r * 10 + i >= cfg.warmup:
                    times[name].append((time.perf_counter() - start) * 1e3)
    return {name: percentiles(t) for name, t in times.items()}


def measure(names: list[str], cfg: Config) -> list[dict]:
    """Build every option (first call timed: compile happens there), time them interleaved, evaluate each."""

    from retrieval.data.datasets import open_dataset
    from retrieval.evaluation.protocol import evaluate_split

    set_threads(cfg.threads)
    probe = partial_sketches(1, cfg.seed)[0]
    encoders, rows = {}, {}
    for name in names:
        print(f"option {name}: building", flush=True)
        try:
            encoder = build_option(name, cfg.model)
            start = time.perf_counter()
            encoder.embed_sketches(encoder.render(probe))
            rows[name] = {"option": name, "first_call_ms": (time.perf_counter() - start) * 1e3}
            encoders[name] = encoder
        except Exception as exc:  # noqa: BLE001 - an option that does not work here is a result, not a crash
            rows[name] = {"option": name, "error": f"{type(exc).__name__}: {exc}"[:300]}
    for name, lat in latencies(encoders, cfg).items():
        rows[name]["latency"] = lat
    dataset = open_dataset(cfg.data)
    for name, encoder in encoders.items():
        print(f"option {name}: evaluating", flush=True)
        metrics = evaluate_split(encoder, dataset, "val").summary
        rows[name]["metrics"] = {k: metrics[k] for k in ("m@B", "m@A", "A@1", "A@10", "n_gallery", "n_sketches")}
    return [rows[n] for n in names]


def option_row(r: dict, ref: dict | None) -> tuple:
    """One option's row of the report: latency, its ratio to eager, first call, accuracy and the verdict."""
    if "error" in r:
        return (r["option"], *[""] * 8, r["error"])
    m, lat = r["metrics"], r["latency"]
    ratio = f"x{lat['p50'] / ref['latency']['p50']:.2f}" if ref else ""
    return (
        *(r["option"], f"{lat['p50']:.2f}", f"{lat['p95']:.2f}", ratio, f"{r['first_call_ms']:.0f}"),
        *(f"{m['m@B']:.2f}", f"{m['m@A']:.2f}", f"{m['A@1']:.1f}", f"{m['A@10']:.1f}", verdict(r, ref)),
    )


def verdict(row: dict, ref: dict | None) -> str:
    """Why an option is or is not served, from this run's numbers."""
    if row["option"] == SERVED:
        return "served by the app"
    if ref is None or row["option"] == "eager":
        return "reference"
    lost = ref["metrics"]["m@B"] - row["metrics"]["m@B"]
    ratio = row["latency"]["p50"] / ref["latency"]["p50"]
    if lost > 1.0:
        return f"rejected: loses {lost:.1f} m@B points" + (" and is not faster" if ratio >= 0.98 else "")
    if ratio >= 0.98:
        return "rejected: not faster"
    if row["first_call_ms"] > 1000:
        return (
            f"not served: x{ratio:.2f} per stroke but {row['first_call_ms'] / 1e3:.0f} s of compiling at start-up "
            "and a C compiler at run time"
        )
    return f"candidate: x{ratio:.2f} at equal accuracy"


def report(rows: list[dict], cfg: Config, machine: dict, command: str) -> None:
    ok = {r["option"]: r for r in rows if "error" not in r}
    ref = ok.get("eager")
    lines = header_lines("Encoder options: latency vs accuracy", command, machine)
    lines += [
        f"- model: {model_label(cfg.model)}; torch threads {cfg.threads}; {cfg.reps} timed render+embed calls of "
        "partial sketches (batch 1) after warm-up",
        f"- accuracy: retrieval.evaluation.protocol.evaluate_split on `{cfg.data}` split val (17 point cuts per sketch, "
        "all val photos as gallery)",
        "",
    ]
    targets = []
    served = ok.get(SERVED)
    if ref and served:
        ratio = served["latency"]["p50"] / ref["latency"]["p50"]
        targets = [
            Target(
                f"served option `{SERVED}`: m@B change vs eager",
                served["metrics"]["m@B"] - ref["metrics"]["m@B"],
                -1.0,
                ">=",
                "pts",
            ),
            Target(f"served option `{SERVED}`: p50 latency vs eager", ratio, 1.0, "<=", "x"),
        ]
    lines += [
        *target_table(targets),
        "",
        *markdown_table(
            ("option", "p50 ms", "p95 ms", "p50 vs eager", "first call ms", "m@B", "m@A", "A@1", "A@10", "note"),
            [option_row(r, ref) for r in rows],
            "l" + "r" * 8 + "l",
        ),
    ]
    lines += [
        "",
        "Ratios come from the same run (options timed interleaved). With an untrained model the "
        "accuracy columns are near chance and only show whether an option changes the embeddings. "
        "Plot: `encoder_options.png`.",
    ]
    write_results(cfg.name, lines, targets, {"rows": rows}, machine)
    plot(ok, cfg)


def plot(ok: dict[str, dict], cfg: Config) -> None:
    use_agg()
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = list(ok)
    x = np.arange(len(names))
    ax1.bar(x - 0.2, [ok[n]["latency"]["p50"] for n in names], 0.4, label="p50")
    ax1.bar(x + 0.2, [ok[n]["latency"]["p95"] for n in names], 0.4, label="p95")
    ax1.set_xticks(x, names, rotation=20, fontsize=8)
    ax1.set(title="per-stroke render + embed", ylabel="ms")
    ax1.legend(fontsize=8)
    ax2.bar(x, [ok[n]["metrics"]["m@B"] for n in names], 0.6, color="tab:green")
    ax2.set_xticks(x, names, rotation=20, fontsize=8)
    ax2.set(title=f"val m@B ({cfg.data})", ylabel="%")
    save_plot(fig, cfg.name)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse_args(argv)
    machine = machine_info()
    names = [o.strip() for o in cfg.options.split(",") if o.strip()]
    unknown = sorted(set(names) - set(OPTIONS))
    if unknown:
        raise SystemExit(f"unknown options {unknown}; choose from {', '.join(OPTIONS)}")
    if "eager" not in names:
        names.insert(0, "eager")  # the reference for every ratio
    rows = measure(names, cfg)
    for r in rows:
        print(
            f"  {r['option']}: "
            + (r["error"] if "error" in r else f"p50 {r['latency']['p50']:.2f} ms, m@B {r['metrics']['m@B']:.2f}"),
            flush=True,
        )
    report(rows, cfg, machine, command_line(__file__, argv))


def parse_args(argv: list[str] | None = None) -> Config:
    return parse_config(Config, argv, __doc__)


if __name__ == "__main__":
    main()
