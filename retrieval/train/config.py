"""The supervised training configuration: stages, losses, the Config dataclass and its encoder flags.

``python -m retrieval.train --help`` lists every field with the docstring written under it here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from retrieval.data.splits import DataSplit
from retrieval.model.spec import ModelSpec, model_spec

# Every stage a run may name. The order of edges and quickdraw changes where the finegrained stage
# starts, not where it ends (docs/results/chair-v2_pretrain_arms.md), so one order serves everywhere.
STAGES = ("jigsaw", "edges", "quickdraw", "finegrained", "gallery")
DEFAULT_STAGES = ("edges", "quickdraw", "finegrained")
# Losses of the finegrained stage (Config.loss); docs/results/chair-v2_recall_at_k.md compares them.
LOSSES = ("infonce", "recall", "infonce+recall")
# "gallery" is sketch-free adaptation of a trained model to one photo folder (python -m retrieval.adapt).
# Share of a whole supervised budget per stage (pipeline.reproduce, bench/sweep_encoders).
STAGE_SHARES = {"edges": 0.25, "quickdraw": 0.15, "finegrained": 0.60}
# Share of a whole budget a jigsaw stage takes, out of the edges stage's share (both pre-train on photos + edge maps).
JIGSAW_SHARE = 0.10

# Training settings that go with a named encoder layout (retrieval.model.spec.PRESETS): a pretrained
# sketch tower learns at a lower rate than the from-scratch heads.
PRESET_TRAINING: dict[str, dict[str, object]] = {"lit-lite0": {"pretrained_lr_scale": 0.3}}


@dataclass
class Config(DataSplit):
    """A supervised training run: the data split (``DataSplit``'s flags; ``--data ''`` trains on
    ``--photo-folder`` alone) plus the stages, the model layout and the optimisation."""

    out: Path = Path("runs")
    """folder that receives the run folder"""
    run_name: str = ""
    """run folder name; default '<arch>__<data>__<seed>__<utc time>'"""
    stages: tuple[str, ...] = DEFAULT_STAGES
    """stages to run, in the order given: edges, quickdraw, finegrained (and the optional jigsaw, first; gallery
    adapts a trained model to --photo-folder without sketches, see python -m retrieval.adapt)"""
    minutes_jigsaw: float = 3.0
    """time budget of the optional jigsaw stage (minutes)"""
    minutes_edges: float = 15.0
    """time budget of the edges stage (minutes)"""
    minutes_quickdraw: float = 10.0
    """time budget of the quickdraw stage (minutes)"""
    minutes_finegrained: float = 30.0
    """time budget of the finegrained stage (minutes)"""
    minutes_gallery: float = 10.0
    """time budget of the gallery stage (minutes): sketch-free adaptation to --photo-folder (retrieval.adapt)"""
    steps_jigsaw: int = 0
    """step budget of the jigsaw stage (0 = its minutes only; with both, whichever ends first)"""
    steps_edges: int = 0
    """step budget of the edges stage (0 = its minutes only): equal-compute comparisons fix steps, not minutes"""
    steps_quickdraw: int = 0
    """step budget of the quickdraw stage (0 = its minutes only)"""
    steps_finegrained: int = 0
    """step budget of the finegrained stage (0 = its minutes only)"""
    steps_gallery: int = 0
    """step budget of the gallery stage (0 = its minutes only)"""
    jigsaw_permutations: int = 64
    """size of the seeded maximal-Hamming permutation set the jigsaw stage shuffles by"""
    max_steps: int = 0
    """cap on optimisation steps per stage (0 = time budget only); for smoke tests"""
    photo_folder: str = ""
    """extra photo folder for the edges stage (no sketches needed)"""
    quickdraw: str = "../shared/data/quickdraw-raw"
    """folder of Quick, Draw! raw .ndjson files for the quickdraw stage"""
    pretrain_sketches: str = "procedural:photos=300"
    """dataset spec whose train sketches join the quickdraw stage ('' for none); a procedural spec without a
    seed gets the data's seed + 1000, and any overlap with val/holdout/test photos is refused (retrieval.data.splits)"""
    quickdraw_limit: int = 20000
    """most Quick, Draw! drawings to load"""
    arch: str = "mobilenet_v3_small"
    """sketch backbone (the whole network unless --photo-arch is set); see retrieval.model.network.ARCHS"""
    input_size: int = 128
    """square network input and raster size in pixels"""
    embed_dim: int = 128
    """embedding size D"""
    separate_blocks: int = 0
    """leading backbone blocks NOT shared between the sketch and photo branches (0 = fully shared)"""
    photo_arch: str = ""
    """photo backbone of a two-tower model (retrieval.model.two_tower); '' = one shared trunk"""
    pretrained: tuple[str, ...] = ()
    """towers that start from the packaged ImageNet weights: sketch and/or photo (two-tower only)"""
    lock_photo: bool = False
    """freeze the whole photo tower (LiT): its features are cached once, only the photo head trains"""
    photo_input_size: int = 0
    """photo input size of a two-tower model in pixels (0 = --input-size)"""
    sketch_frozen_blocks: int = 0
    """leading sketch-tower blocks kept frozen (two-tower only)"""
    sketch_polarity: str = "ink_high"
    """sketch input: ink_high (ink 1, paper 0) or paper_high (black on white, as pretrained nets saw images)"""
    photo_views: int = 6
    """augmented views (each also mirrored) cached per photo for a locked photo tower"""
    pretrained_lr_scale: float = 0.1
    """learning-rate factor of pretrained backbone weights (heads and from-scratch weights get --lr)"""
    init_from: str = ""
    """start from this encoder checkpoint folder instead of random weights (its arch/sizes win)"""
    resume: str = ""
    """run folder to resume (reads <run>/last); the saved config is used, minutes/max-steps from the CLI"""
    batch_size: int = 32
    """pairs per step"""
    lr: float = 1e-3
    """peak AdamW learning rate (cosine decay over each stage's budget)"""
    weight_decay: float = 1e-4
    """AdamW weight decay"""
    warmup_steps: int = 50
    """linear warm-up steps at the start of each stage"""
    temperature: float = 0.07
    """InfoNCE temperature"""
    triplet_weight: float = 0.5
    """weight of the batch-hard triplet loss added to InfoNCE in the finegrained stage"""
    triplet_margin: float = 0.2
    """triplet margin (cosine)"""
    loss: str = "infonce"
    """finegrained loss: infonce (InfoNCE + batch-hard triplet), recall (the Recall@k surrogate of
    retrieval.model.losses.recall_at_k_loss alone) or infonce+recall (both, the surrogate times --recall-weight)"""
    recall_weight: float = 1.0
    """weight of the Recall@k surrogate when --loss is infonce+recall"""
    partial_prob: float = 0.5
    """share of training sketches cut at a random point fraction"""
    min_fraction: float = 0.2
    """smallest point fraction kept by a cut"""
    edge_mix: float = 0.15
    """share of finegrained sketches replaced by an edge map of their photo"""
    hard_negatives: bool = True
    """build finegrained batches around nearest photos in a cached photo-embedding bank"""
    bank_every: int = 100
    """steps between refreshes of the photo-embedding bank"""
    edges_per_photo: int = 8
    """edge maps cached per photo"""
    sketches_per_photo: int = 4
    """pseudo-sketches (edge maps traced into ordered strokes) cached per photo for the gallery stage"""
    distill_weight: float = 1.0
    """gallery stage: weight of distillation from the frozen start model on rehearsal sketches (Quick, Draw! and
    --pretrain-sketches, partial views), which keeps what it knew about sketches (0 = off)"""
    rehearsal_batch: int = 16
    """gallery stage: rehearsal sketches per step for the distillation"""
    eval_every: int = 200
    """steps between validations (and best-checkpoint updates)"""
    save_every: int = 200
    """steps between resumable checkpoints"""
    select_metric: str = "m@B"
    """val metric that picks the best checkpoint: m@B, m@A, A@1, A@5, A@10 or m@A+m@B (retrieval.evaluation.metrics.selection_score)"""
    seed: int = 0
    """seed of training: weights, batches, augmentation (saved in the card); the carves use --split-seed"""
    threads: int = 2
    """torch CPU threads"""
    device: str = "cpu"
    """torch device of the network while training (cpu, cuda, cuda:1); data preparation stays on the CPU"""
    progress: bool = True
    """show tqdm bars"""

    def stage_step_cap(self, stage: str) -> int:
        """Steps ``stage`` may take: its ``steps_<stage>`` budget, else ``max_steps`` (0 = no cap)."""
        return getattr(self, f"steps_{stage}", 0) or self.max_steps

    def model_spec(self) -> ModelSpec:
        """The encoder layout these flags describe (``--photo-input-size 0``: the sketch input size)."""
        flags = {name: getattr(self, name) for name in MODEL_FLAGS}
        return model_spec(**flags | {"photo_input_size": self.photo_input_size or None})

    @property
    def shared_trunk(self) -> bool:
        """One trunk serves sketches and photos (what the jigsaw stage trains): no two-tower, no split blocks."""
        return not self.photo_arch and not self.separate_blocks


