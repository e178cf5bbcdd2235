"""The stage loop of ``retrieval.train.pipeline``: schedule, validation, best/last checkpoints, CSV log, curve.

Kept apart from ``pipeline.py`` (and the per-stage steps in ``steps.py``) so that file reads top to bottom
as config -> run -> setup steps.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from retrieval.data.sketch import Sketch
from retrieval.evaluation.metrics import HEADLINE_METRICS, selection_score
from retrieval.model.card import ModelCard
from retrieval.model.encoder import Encoder
from retrieval.train.batches import PhotoBank, PhotoSide, ValidationSet

LOG_FIELDS = (
    "stage",
    "stage_step",
    "global_step",
    "elapsed_s",
    "loss",
    "lr",
    "gem_p",
    *(f"val_{m}" for m in HEADLINE_METRICS),
    "val_gallery",
)


@dataclass
class RunState:
    """Where a run stands; saved as ``<run>/last/state.json`` next to the resumable checkpoint."""

    done_stages: list[str] = field(default_factory=list)
    stage: str = ""
    stage_step: int = 0
    stage_elapsed: float = 0.0
    global_step: int = 0
    steps_per_stage: dict[str, int] = field(default_factory=dict)
    best_value: float | None = None
    rng_state: dict | None = None

    @classmethod
    def load(cls, run_dir: Path) -> RunState:
        path = run_dir / "last" / "state.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: --resume needs a run folder written by retrieval.train.pipeline"
            )
        return cls(**json.loads(path.read_text()))


def scheduled_lr(cfg: Any, step: int, elapsed: float, budget: float, step_cap: int = 0) -> float:
    """Linear warm-up over ``cfg.warmup_steps``, then cosine decay over the stage's time (or step) budget."""
    frac = max(elapsed / budget if budget > 0 else 1.0, step / step_cap if step_cap else 0.0)
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps)) * 0.5 * (1 + math.cos(math.pi * frac))


def parameter_groups(net: torch.nn.Module, pretrained: tuple[str, ...], lr_scale: float) -> list[dict]:
    """Trainable parameters in optimizer groups: pretrained backbone weights get ``lr_scale``.

    ImageNet features are worth keeping, so their weights move more slowly than the heads and the
    from-scratch parts (the usual fine-tuning practice); frozen parameters are left out.
    """
    slow_prefixes = tuple(f"{tower}_tower.blocks." for tower in pretrained)
    slow, fast = [], []
    for name, param in net.named_parameters():
        if param.requires_grad:
            (slow if name.startswith(slow_prefixes) else fast).append(param)
    groups = [{"params": fast, "lr_scale": 1.0}]
    if slow:
        groups.append({"params": slow, "lr_scale": lr_scale})
    return groups


