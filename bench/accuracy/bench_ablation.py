"""Accuracy levers side by side: several checkpoints, two galleries, re-ranking options, latency.

For every ``--models name=folder`` row, on the ``--split`` (default ``val``) sketches of ``--data``:

- accuracy with the split's own photos as gallery and with ALL photos of the data (``--gallery all``
  of ``retrieval.evaluation``: Chair-V2 val sketches against all 300 train photos), at the 17 point
  cuts (A@1/5/10 on the complete sketch, m@A, m@B along the drawing);
- the re-ranking levers of ``rerank`` (beside this bench) on the same embeddings (alpha-QE per query, DBA
  on the gallery, flip-averaged photo descriptors), each reported as its own row;
- per-stroke encoder latency: render + embed of one partial sketch, batch 1, one thread,
  p50/p95 over ``--reps`` calls, models timed interleaved so machine load hits all alike.

    .venv/bin/python -m bench.accuracy.bench_ablation --data ../shared/data/chairv2-train \\
        --models scratch=runs/a/supervised/best lit=runs/b/supervised/best --name chair-v2_ablation
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.accuracy.rerank import alpha_query_expansion, database_augmentation
from bench.lib.common import command_line, header_lines, machine_info, markdown_table, percentiles, write_results
from retrieval.cli import parse_config
from retrieval.data.augment import flip_photo
from retrieval.data.datasets import open_dataset
from retrieval.evaluation.metrics import HEADLINE_METRICS
from retrieval.evaluation.protocol import embed_steps, gallery_photo_ids, score_embeddings, true_photo_index
from retrieval.model.encoder import Encoder
from retrieval.runtime import set_threads


@dataclass
class AblationConfig:
    """Accuracy of several checkpoints and re-ranking options on one split, two galleries."""

    data: str = "../shared/data/chairv2-train"
    """dataset spec (QMUL folder or procedural spec)"""
    models: tuple[str, ...] = ()
    """rows as name=checkpoint_folder"""
    split: str = "val"
    """split whose sketches are the queries"""
    val_fraction: float = 0.1
    """val carve of the train photos (must match training)"""
    seed: int = 0
    """seed of the val carve (must match training)"""
    rerank: bool = True
    """also report alpha-QE, DBA and flip-averaged photos for each model"""
    reps: int = 60
    """latency calls per model"""
    name: str = "ablation"
    """result file name (<name>.md, <name>.json)"""
    results_dir: str = ""
    """folder of the result files ('' = bench/results)"""
    threads: int = 2
    """torch threads for the accuracy part (latency always uses one)"""


def photo_embeddings(encoder: Encoder, photos: list[np.ndarray], flip_average: bool = False) -> np.ndarray:
    emb = encoder.embed_photos(photos)
    if flip_average:
        emb = emb + encoder.embed_photos([flip_photo(p) for p in photos])
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb


def rows_for_model(name: str, encoder: Encoder, dataset, cfg: AblationConfig, rerank: bool) -> list[dict]:
    records = dataset.sketches(cfg.split)
    sketches = embed_steps(encoder, records)  # size: Q, 17, D
    rows = []
    for gallery in ("split", "all"):
        ids = gallery_photo_ids(dataset, cfg.split, gallery)
        photos = [dataset.load_photo(pid) for pid in ids]
        truth = true_photo_index(records, ids)
        plain = photo_embeddings(encoder, photos)
        variants = {"": (sketches, plain)}
        if rerank:
            flat = sketches.reshape(-1, sketches.shape[2])
            for k in (1, 2):
                qe = alpha_query_expansion(flat, plain, k=k).reshape(sketches.shape)
                variants[f"alpha-QE k={k}"] = (qe, plain)
                variants[f"DBA k={k}"] = (sketches, database_augmentation(plain, k=k))
            variants["flip-averaged photos"] = (sketches, photo_embeddings(encoder, photos, flip_average=True))
        for variant, (s, p) in variants.items():
            metrics = score_embeddings(s, p, truth).summary
            label = f"{name} + {variant}" if variant else name
            rows.append({"model": label, "gallery": len(ids), **{m: metrics[m] for m in HEADLINE_METRICS}})
    return rows


def latency(encoders: dict[str, Encoder], dataset, split: str, reps: int) -> dict[str, dict]:
    """Render + embed of one partial sketch (batch 1, one thread), interleaved across models."""
    set_threads(1)
    sketch = dataset.sketches(split)[0].sketch
    cuts = np.linspace(sketch.num_points // 4, sketch.num_points, reps).astype(int)
    samples: dict[str, list[float]] = {name: [] for name in encoders}
    for enc in encoders.values():  # warm-up
        enc.embed_sketches(enc.render(sketch))
    for n in cuts:
        for name, enc in encoders.items():
            start = time.perf_counter()
            enc.embed_sketches(enc.render(sketch, int(n)))
            samples[name].append((time.perf_counter() - start) * 1000)
    return {name: percentiles(values) for name, values in samples.items()}


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(AblationConfig, argv, description=__doc__)
    if not cfg.models:
        raise SystemExit("give at least one --models name=checkpoint_folder")
    machine = machine_info()
    set_threads(cfg.threads)
    dataset = open_dataset(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed)
    encoders = {}
    for item in cfg.models:
        name, _, folder = item.partition("=")
        encoders[name] = Encoder.load(folder, channels_last=True)
    rows = [row for name, enc in encoders.items() for row in rows_for_model(name, enc, dataset, cfg, cfg.rerank)]
    timing = latency(encoders, dataset, cfg.split, cfg.reps)
    lines = header_lines(f"Accuracy levers on {cfg.data} ({cfg.split})", command_line(__file__, argv), machine)
    table = [
        (row["model"], row["gallery"], *(f"{row[m]:.2f}" for m in HEADLINE_METRICS))
        + tuple(f"{timing[row['model'].split(' + ')[0]][q]:.1f}" for q in ("p50", "p95"))
        for row in rows
    ]
    lines += ["", *markdown_table(("model", "gallery", *HEADLINE_METRICS, "sketch ms p50", "p95"), table)]
    lines += [
        "",
        "Latency: render + embed of one partial sketch, batch 1, one thread, channels_last "
        f"({cfg.reps} calls per model, interleaved). Re-ranking rows reuse the model's embeddings.",
        "",
        "Models: " + ", ".join(f"`{item}`" for item in cfg.models),
    ]
    out_dir = {"out_dir": Path(cfg.results_dir)} if cfg.results_dir else {}
    path = write_results(cfg.name, lines, [], {"rows": rows, "latency_ms": timing}, machine, **out_dir)
    print("\n".join(lines[6:]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