MODEL_FLAGS = tuple(f.name for f in fields(ModelSpec) if f.name in {g.name for g in fields(Config)})


def preset_flags(preset: str) -> dict[str, object]:
    """The ``Config`` fields a named layout sets: its spec's fields that differ from the default, and
    the training settings that go with it (``PRESET_TRAINING``)."""
    spec, default = model_spec(preset), ModelSpec()
    flags = {name: getattr(spec, name) for name in MODEL_FLAGS if getattr(spec, name) != getattr(default, name)}
    return flags | PRESET_TRAINING.get(preset, {})


def pipeline_stages(quickdraw: str, jigsaw: bool = False) -> tuple[str, ...]:
    """The stages of a whole-pipeline run (pipeline.reproduce, bench/sweep_encoders), in ``DEFAULT_STAGES`` order.

    The quickdraw stage is dropped when its folder is absent (its time then goes to the other
    stages); ``jigsaw`` puts the jigsaw stage first.
    """
    stages = tuple(s for s in DEFAULT_STAGES if s != "quickdraw" or (quickdraw and Path(quickdraw).is_dir()))
    return ("jigsaw", *stages) if jigsaw else stages


def stage_minutes(stages: tuple[str, ...] | list[str], minutes: float) -> dict[str, float]:
    """``{"minutes_<stage>": ...}`` splitting ``minutes`` over ``stages`` by ``STAGE_SHARES``.

    A ``jigsaw`` stage takes ``JIGSAW_SHARE`` out of the edges share when both run (else its share
    is simply added), so a run with jigsaw spends the same budget as one without.
    """
    shares = {s: STAGE_SHARES.get(s, 0.0) for s in stages}
    if "jigsaw" in shares:
        shares["jigsaw"] = JIGSAW_SHARE
        if "edges" in shares:
            shares["edges"] -= JIGSAW_SHARE
    total = sum(shares.values())
    return {f"minutes_{s}": minutes * share / total for s, share in shares.items()}


