"""The sharded index under fault injection: exact ranks stay exact, partial answers are flagged, p95 stays bounded.

The in-process :class:`~retrieval.serving.shards.ShardedIndex` (the same merge and deadline as the
Ray ingress) over ``--shards`` flat shards of a clustered gallery, one stroke at a time. One shard
is made faulty per class:

- ``none``: every shard healthy (the reference latency);
- ``hung``: the shard never answers while the class runs (its calls wait until the class ends);
- ``raising``: the shard raises on every call;
- ``slow``: the shard sleeps 3 x the deadline on a random ``--slow-share`` of calls.

Target vectors are cached first by a healthy pass (the ingress caches a target's vector after its
first stroke), as in a running app. Every answer is checked against the unsharded index: a rank
reported exact must equal it (``wrong exact``), an answer that missed a shard must say so
(``partial`` and no target rank exact: ``unflagged``), and its bounds must hold the true rank.

    .venv/bin/python -m bench.speed.bench_shard_faults                 # ~1 min on 2 cores
"""

from __future__ import annotations

import threading
import time
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
    write_results,
)
from bench.lib.synthetic import clustered, unit
from retrieval.cli import parse_config
from retrieval.runtime import set_threads
from retrieval.serving.index import PhotoIndex
from retrieval.serving.shards import LocalShard, ShardedIndex, split_index

CLASSES = ("none", "hung", "raising", "slow")
DEADLINE_SLACK_MS = 15.0  # the merge, thread hand-offs and a 2-core scheduler on top of the deadline


@dataclass
class Config:
    """Fault injection on the in-process sharded index."""

    photos: int = 200_000
    """gallery size (128-d clustered unit vectors)"""
    shards: int = 4
    """shards the gallery is split into (contiguous slices, flat indexes)"""
    strokes: int = 300
    """strokes ranked per class, one at a time"""
    deadline_ms: float = 50.0
    """how long a fan-out waits for the shards"""
    slow_share: float = 0.3
    """share of calls the ``slow`` shard answers late"""
    seed: int = 0
    name: str = "shard_faults"


class FaultyShard:
    """A shard that hangs, raises or answers late, by ``mode`` (None: healthy)."""

    def __init__(self, shard: LocalShard, rng: np.random.Generator, deadline_s: float, slow_share: float) -> None:
        self.shard, self.snapshot = shard, shard.snapshot
        self.mode: str | None = None
        self.released = threading.Event()
        self.rng, self.deadline_s, self.slow_share = rng, deadline_s, slow_share

    def __len__(self) -> int:
        return len(self.shard)

    def __contains__(self, photo_id: str) -> bool:
        return photo_id in self.shard

    @property
    def ids(self) -> list[str]:
        return self.shard.ids

    def target_vector(self, photo_id: str):
        return self.shard.target_vector(photo_id)

    def search(self, queries, k, thresholds, cap=None):
        if self.mode == "hung":
            self.released.wait()
        elif self.mode == "raising":
            raise RuntimeError("injected shard failure")
        elif self.mode == "slow" and self.rng.random() < self.slow_share:
            time.sleep(3 * self.deadline_s)
        return self.shard.search(queries, k, thresholds, cap)


def run_class(sharded: ShardedIndex, faulty: FaultyShard, reference: PhotoIndex, queries, targets, mode) -> dict:
    """Rank every stroke with ``faulty`` in ``mode``; latency percentiles and the checks' counts."""
    faulty.mode, faulty.released = (None if mode == "none" else mode), threading.Event()
    times, partial, wrong_exact, unflagged, bounds_broken = [], 0, 0, 0, 0
    try:
        for q, target in zip(queries, targets):
            start = time.perf_counter()
            answer = sharded.rank(q[None], 10, [target])
            times.append((time.perf_counter() - start) * 1e3)
            _, _, (truth,) = reference.search_and_rank(q[None], 10, [target])
            got = answer.ranks[0]
            partial += answer.partial
            if answer.partial and got is not None and got.exact:
                unflagged += 1
            if got is not None and got.exact and got.rank != truth.rank:
                wrong_exact += 1
            if got is not None and not got.lower <= truth.rank <= got.upper:
                bounds_broken += 1
    finally:
        faulty.released.set()  # a hung shard's waiting calls finish now, outside the timed strokes
    counts = {"partial": partial, "wrong_exact": wrong_exact, "unflagged": unflagged, "bounds_broken": bounds_broken}
    return {"class": mode, "ms": percentiles(times), **counts}


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(Config, argv, description=__doc__)
    set_threads(1)  # one core per shard call, as a shard replica is sized
    rng = np.random.default_rng(cfg.seed)
    vectors = clustered(cfg.photos, 128, rng)
    reference = PhotoIndex.build(vectors, [f"p{i}" for i in range(cfg.photos)], kind="flat")
    picks = rng.integers(0, cfg.photos, cfg.strokes)
    queries = unit(vectors[picks] + rng.standard_normal((cfg.strokes, 128)).astype(np.float32) * 0.05)
    targets = [f"p{i}" for i in picks]
    shards = [LocalShard(part) for part in split_index(reference, cfg.shards, "flat")]
    faulty = FaultyShard(shards[-1], np.random.default_rng(cfg.seed + 1), cfg.deadline_ms / 1e3, cfg.slow_share)
    sharded = ShardedIndex([*shards[:-1], faulty], deadline_s=cfg.deadline_ms / 1e3)
    machine = machine_info()
    try:
        sharded.target_vectors(targets)  # the ingress's cache, filled by each target's first stroke
        rows = [run_class(sharded, faulty, reference, queries, targets, mode) for mode in CLASSES]
    finally:
        sharded.close()
    for row in rows:
        print(row, flush=True)
    report(cfg, rows, machine, argv)


def report(cfg: Config, rows: list[dict], machine: dict, argv: list[str] | None) -> None:
    bound = cfg.deadline_ms + DEADLINE_SLACK_MS
    lines = header_lines("Sharded index under fault injection", command_line(__file__, argv), machine)
    lines += [
        "",
        f"{cfg.photos:,} photos (128-d, clustered) in {cfg.shards} flat shards, the last one faulty; "
        f"deadline {cfg.deadline_ms:g} ms; {cfg.strokes} strokes per class, one at a time, every answer "
        "checked against the unsharded index.",
        "",
        *markdown_table(
            (
                "class",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "partial answers",
                "wrong exact",
                "unflagged partial",
                "bounds broken",
            ),
            [
                (r["class"], f"{r['ms']['p50']:.1f}", f"{r['ms']['p95']:.1f}", f"{r['ms']['p99']:.1f}")
                + (r["partial"], r["wrong_exact"], r["unflagged"], r["bounds_broken"])
                for r in rows
            ],
        ),
    ]
    targets = []
    for r in rows:
        targets += [
            Target(f"{r['class']}: wrong exact ranks", r["wrong_exact"], 0, unit=""),
            Target(f"{r['class']}: partial answers not flagged", r["unflagged"], 0, unit=""),
            Target(f"{r['class']}: bounds that miss the true rank", r["bounds_broken"], 0, unit=""),
        ]
        if r["class"] != "none":
            targets.append(
                Target(f"{r['class']}: p95 within the deadline + {DEADLINE_SLACK_MS:g} ms", r["ms"]["p95"], bound)
            )
    lines += ["", *target_table(targets)]
    write_results(cfg.name, lines, targets, {"config": cfg.__dict__, "classes": rows}, machine)


if __name__ == "__main__":
    main()
