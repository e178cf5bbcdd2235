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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from retrieval.cli import parse_config
from retrieval.evaluation.metrics import HEADLINE_METRICS, selection_score
from retrieval.model.pooling import l2n
from retrieval.model.progress_head import ProgressHead
from retrieval.runtime import set_threads
from rl.features import FeatureCache
from rl.inputs import HeadInputs
from rl.scoring import evaluate_head, make_head


@dataclass
class ControlConfig(HeadInputs):
    """Train the RL stage's head architecture by supervised gradient descent on the same cached features."""

    out: str = "runs/control"
    """output folder: eval.csv, head.pt, summary.json"""
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
    """seed of minibatch sampling (the split's seed is --split-seed)"""
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
    emb = l2n(head(torch.cat([feats, progress], dim=1)))
    logits = emb @ torch.as_tensor(cache.photo_embeddings).T / tau
    return F.cross_entropy(logits, torch.as_tensor(cache.true_index[rows]))


class BestOnVal:
    """Scores the head on val when called, keeps a copy of the best one and a CSV row per evaluation."""

    def __init__(
        self, cfg: ControlConfig, val_cache: FeatureCache, head: ProgressHead, new_head: Callable[[], ProgressHead]
    ) -> None:
        self.cfg, self.val_cache, self.new_head = cfg, val_cache, new_head
        self.best_score, self.best_head, self.best_metrics, self.best_updates = -np.inf, head, {}, 0
        self.rows: list[list] = []
        self.start = time.monotonic()

    def __call__(self, head: ProgressHead, updates: int) -> dict:
        head.eval()
        metrics = evaluate_head(self.val_cache, head)
        head.train()
        score = selection_score(metrics, self.cfg.select_metric)
        is_best = score > self.best_score
        if is_best:
            self.best_score, self.best_metrics, self.best_updates = score, metrics, updates
            self.best_head = self.new_head()
            self.best_head.load_state_dict(head.state_dict())
        seconds = round(time.monotonic() - self.start, 2)
        self.rows.append([updates, seconds, *(round(metrics[k], 4) for k in HEADLINE_METRICS), int(is_best)])
        return metrics


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

    evaluate = BestOnVal(cfg, val_cache, head, lambda: make_head(train_cache, weight, bias, cfg.hidden))
    baseline = evaluate(head, 0)
    updates = 0
    budget = 60.0 * cfg.minutes
    with tqdm(total=round(budget), desc="control", unit="s", disable=not cfg.progress) as bar:
        while time.monotonic() - evaluate.start < budget and (not cfg.max_updates or updates < cfg.max_updates):
            pick = valid[rng.integers(0, len(valid), cfg.batch_size)]
            loss = infonce_loss(head, train_cache, pick[:, 0], pick[:, 1], cfg.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            updates += 1
            if updates % cfg.eval_every == 0:
                evaluate(head, updates)
                bar.n = min(round(time.monotonic() - evaluate.start), bar.total)
                bar.set_postfix_str(
                    f"loss {loss.item():.3f} best {cfg.select_metric}={evaluate.best_score:.2f}", refresh=True
                )
    if evaluate.rows[-1][0] != updates:
        evaluate(head, updates)
    seconds = time.monotonic() - evaluate.start
    result = ControlResult(
        evaluate.best_head.eval(), baseline, evaluate.best_metrics, evaluate.best_updates, updates, seconds
    )
    write_outputs(cfg, out, result, evaluate.rows)
    return result


def write_outputs(cfg: ControlConfig, out: Path, result: ControlResult, rows: list[list]) -> None:
    """eval.csv (one row per evaluation), head.pt (the best head) and summary.json in ``out``."""
    with open(out / "eval.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["updates", "seconds", *HEADLINE_METRICS, "is_best"])
        writer.writerows(rows)
    torch.save(result.head.state_dict(), out / "head.pt")
    summary = {
        "config": asdict(cfg),
        "updates": result.updates,
        "best_updates": result.best_updates,
        "val_baseline": {k: result.baseline_metrics[k] for k in HEADLINE_METRICS},
        "val_best": {k: result.best_metrics[k] for k in HEADLINE_METRICS},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


def main(argv: list[str] | None = None) -> ControlResult:
    from retrieval.evaluation.metrics import format_table
    from rl.train import load_inputs, rl_config_from

    cfg = parse_config(ControlConfig, argv)
    set_threads(cfg.threads)
    encoder, _, train_cache, val_cache = load_inputs(rl_config_from(cfg))
    state = encoder.sketch_head_state()
    result = train_control(cfg, train_cache, val_cache, state["weight"].numpy(), state["bias"].numpy())
    print("validation, supervised head:\n" + format_table(result.baseline_metrics))
    print(f"validation, best control head (update {result.best_updates} of {result.updates}):")
    print(format_table(result.best_metrics))
    return result


if __name__ == "__main__":
    main()