def to_json(cfg: Config) -> dict:
    return {
        k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()
    }


def from_json(values: dict) -> dict:
    kinds = {f.name: type(f.default) for f in fields(Config)}
    values = dict(values)
    if values.get("split_seed", 0) < 0:  # a run saved when split seed -1 meant "the training seed"
        values["split_seed"] = values.get("seed", 0)
    return {k: kinds[k](v) for k, v in values.items() if k in kinds}


# A smoke-scale run (pipeline.reproduce --tiny, make rl-study --tiny): a small model, a few steps, seconds not minutes.
SMOKE_OVERRIDES = {
    "stages": ("finegrained",),
    "max_steps": 8,
    "input_size": 64,
    "embed_dim": 32,
    "batch_size": 8,
    "eval_every": 4,
    "save_every": 1000,
    "hard_negatives": False,
    "edge_mix": 0.0,
    "edges_per_photo": 1,
    "warmup_steps": 2,
    "photo_views": 1,
}


@dataclass
class SupervisedRecipe(DataSplit):
    """The product's supervised training as make reproduce and make rl-study expose it (their shared flags):
    the data split (``DataSplit``'s flags) plus the supervised budget and layout."""

    checkpoint: str = ""
    """an existing supervised encoder to use instead of training one: its card's split is the run's (split flags
    left at their defaults take the card's values, others must agree)"""
    minutes_supervised: float = 48.0
    """time budget of supervised training, split over its stages"""
    encoder: str = "scratch"
    """encoder layout, a preset of retrieval.model.spec.PRESETS: scratch, lit-mobilenet, lit-lite0"""
    jigsaw: bool = False
    """run the mixed-modal jigsaw stage first (skipped for two-tower layouts); off: it did not clear its m@B
    interval in the cross-validated benchmark (docs/results/accuracy_bench.md: +2.30 [-0.06, +4.55])"""
    quickdraw: str = "../shared/data/quickdraw-raw"
    """Quick, Draw! raw ndjson folder for sketch pre-training ('' or absent: the stage is skipped)"""
    seed: int = 0
    """training seed (the carves use --split-seed)"""
    threads: int = 2
    """torch threads"""
    tiny: bool = False
    """smoke scale: tiny procedural data, small model, a few optimisation steps (about a minute)"""
    progress: bool = True
    """show progress bars"""

    def smoke_scaled(self):
        """This recipe with ``--tiny``'s data: the default procedural data shrinks to 40 photos (same type)."""
        if self.tiny and self.data == "procedural":
            return replace(self, data="procedural:photos=40,sketches=2", val_fraction=0.2)
        return self


def pipeline_config(
    split: DataSplit,
    out: Path,
    minutes: float,
    *,
    encoder: str = "scratch",
    jigsaw: bool = False,
    quickdraw: str = "../shared/data/quickdraw-raw",
    smoke: bool = False,
    **fields_: object,
) -> Config:
    """The product's supervised run (make reproduce, make rl-study): stages and minutes from one budget.

    Args:
        split: the data and its carves (a ``DataSplit``, or a config extending it).
        out: folder receiving the ``supervised`` run folder.
        minutes: the whole budget, shared over the stages by ``STAGE_SHARES`` (``stage_minutes``).
        encoder: a layout of ``retrieval.model.spec.PRESETS``.
        jigsaw: run the jigsaw stage first when the layout has one shared trunk.
        quickdraw: Quick, Draw! folder ('' or absent: the stage is skipped, its time given to the others).
        smoke: a seconds-long run (``SMOKE_OVERRIDES``), for tests.
        **fields_: any other ``Config`` field (seed, threads, progress, partial_prob, ...).
    """
    layout = preset_flags(encoder)
    stages = pipeline_stages(quickdraw, jigsaw=jigsaw and Config(**layout).shared_trunk)
    cfg = Config(
        **asdict(split.data_split),
        out=out,
        run_name="supervised",
        stages=stages,
        quickdraw=quickdraw,
        **stage_minutes(stages, minutes),
        **layout,
        **fields_,
    )
    if smoke:
        photo_size = {"photo_input_size": 64} if cfg.photo_arch else {}
        cfg = replace(cfg, **SMOKE_OVERRIDES, **photo_size)
    return cfg
