"""Choose PPO settings by measurement: short runs from one supervised head, scored on val only.

    python -m rl.sweep --checkpoint runs/chair15/supervised/best --data ../shared/data/chairv2-train \
        --holdout-fraction 0.2 --cache-dir runs/chair15/cache --minutes 1 --out runs/sweep

Each variant is ``RLConfig`` with a few fields changed (``VARIANTS``); every run gets the same
wall-clock minutes and the same cached features. The table (``OUT/sweep.md``) shows the best val
m@A / m@B / A@1 / A@10 each reached and after how many env steps, next to the supervised head's.
Nothing here looks at the holdout split: choosing settings on it would spend the only data that
selected nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from retrieval.cli import parse_config
from retrieval.evaluation.metrics import HEADLINE_METRICS
from rl.inputs import HeadInputs
from rl.train import load_inputs, rl_config_from, train

# name -> RLConfig overrides. "old" = the settings before the progress head (issue 13).
VARIANTS: dict[str, dict] = {
    "old: lr 1e-5, log-std -3, KL 0.03, linear": dict(
        learning_rate=1e-5, log_std_init=-3.0, target_kl=0.03, hidden=0, n_epochs=4
    ),
    "lr 1e-4, log-std -2, 10 epochs": dict(learning_rate=1e-4, log_std_init=-2.0, target_kl=0.0, n_epochs=10),
    "lr 3e-4, log-std -2, 10 epochs": dict(learning_rate=3e-4, log_std_init=-2.0, target_kl=0.0, n_epochs=10),
    "lr 1e-3, log-std -1, 10 epochs": dict(learning_rate=1e-3, log_std_init=-1.0, target_kl=0.0, n_epochs=10),
    "lr 3e-4, log-std -1, 10 epochs": dict(learning_rate=3e-4, log_std_init=-1.0, target_kl=0.0, n_epochs=10),
    "lr 3e-4, log-std -2, 10 epochs, actor-only": dict(
        learning_rate=3e-4, log_std_init=-2.0, target_kl=0.0, n_epochs=10, actor_only=True
    ),
    "lr 3e-4, log-std -2, 10 epochs, ent 0.01": dict(
        learning_rate=3e-4, log_std_init=-2.0, target_kl=0.0, n_epochs=10, ent_coef=0.01
    ),
    "lr 3e-4, log-std -2, 10 epochs, linear head": dict(
        learning_rate=3e-4, log_std_init=-2.0, target_kl=0.0, n_epochs=10, hidden=0
    ),
    # second round, around the first round's best (lr 1e-4, log-std -2)
    "lr 3e-5, log-std -2, 10 epochs": dict(learning_rate=3e-5, log_std_init=-2.0, target_kl=0.0, n_epochs=10),
    "lr 1e-4, log-std -3, 10 epochs": dict(learning_rate=1e-4, log_std_init=-3.0, target_kl=0.0, n_epochs=10),
    "lr 1e-4, log-std -2, 10 epochs, gamma 0": dict(
        learning_rate=1e-4, log_std_init=-2.0, target_kl=0.0, n_epochs=10, gamma=0.0
    ),
    "lr 1e-4, log-std -2, 10 epochs, actor-only": dict(
        learning_rate=1e-4, log_std_init=-2.0, target_kl=0.0, n_epochs=10, actor_only=True
    ),
}


@dataclass
class SweepConfig(HeadInputs):
    """Short PPO runs of several settings from one supervised head, compared on val."""

    out: str = "runs/sweep"
    """output folder: one run folder per variant, sweep.md, sweep.json"""
    minutes: float = 1.0
    """wall-clock budget of each run"""
    only: tuple[str, ...] = ()
    """run only the variants whose name contains one of these strings (default: all)"""
    seed: int = 0
    """PPO seed (the split's seed is --split-seed, default the checkpoint card's)"""
    threads: int = 1
    """torch threads"""


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(SweepConfig, argv)
    base = rl_config_from(cfg, export=False, progress=False)
    encoder, _, train_cache, val_cache = load_inputs(base)
    state = encoder.sketch_head_state()
    head = (state["weight"].numpy(), state["bias"].numpy())
    rows, supervised = {}, None
    for i, (name, overrides) in enumerate(VARIANTS.items()):
        if cfg.only and not any(s in name for s in cfg.only):
            continue
        run = replace(base, out=str(Path(cfg.out) / f"v{i}"), **overrides)
        result = train(run, train_cache=train_cache, val_cache=val_cache, head=head)
        supervised = result.baseline_metrics
        rows[name] = {k: result.best_metrics[k] for k in HEADLINE_METRICS}
        rows[name].update(best_step=result.best_timesteps, steps=result.timesteps)
        print(name, rows[name], flush=True)
    lines = [
        f"PPO settings, {cfg.minutes} min each from the same supervised head; best head on **val** "
        f"({val_cache.num_sketches} sketches, {len(val_cache.photo_ids)} photos). Defaults otherwise as "
        "`rl.train.RLConfig` (hidden 64, reward rank+kendall, gamma 0.5, 16 envs x 64 steps).",
        "",
        "| settings | " + " | ".join(f"val {k}" for k in HEADLINE_METRICS) + " | best at step | steps run |",
        "|---|" + "---:|" * (len(HEADLINE_METRICS) + 2),
    ]
    if supervised is not None:
        lines.append(f"| supervised head | {' | '.join(f'{supervised[k]:.2f}' for k in HEADLINE_METRICS)} | - | - |")
    for name, r in rows.items():
        cells = " | ".join(f"{r[k]:.2f}" for k in HEADLINE_METRICS)
        lines.append(f"| {name} | {cells} | {r['best_step']} | {r['steps']} |")
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / "sweep.md").write_text("\n".join(lines) + "\n")
    (Path(cfg.out) / "sweep.json").write_text(json.dumps({"config": asdict(cfg), "rows": rows}, indent=2))
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
