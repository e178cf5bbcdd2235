"""The SB3 callback that scores the policy's head on validation, keeps the best, and keeps time."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm

from retrieval.evaluation.metrics import HEADLINE_METRICS, selection_score
from retrieval.model.progress_head import ProgressHead
from rl.features import FeatureCache
from rl.scoring import evaluate_head


class HeadSelectionCallback(BaseCallback):
    """Evaluate the action-mean head on the validation cache every ``eval_every`` env steps.

    The head before any update is evaluated first and is the initial best, so a run that never
    improves hands back the supervised head unchanged. Training stops once ``minutes`` have passed.
    Each evaluation appends a row to ``csv_path`` (timesteps, seconds, validation headline metrics,
    the head's m@B on the training sketches, the mean reciprocal rank of the exploring rollouts since
    the last row, and whether the row is the new best).

    Args:
        val_cache: cached validation features and gallery.
        train_cache: cached training features (for the train m@B column), or ``None``.
        get_head: returns a detached copy of the current head (a ``ProgressHead``).
        eval_every: env steps between evaluations.
        minutes: wall-clock budget, measured from the start of training.
        select_metric: one of ``retrieval.evaluation.metrics.SELECTION_METRICS`` (see ``selection_score``).
        csv_path: the evaluation log.
        progress: show a tqdm bar over the time budget.
    """

    def __init__(
        self,
        val_cache: FeatureCache,
        train_cache: FeatureCache | None,
        get_head: Callable[[], ProgressHead],
        *,
        eval_every: int,
        minutes: float,
        select_metric: str,
        csv_path: Path,
        progress: bool = True,
    ) -> None:
        super().__init__()
        selection_score({k: 0.0 for k in HEADLINE_METRICS}, select_metric)  # fail fast on a typo
        self.val_cache = val_cache
        self.train_cache = train_cache
        self.get_head = get_head
        self.eval_every = int(eval_every)
        self.budget_s = 60.0 * float(minutes)
        self.select_metric = select_metric
        self.csv_path = Path(csv_path)
        self.show_progress = progress
        self.best_head: ProgressHead | None = None
        self.best_metrics: dict = {}
        self.baseline_metrics: dict = {}
        self.best_timesteps = 0
        self._best_score = -np.inf
        self.last_eval_step = 0
        self._start = 0.0
        self._train_rr: list[float] = []
        self._bar: tqdm | None = None

    def _on_training_start(self) -> None:
        self._start = time.monotonic()
        with open(self.csv_path, "w", newline="") as f:
            csv.writer(f).writerow(
                ["timesteps", "seconds", *HEADLINE_METRICS, "train_m@B", "rollout_reciprocal_rank", "is_best"]
            )
        self._bar = tqdm(total=round(self.budget_s), desc="PPO", unit="s", disable=not self.show_progress)
        self.baseline_metrics = self.evaluate_now()

    def evaluate_now(self) -> dict:
        """Score the current head, log it, and keep it if it is the best so far; returns its metrics."""
        if self.model is not None:
            self.num_timesteps = self.model.num_timesteps  # also right when called after learn()
        head = self.get_head()
        metrics = evaluate_head(self.val_cache, head)
        score = selection_score(metrics, self.select_metric)
        is_best = score > self._best_score
        if is_best:
            self._best_score, self.best_metrics = score, metrics
            self.best_head = head
            self.best_timesteps = self.num_timesteps
        # Exploring (noisy) actions vs the deterministic head on the training sketches: tells noise from overfitting.
        rollout_rr = float(np.mean(self._train_rr)) if self._train_rr else float("nan")
        self._train_rr.clear()
        train_mb = evaluate_head(self.train_cache, head)["m@B"] if self.train_cache is not None else np.nan
        with open(self.csv_path, "a", newline="") as f:
            csv.writer(f).writerow(
                [
                    self.num_timesteps,
                    round(time.monotonic() - self._start, 2),
                    *(round(metrics[k], 4) for k in HEADLINE_METRICS),
                    round(train_mb, 4),
                    round(rollout_rr, 5),
                    int(is_best),
                ]
            )
        self.last_eval_step = self.num_timesteps
        return metrics

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", ()):
            if "rank" in info:
                self._train_rr.append(1.0 / info["rank"])
        if self.num_timesteps - self.last_eval_step >= self.eval_every:
            self.evaluate_now()
        elapsed = time.monotonic() - self._start
        if self._bar is not None and round(elapsed) != self._bar.n:  # redraw once a second, not every step
            self._bar.n = min(round(elapsed), self._bar.total)
            self._bar.set_postfix_str(f"best {self.select_metric}={self._best_score:.2f}", refresh=False)
            self._bar.refresh()
        return elapsed < self.budget_s

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.close()
