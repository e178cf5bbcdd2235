"""The fair control for the RL stage: the same head, trained by supervised gradient descent.

PPO starts from the supervised head and trains for extra minutes; a gain over the supervised head
could be "more training" rather than "RL". The control takes the very same starting head (a
``ProgressHead`` with the same MLP width), the same cached train features and the same wall-clock
minutes, and minimises InfoNCE (softmax cross-entropy of the true photo among all training photos,
at every drawing step) with Adam; it keeps the best head on validation by the same score and
cadence as the PPO callback. So "RL vs control" compares learning signals, not budgets.

    python -m rl.control --checkpoint runs/supervised/best --data DIR --minutes 8 --out runs/control
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from retrieval.cli import parse_config
from retrieval.model.progress_head import ProgressHead
from rl.callbacks import HEADLINE, selection_score
from rl.features import FeatureCache
from rl.scoring import evaluate_head, make_head


@dataclass
class ControlConfig:
    """Train the RL stage's head architecture by supervised gradient descent on the same cached features."""

    checkpoint: str = ""
    """supervised encoder checkpoint folder (frozen backbone; its sketch head is the start point)"""
    data: str = "procedural"
    """dataset spec for retrieval.data.datasets.open_dataset"""
    val_fraction: float = 0.1
    """share of train photos carved out as val (as in the supervised run)"""
    holdout_fraction: float = 0.0
    """share of train photos carved out as 'holdout' (as in the supervised run)"""
    out: str = "runs/control"
    """output folder: eval.csv, head.pt, summary.json"""
    cache_dir: str = ".cache/rl-features"
    """where cached frozen features live (shared with rl.train)"""
    hidden: int = 64
    """hidden width of the head's residual MLP (the same as the RL head's)"""
    minutes: float = 10.0
    """wall-clock budget (the same as PPO's)"""
    max_updates: int = 0
    """stop after this many Adam updates (0 = only the time budget)"""
    batch_size: int = 256
    """(sketch, step) pairs per update"""
    learning_rate: float = 1e-3
    """Adam learning rate"""
    temperature: float = 0.07
    """InfoNCE temperature (the supervised stage's)"""
    eval_every: int = 50
    """updates between validation evaluations"""
    select_metric: str = "m@A+m@B"
    """validation score that picks the best head (as rl.train)"""
    seed: int = 0
    """seed of minibatch sampling and of the val split"""
    threads: int = 1
    """torch threads"""
    progress: bool = True
    """show a progress bar"""


@dataclass
class ControlResult:
    head: ProgressHead
    baseline_metrics: dict
    best_metrics: dict
    best_updates: int
    updates: int
    seconds: float


def infonce_loss(head: ProgressHead, cache: FeatureCache, rows: np.ndarray, steps: np.ndarray, tau: float):
    """Cross-entropy of each (sketch, step)'s true photo among all photos of ``cache``."""
    feats = torch.as_tensor(cache.features[rows, steps])
    progress = torch.as_tensor(cache.ink[rows, steps] / float(head.ink_ref))[:, None]
    emb = F.normalize(head(torch.cat([feats, progress], dim=1)), dim=1)
    logits = emb @ torch.as_tensor(cache.photo_embeddings).T / tau
    return F.cross_entropy(logits, torch.as_tensor(cache.true_index[rows]))


def train_control(
    cfg: ControlConfig, train_cache: FeatureCache, val_cache: FeatureCache, weight: np.ndarray, bias: np.ndarray
) -> ControlResult:
    """Adam on InfoNCE from the supervised head for ``cfg.minutes``; the best head on validation wins."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    head = make_head(train_cache, weight, bias, cfg.hidden)
    opt = torch.optim.Adam([p for p in head.parameters() if p.requires_grad], lr=cfg.learning_rate)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    valid = np.argwhere(np.arange(train_cache.max_steps)[None, :] < train_cache.num_steps[:, None])  # (pairs, 2)

    best_score, best_head, best_metrics, best_updates = -np.inf, head, {}, 0
    rows_log = []
    start = time.monotonic()

    def evaluate(updates: int) -> dict:
        nonlocal best_score, best_head, best_metrics, best_updates
        head.eval()
        metrics = evaluate_head(val_cache, head)
        head.train()
        score = selection_score(metrics, cfg.select_metric)
        is_best = score > best_score
        if is_best:
            best_score, best_metrics, best_updates = score, metrics, updates
            best_head = make_head(train_cache, weight, bias, cfg.hidden)
            best_head.load_state_dict(head.state_dict())
        rows_log.append([updates, round(time.monotonic() - start, 2), *(round(metrics[k], 4) for k in HEADLINE)])
        rows_log[-1].append(int(is_best))
        return metrics

    baseline = evaluate(0)
    updates = 0
    budget = 60.0 * cfg.minutes
    with tqdm(total=round(budget), desc="control", unit="s", disable=not cfg.progress) as bar:
        while time.monotonic() - start < budget and (not cfg.max_updates or updates < cfg.max_updates):
            pick = valid[rng.integers(0, len(valid), cfg.batch_size)]
            loss = infonce_loss(head, train_cache, pick[:, 0], pick[:, 1], cfg.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            updates += 1
            if updates % cfg.eval_every == 0:
                evaluate(updates)
                bar.n = min(round(time.monotonic() - start), bar.total)
                bar.set_postfix_str(f"loss {loss.item():.3f} best {cfg.select_metric}={best_score:.2f}", refresh=True)
    if rows_log[-1][0] != updates:
        evaluate(updates)
    with open(out / "eval.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["updates", "seconds", *HEADLINE, "is_best"])
        writer.writerows(rows_log)
    torch.save(best_head.state_dict(), out / "head.pt")
    result = ControlResult(best_head.eval(), baseline, best_metrics, best_updates, updates, time.monotonic() - start)
    summary = {
        "config": asdict(cfg),
        "updates": updates,
        "best_updates": best_updates,
        "val_baseline": {k: baseline[k] for k in HEADLINE},
        "val_best": {k: best_metrics[k] for k in HEADLINE},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return result


def main(argv: list[str] | None = None) -> ControlResult:
    from retrieval.evaluation.metrics import format_table
    from rl.train import load_inputs, rl_config_from

    cfg = parse_config(ControlConfig, argv)
    torch.set_num_threads(cfg.threads)
    encoder, _, train_cache, val_cache = load_inputs(rl_config_from(cfg))
    state = encoder.sketch_head_state()
    result = train_control(cfg, train_cache, val_cache, state["weight"].numpy(), state["bias"].numpy())
    print("validation, supervised head:\n" + format_table(result.baseline_metrics))
    print(f"validation, best control head (update {result.best_updates} of {result.updates}):")
    print(format_table(result.best_metrics))
    return result


if __name__ == "__main__":
    main()
