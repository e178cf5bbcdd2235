"""Heads compared on a split that selected nothing: metrics, paired bootstrap intervals, markdown.

Every head (supervised, RL per reward and seed, fair control per seed) is scored on the same cached
sketches of the comparison split (``holdout``, or ``test`` when the data has one), so differences
are paired by sketch. ``seed-mean`` rows average each sketch's per-sketch metric over the seeds
before bootstrapping, so their interval is about the method, not one lucky seed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from retrieval.evaluation.metrics import HEADLINE_METRICS, paired_bootstrap, per_sketch, summarize
from retrieval.model.progress_head import ProgressHead
from rl.features import FeatureCache
from rl.scoring import step_ranks

N_BOOT = 10_000


def score_heads(cache: FeatureCache, heads: Mapping[str, ProgressHead]) -> dict[str, np.ndarray]:
    """``{name: (S, T) ranks}`` of each head on ``cache``."""
    return {name: step_ranks(cache, head) for name, head in heads.items()}


def seed_mean_bootstrap(
    ranks_a: list[np.ndarray], ranks_b: list[np.ndarray], n_gallery: int, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Paired bootstrap of (mean over A's seeds) minus (mean over B's seeds) of each sketch's metrics."""
    a = [per_sketch(r, n_gallery) for r in ranks_a]
    b = [per_sketch(r, n_gallery) for r in ranks_b]
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(a[0]["m@A"]), size=(N_BOOT, len(a[0]["m@A"])))
    out = {}
    for key in HEADLINE_METRICS:
        diff = np.mean([x[key] for x in a], axis=0) - np.mean([x[key] for x in b], axis=0)
        low, high = np.percentile(diff[rows].mean(axis=1), [2.5, 97.5])
        out[key] = {"delta": float(diff.mean()), "low": float(low), "high": float(high)}
    return out


def compare(
    cache: FeatureCache, supervised: ProgressHead, methods: Mapping[str, list[ProgressHead]], control: str
) -> dict:
    """Metrics of every head and paired intervals: each method vs supervised, each method vs ``control``.

    Args:
        cache: the comparison split's cached features.
        supervised: the supervised head every method started from.
        methods: ``{method name: [head for seed 0, 1, ...]}``; seeds of different methods pair up.
        control: the name in ``methods`` of the fair control.
    """
    n = len(cache.photo_ids)
    base = step_ranks(cache, supervised)
    ranks = {name: [step_ranks(cache, h) for h in heads] for name, heads in methods.items()}
    out: dict = {"supervised": summarize(base, n), "methods": {}, "n_gallery": n, "n_sketches": cache.num_sketches}
    for name, per_seed in ranks.items():
        entry: dict = {"seeds": [], "vs_supervised": seed_mean_bootstrap(per_seed, [base], n)}
        if name != control:
            entry["vs_control"] = seed_mean_bootstrap(per_seed, ranks[control], n)
        for s, r in enumerate(per_seed):
            seed_entry = {
                "metrics": summarize(r, n),
                "vs_supervised": paired_bootstrap(r, base, n, keys=HEADLINE_METRICS, seed=s),
            }
            if name != control:
                seed_entry["vs_control"] = paired_bootstrap(r, ranks[control][s], n, keys=HEADLINE_METRICS, seed=s)
            entry["seeds"].append(seed_entry)
        entry["mean"] = {k: float(np.mean([s["metrics"][k] for s in entry["seeds"]])) for k in HEADLINE_METRICS}
        out["methods"][name] = entry
    return out


def _interval(d: Mapping[str, float]) -> str:
    mark = " *" if d["low"] > 0 else (" (-)" if d["high"] < 0 else "")
    return f"{d['delta']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]{mark}"


def _sketch_less(m: Mapping) -> str:
    return " / ".join("-" if v["share"] is None else f"{v['share']:.0f}" for v in m["sketch_less"].values())


def markdown(result: Mapping, split: str, control: str) -> str:
    """Tables: headline metrics per head and seed; intervals vs supervised and vs the control."""
    keys = HEADLINE_METRICS
    lines = [
        f"Comparison split: **{split}** ({result['n_sketches']} sketches, gallery {result['n_gallery']} photos); "
        "no head was trained or selected on it. Percent. Sketch-less = mean share of points drawn (%) "
        "when the photo first entered the top 1 / 5 / 10, over sketches whose complete drawing gets there.",
        "",
        "| head | seed | " + " | ".join(keys) + " | sketch-less 1/5/10 |",
        "|---|---|" + "---:|" * (len(keys) + 1),
    ]
    sup = result["supervised"]
    lines.append("| supervised | - | " + " | ".join(f"{sup[k]:.2f}" for k in keys) + f" | {_sketch_less(sup)} |")
    for name, entry in result["methods"].items():
        for s, seed_entry in enumerate(entry["seeds"]):
            m = seed_entry["metrics"]
            lines.append(f"| {name} | {s} | " + " | ".join(f"{m[k]:.2f}" for k in keys) + f" | {_sketch_less(m)} |")
    lines += [
        "",
        "Differences with paired bootstrap 95 % intervals over sketches (10,000 resamples); `*` = interval "
        "above 0, `(-)` = below 0. `seed-mean`: each sketch's metric averaged over the seeds first.",
        "",
        "| comparison | seed | Δm@A | Δm@B | ΔA@1 | ΔA@10 |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in result["methods"].items():
        for other, key in (("supervised", "vs_supervised"), (control, "vs_control")):
            if key not in entry:
                continue
            rows = [(str(s), e[key]) for s, e in enumerate(entry["seeds"])] + [("seed-mean", entry[key])]
            for seed, d in rows:
                cells = " | ".join(_interval(d[k]) for k in HEADLINE_METRICS)
                lines.append(f"| {name} − {other} | {seed} | {cells} |")
    return "\n".join(lines) + "\n"