class StageLoop:
    """Runs one stage at a time on a shared encoder; owns logging and checkpoints."""

    def __init__(
        self,
        cfg: Any,
        encoder: Encoder,
        bank: PhotoBank,
        val: ValidationSet | None,
        state: RunState,
        run_dir: Path,
        card_base: ModelCard,
    ) -> None:
        self.cfg, self.encoder, self.net, self.bank, self.val = cfg, encoder, encoder.net, bank, val
        self.state, self.run_dir, self.card_base = state, run_dir, card_base
        self.size = encoder.meta["input_size"]
        self.rng = np.random.default_rng(cfg.seed)
        if state.rng_state is not None:
            self.rng.bit_generator.state = state.rng_state
        self.step = 0
        self.bank_embeddings: np.ndarray | None = None
        self.quickdraw: list[Sketch] = []
        self.sketches_of: dict[int, list] = {}
        self.sketched = np.zeros(0, dtype=np.int64)
        self.dataset = None  # the RetrievalDataset trained on (None for photo-folder-only runs)
        self.teacher: Encoder | None = None  # the frozen start model the gallery stage distils from
        # stage-only modules trained beside the net (the jigsaw head): in trainer.pt, never in the encoder
        self.heads: dict[str, torch.nn.Module] = {}
        views_rng = np.random.default_rng(cfg.seed + 1)  # apart from self.rng: resuming replays the same views
        self.photo_side = PhotoSide(encoder, bank, getattr(cfg, "photo_views", 1), views_rng, cfg.progress)
        self.log_path = run_dir / "log.csv"
        if not self.log_path.exists():
            with open(self.log_path, "w", newline="") as f:
                csv.DictWriter(f, LOG_FIELDS, lineterminator="\n").writeheader()

    def run_stage(self, stage: str, step_fn: Callable[[StageLoop], torch.Tensor], minutes: float) -> None:
        cfg, state = self.cfg, self.state
        groups = parameter_groups(self.net, getattr(cfg, "pretrained", ()), getattr(cfg, "pretrained_lr_scale", 1.0))
        if stage in self.heads:
            groups.append({"params": list(self.heads[stage].parameters()), "lr_scale": 1.0})
        if self.encoder.progress_head is not None:  # the sketch head the app serves (PhotoSide.sketch_head)
            groups.append({"params": list(self.encoder.progress_head.parameters()), "lr_scale": 1.0})
        opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        elapsed0 = self.resume_stage(stage, opt)
        state.stage = stage
        budget = minutes * 60.0
        start = time.monotonic() - elapsed0
        self.bank_embeddings = None
        cap = cfg.stage_step_cap(stage)
        bar = tqdm(desc=stage, total=cap or None, initial=self.step, disable=not cfg.progress)
        self.net.train()
        for head in self.heads.values():
            head.train()
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= budget or (cap and self.step >= cap):
                break
            lr = scheduled_lr(cfg, self.step, elapsed, budget, cap)
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_scale"]
            loss = step_fn(self)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.step += 1
            state.global_step += 1
            state.steps_per_stage[stage] = self.step
            row = {
                **self.step_columns(stage, start),
                "loss": round(loss.item(), 5),
                "lr": lr,
                "gem_p": round(self.net.pool.p.item(), 4),
            }
            if self.step % cfg.eval_every == 0:
                row.update(self.validate(stage))
                self.net.train()
            if self.step % cfg.save_every == 0:
                self.save_last(stage, opt, time.monotonic() - start)
            self.log(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", best=state.best_value)
        bar.close()
        if self.step % cfg.eval_every != 0 or self.step == 0:  # the stage's final model, unless just scored
            if scores := self.validate(stage):
                self.log({**self.step_columns(stage, start), **scores})
        state.done_stages.append(stage)
        self.save_last(stage, opt, time.monotonic() - start)

    def resume_stage(self, stage: str, opt: torch.optim.Optimizer) -> float:
        """Start ``stage`` at step 0, or where ``<run>/last`` left it (restores ``opt``); returns seconds spent."""
        self.step = 0
        trainer = self.run_dir / "last" / "trainer.pt"
        if self.state.stage != stage or not trainer.is_file():
            return 0.0
        saved = torch.load(trainer, map_location="cpu", weights_only=True)
        opt.load_state_dict(saved["optimizer"])
        if stage in self.heads and stage in saved.get("heads", {}):
            self.heads[stage].load_state_dict(saved["heads"][stage])
        torch.set_rng_state(saved["torch_rng"])
        self.step = self.state.stage_step
        return self.state.stage_elapsed

    def step_columns(self, stage: str, start: float) -> dict:
        """The log columns saying where the run is: stage, steps, seconds since the stage started."""
        return {
            "stage": stage,
            "stage_step": self.step,
            "global_step": self.state.global_step,
            "elapsed_s": round(time.monotonic() - start, 2),
        }

    def validate(self, stage: str) -> dict:
        """Score on val, keep the best checkpoint; without val sketches the latest model is 'best'."""
        card = self.card_base.with_entries(
            stage=stage,
            stage_step=self.step,
            global_step=self.state.global_step,
            steps_per_stage=dict(self.state.steps_per_stage),
            created_utc=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        )
        if self.val is None:
            self.encoder.save(self.run_dir / "best", card=card.with_entries(val=None))
            return {}
        metrics = self.val.evaluate(self.encoder)
        value = selection_score(metrics, self.cfg.select_metric)
        if self.state.best_value is None or value > self.state.best_value:
            self.state.best_value = value
            self.encoder.save(
                self.run_dir / "best",
                card=card.with_entries(val=metrics, select_metric=self.cfg.select_metric, selected_value=value),
            )
        self.plot()
        return {**{f"val_{m}": round(metrics[m], 3) for m in HEADLINE_METRICS}, "val_gallery": metrics["n_gallery"]}

    def save_last(self, stage: str, opt: torch.optim.Optimizer, elapsed: float) -> None:
        last = self.run_dir / "last"
        steps = {"global_step": self.state.global_step, "steps_per_stage": dict(self.state.steps_per_stage)}
        self.encoder.save(last, card=self.card_base.with_entries(stage=stage, **steps))
        heads = {name: head.state_dict() for name, head in self.heads.items() if name == stage}
        torch.save(
            {"optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(), "heads": heads}, last / "trainer.pt"
        )
        self.state.stage_step, self.state.stage_elapsed = self.step, elapsed
        self.state.rng_state = self.rng.bit_generator.state
        (last / "state.json").write_text(json.dumps(asdict(self.state), indent=2))

    def log(self, row: dict) -> None:
        with open(self.log_path, "a", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS, lineterminator="\n").writerow(row)

    def finish(self) -> None:
        self.plot()

    def plot(self) -> None:
        """``curve.png``: training loss and val m@A / m@B against the global step."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import pandas as pd

        log = pd.read_csv(self.log_path)
        if log.empty:
            return
        fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
        for stage, part in log.dropna(subset=["loss"]).groupby("stage", sort=False):
            ax_loss.plot(part["global_step"], part["loss"].rolling(20, min_periods=1).mean(), label=stage)
        ax_loss.set(xlabel="step", ylabel="loss (rolling mean of 20)", title="training loss")
        ax_loss.legend()
        val = log.dropna(subset=["val_m@B"])
        for metric in ("m@A", "m@B", "A@5"):
            ax_val.plot(val["global_step"], val[f"val_{metric}"], marker="o", label=metric)
        gallery = int(val["val_gallery"].iloc[-1]) if len(val) else 0
        ax_val.set(xlabel="step", ylabel="percent", title=f"validation (gallery of {gallery} val photos)")
        ax_val.legend()
        fig.tight_layout()
        fig.savefig(self.run_dir / "curve.png", dpi=90)
        plt.close(fig)
