"""Every benchmark, registered with its purpose and the arguments ``bench/run_all.py`` runs it with.

Purposes: **speed** (one component's latency or throughput), **load** (many sessions against the
running app: latency under load, reliability, hostile clients), **accuracy** (retrieval quality of
models and levers). A bench's script lives in its purpose's folder (``bench/speed/``, ``bench/load/``,
``bench/accuracy/``) and runs as a module from the repository root (``python -m bench.speed.bench_raster``).
A bench's ``name`` is its result file, ``bench/results/<name>.{md,json}``.
"""

from __future__ import annotations

from dataclasses import dataclass

PURPOSES = {
    "speed": "Speed: one component's latency or throughput",
    "load": "Load and reliability: many sessions against the running app",
    "accuracy": "Accuracy: retrieval quality of models and levers",
}


@dataclass(frozen=True)
class Bench:
    """One benchmark run: its result name (``bench/results/<name>.json``), script, purpose, arguments."""

    name: str
    script: str
    purpose: str  # a key of PURPOSES
    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    timeout_s: int = 1800
    default: bool = True  # part of a plain `make bench`; others run with --only (and say what they need)

    @property
    def module(self) -> str:
        """What ``python -m`` runs: the script sits in its purpose's folder (``bench.speed.bench_raster``)."""
        return f"bench.{self.purpose}.{self.script.removesuffix('.py')}"


BENCHES = (
    # speed
    Bench("raster", "bench_raster.py", "speed", quick=("--reps", "500", "--step-reps", "50"), timeout_s=900),
    Bench("procedural", "bench_procedural.py", "speed", quick=("--photos", "1000")),
    Bench(
        "encoder",
        "bench_encoder.py",
        "speed",
        quick=("--archs", "mobilenet_v3_small", "--sizes", "128", "--reps", "50"),
        timeout_s=3600,
    ),
    Bench("index", "bench_index.py", "speed", quick=("--sizes", "10000", "50000", "--queries", "200")),
    Bench("stroke_parse", "bench_stroke_parse.py", "speed", quick=("--reps", "20", "--case-reps", "5"), timeout_s=900),
    Bench("shard_faults", "bench_shard_faults.py", "speed", quick=("--photos", "50000", "--strokes", "100")),
    Bench("latency", "bench_latency.py", "speed", quick=("--sizes", "1k,10k", "--strokes", "150"), timeout_s=5400),
    Bench(
        "encoder_options",
        "bench_encoder_options.py",
        "speed",
        quick=(
            "--options",
            "eager,channels_last,res96,int8_dynamic",
            "--reps",
            "60",
            "--data",
            "procedural:photos=200",
        ),
        timeout_s=3600,
    ),
    Bench(
        "latency_1m",
        "bench_latency.py",
        "speed",
        ("--sizes", "1M", "--strokes", "100", "--name", "latency_1m"),
        timeout_s=5400,
        default=False,
    ),  # ~2 GB RAM, a 1M gallery build
    Bench(
        "index_10m",
        "bench_index_10m.py",
        "speed",
        ("--sizes", "1M,3M,10M", "--scratch", "/work/scratch-scale"),
        timeout_s=7200,
        default=False,
    ),  # a scratch disk of tens of GB (docs/scaling.md)
    # load
    Bench("concurrency", "bench_concurrency.py", "load", quick=("--users", "50", "--strokes", "6", "--rounds", "2")),
    Bench(
        "concurrency_stress",
        "bench_concurrency.py",
        "load",
        ("--pace", "4", "--name", "concurrency_stress"),
        ("--pace", "4", "--rounds", "1", "--name", "concurrency_stress"),
    ),  # 4x human speed: saturated
    Bench(
        "concurrency_warm",
        "bench_concurrency.py",
        "load",
        ("--compare-app-args", "", "--rounds", "4", "--name", "concurrency_warm"),
        default=False,
    ),
    Bench("browser", "bench_browser.py", "load", quick=("--strokes", "50")),  # the target needs >= 50 strokes
    Bench(
        "study_reliability", "bench_study_reliability.py", "load", quick=("--sessions", "10", "--duration-s", "30")
    ),  # full: 30 participants x 2 phases x 120 s (~6 min); quick: 10 x 2 x 30 s
    Bench(
        "hostile", "bench_hostile.py", "load", quick=("--sessions", "10", "--class-s", "15", "--cpu-sessions", "0")
    ),  # full: 30 participants x 8 classes x 40 s + 50 honest x 40 s (~9 min)
    Bench(
        "hostile_replay_precheck",
        "bench_hostile.py",
        "load",
        (
            "--classes",
            "none,journal_replay,rotating_identity,none",
            "--cpu-sessions",
            "0",
            "--name",
            "hostile_replay_precheck",
        ),
        default=False,
    ),
    Bench("stroke_route", "bench_stroke_route.py", "load", quick=("--sessions", "20", "--runs", "1", "--strokes", "6")),
    Bench(
        "capacity",  # docs/scaling.md's capacity plan: cost per stroke at 3 drawing paces, fitted
        "bench_stroke_route.py",
        "load",
        full=("--paces", "1", "2", "3", "--runs", "2", "--strokes", "16", "--name", "capacity"),
        quick=("--paces", "1", "3", "--runs", "1", "--sessions", "10", "--strokes", "6", "--name", "capacity"),
        default=False,
    ),
    Bench("cluster", "bench_cluster.py", "load", default=False),  # the Ray extra: make cluster-venv
    # accuracy: trained models and hours of CPU, run on purpose
    Bench("accuracy", "bench_accuracy.py", "accuracy", timeout_s=6 * 3600, default=False),
    Bench(  # --models name=checkpoint ... : the checkpoints compared (its result file lists them)
        "chair-v2_ablation",
        "bench_ablation.py",
        "accuracy",
        ("--name", "chair-v2_ablation"),
        timeout_s=3 * 3600,
        default=False,
    ),
    Bench(  # --steps 1097: the 10-minute budget on 2 cores (bench/results/adapt_budget.md)
        "adapt",
        "bench_adapt.py",
        "accuracy",
        (
            "--folds",
            "3",
            "--fold-list",
            "0,1,2",
            "--seeds",
            "1",
            "--steps",
            "1097",
            "--target-after",
            "A@10>=75,m@B>=28",
        ),
        timeout_s=6 * 3600,
        default=False,
    ),
    Bench(  # needs runs/bench_accuracy (bench_accuracy.py): a Chair-V2 model per fold, that fold held out
        "adapt_from_chairv2",
        "bench_adapt.py",
        "accuracy",
        (
            *("--folds", "5", "--fold-list", "0,1", "--seeds", "1", "--steps", "1097", "--forgetting-data", "val"),
            *("--model", "runs/bench_accuracy/base__f{fold}__s0/train/best", "--out", "runs/bench_adapt_chairv2"),
            *("--report", "bench/results/adapt_from_chairv2", "--target-gain", "A@1>=3,m@B>=0"),
        ),
        timeout_s=6 * 3600,
        default=False,
    ),
    Bench(  # the timing needs the cores: raise the session's autogroup weight first (see the script)
        "adapt_speed_shoev2",
        "bench_adapt_speed.py",
        "speed",
        ("--photos", "../shared/data/shoev2-photos", "--minutes", "3", "--name", "shoev2"),
        timeout_s=1800,
        default=False,
    ),
    Bench("encoder_sweep", "sweep_encoders.py", "accuracy", timeout_s=6 * 3600, default=False),
)
