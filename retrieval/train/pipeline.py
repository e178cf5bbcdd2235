"""Supervised encoder training: ``python -m retrieval.train --data ../shared/data/chairv2-train``.

Three optional stages, run in the order given (default below), each with its own time budget:

1. ``quickdraw``: sketch-domain pre-training of the sketch branch on Quick, Draw! raw strokes
   plus procedural chair sketches (``--pretrain-sketches``, a different seed from the data), instance contrastive: a full augmented view vs a PARTIAL augmented view of the same drawing.
   First, because it trains the sketch side only: run after ``edges`` it would pull the sketch
   embeddings away from the photo embeddings that stage aligned.
2. ``edges``: sketch-free pre-training, photos vs randomised edge maps of themselves (works on any
   photo folder via ``--photo-folder``, so a user's photos can be indexed with no sketches at all).
3. ``finegrained``: sketch/photo pairs of a RetrievalDataset, InfoNCE + batch-hard triplet, half the
   sketches cut at a random point fraction (partial-sketch training), hard negatives from a cached
   photo-embedding bank, some sketches replaced by edge maps of their photo (regulariser).

The default budgets (10 + 15 + 30 min) fit a Chair-V2-sized pipeline in under an hour on 2 cores:

    python -m retrieval.train --data ../shared/data/chairv2-train --out runs
    python -m retrieval.train --resume runs/<run folder>              # continue after a stop
    python -m retrieval.train --data "" --photo-folder ~/photos --stages edges   # no sketches at all

Model selection uses ONLY the ``val`` split (carved from train photos): the rank of the true photo
among the val photos at the 17 point cuts -> m@A, m@B, A@1/5/10 (``retrieval.evaluation.metrics``). The best
checkpoint (by ``--select-metric``) goes to ``<run>/best`` with a model card; ``<run>/last`` holds
the resumable state (``--resume <run>``); ``log.csv`` and ``curve.png`` track the run.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from retrieval.cli import parse_config
from retrieval.data.datasets import open_dataset
from retrieval.model.encoder import Encoder
from retrieval.provenance import git_commit
from retrieval.train.batches import PhotoBank, ValidationSet
from retrieval.train.loop import RunState, StageLoop, load_quickdraw, read_photo_folder
from retrieval.train.steps import STEP_FNS

STAGES = ("quickdraw", "edges", "finegrained")
# Share of a whole supervised budget per stage (rl.reproduce, bench/sweep_encoders).
STAGE_SHARES = {"edges": 0.25, "quickdraw": 0.15, "finegrained": 0.60}

# Named encoder layouts (Config fields), compared side by side in bench/results/chair-v2_ablation.md.
ENCODER_PRESETS: dict[str, dict] = {
    # mobilenet_v3_small from scratch, one shared trunk: the layout before ImageNet weights
    "scratch": {},
    # LiT: locked ImageNet efficientnet_lite0 photo tower (features cached once), sketch tower from scratch
    "lit-mobilenet": {
        "photo_arch": "efficientnet_lite0",
        "pretrained": ("photo",),
        "lock_photo": True,
        "photo_input_size": 224,
    },
    # LiT with an ImageNet efficientnet_lite0 sketch tower too, its first blocks frozen, fed black on white
    "lit-lite0": {
        "arch": "efficientnet_lite0",
        "photo_arch": "efficientnet_lite0",
        "pretrained": ("photo", "sketch"),
        "lock_photo": True,
        "photo_input_size": 224,
        "sketch_frozen_blocks": 3,
        "pretrained_lr_scale": 0.3,
        "sketch_polarity": "paper_high",
    },
}


@dataclass
class Config:
    data: str = "procedural"
    """dataset spec for retrieval.data.datasets.open_dataset (a QMUL-layout folder or 'procedural[:...]'); '' for none"""
    out: Path = Path("runs")
    """folder that receives the run folder"""
    run_name: str = ""
    """run folder name; default '<arch>__<data>__<seed>__<utc time>'"""
    stages: tuple[str, ...] = STAGES
    """stages to run, in the order given: quickdraw, edges, finegrained"""
    minutes_edges: float = 15.0
    """time budget of the edges stage (minutes)"""
    minutes_quickdraw: float = 10.0
    """time budget of the quickdraw stage (minutes)"""
    minutes_finegrained: float = 30.0
    """time budget of the finegrained stage (minutes)"""
    max_steps: int = 0
    """cap on optimisation steps per stage (0 = time budget only); for smoke tests"""
    photo_folder: str = ""
    """extra photo folder for the edges stage (no sketches needed)"""
    quickdraw: str = "../shared/data/quickdraw-raw"
    """folder of Quick, Draw! raw .ndjson files for the quickdraw stage"""
    pretrain_sketches: str = "procedural:photos=300,seed=1"
    """dataset spec whose train sketches join the quickdraw stage ('' for none); keep its seed apart from --data"""
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
    eval_every: int = 200
    """steps between validations (and best-checkpoint updates)"""
    save_every: int = 200
    """steps between resumable checkpoints"""
    select_metric: str = "m@B"
    """val metric that picks the best checkpoint: m@B, m@A, A@1, A@5, A@10 or m@A+m@B (retrieval.evaluation.metrics.selection_score)"""
    val_fraction: float = 0.1
    """share of train photos carved out as the val split"""
    holdout_fraction: float = 0.0
    """share of train photos carved out as a 'holdout' split no model is selected on (0 = none)"""
    seed: int = 0
    """seed of everything (saved in the card)"""
    threads: int = 2
    """torch CPU threads"""
    progress: bool = True
    """show tqdm bars"""


# --- the run ----------------------------------------------------------------------------------------
def run(cfg: Config, dataset=None) -> Path:
    """Train per ``cfg`` (``dataset`` overrides ``cfg.data``); returns the run folder."""
    if cfg.resume:
        cfg = resumed_config(cfg)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    unknown = set(cfg.stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; choose from {STAGES}")

    encoder = starting_encoder(cfg)
    run_dir = Path(cfg.resume) if cfg.resume else cfg.out / (cfg.run_name or default_run_name(cfg, encoder))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(to_json(cfg), indent=2))
    print_config(cfg, run_dir)

    if dataset is None and cfg.data:
        dataset = open_dataset(
            cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed, holdout_fraction=cfg.holdout_fraction
        )
    bank = photo_bank(cfg, dataset, encoder)
    val = None
    if dataset is not None:
        val = ValidationSet.build(dataset, encoder.meta["raster_size"], encoder.meta["line_width"])
    state = RunState.load(run_dir) if cfg.resume else RunState()
    loop = StageLoop(cfg, encoder, bank, val, state, run_dir, card_base(cfg, dataset, val))
    if dataset is not None:
        loop.sketches_of = train_sketches_by_photo(dataset, bank)
        loop.sketched = np.array(sorted(loop.sketches_of), dtype=np.int64)

    for stage in cfg.stages:
        if stage in state.done_stages:
            continue
        if not prepare_stage(loop, stage):
            state.done_stages.append(stage)
            continue
        loop.run_stage(stage, STEP_FNS[stage], getattr(cfg, f"minutes_{stage}"))
    loop.finish()
    return run_dir


# --- setup steps of the run ------------------------------------------------------------------------
def resumed_config(cfg: Config) -> Config:
    """The config saved in ``cfg.resume``, with this command line's budgets, threads and progress bars."""
    saved = json.loads((Path(cfg.resume) / "config.json").read_text())
    overrides = {
        k: getattr(cfg, k)
        for k in ("minutes_edges", "minutes_quickdraw", "minutes_finegrained", "max_steps", "threads", "progress")
    }
    return Config(**{**from_json(saved), **overrides, "resume": cfg.resume})


def starting_encoder(cfg: Config) -> Encoder:
    """The resumed run's last model, ``--init-from``'s checkpoint, or a new model of the configured layout."""
    if cfg.resume:
        return Encoder.load(Path(cfg.resume) / "last")
    if cfg.init_from:
        return Encoder.load(cfg.init_from)
    return Encoder.create(
        cfg.arch,
        cfg.embed_dim,
        cfg.input_size,
        separate_blocks=cfg.separate_blocks,
        seed=cfg.seed,
        photo_arch=cfg.photo_arch,
        photo_input_size=cfg.photo_input_size or None,
        pretrained=cfg.pretrained,
        sketch_frozen_blocks=cfg.sketch_frozen_blocks,
        lock_photo=cfg.lock_photo,
        sketch_polarity=cfg.sketch_polarity,
    )


def photo_bank(cfg: Config, dataset, encoder: Encoder) -> PhotoBank:
    """The training photos: the dataset's train split, then ``--photo-folder``'s photos."""
    train_ids = list(dataset.photo_ids("train")) if dataset is not None else []
    loaders = {pid: dataset.load_photo for pid in train_ids}
    if cfg.photo_folder:
        loaders.update(read_photo_folder(cfg.photo_folder))
    if not loaders:
        raise ValueError("no training photos: pass --data (a dataset) and/or --photo-folder")
    return PhotoBank(
        list(loaders),
        lambda pid: loaders[pid](pid),
        cache_size=round(encoder.meta.get("photo_input_size", encoder.meta["input_size"]) * 1.25),
        raster_size=encoder.meta["raster_size"],
        edges_per_photo=cfg.edges_per_photo,
    )


def card_base(cfg: Config, dataset, val: ValidationSet | None) -> dict:
    """What every checkpoint's model card of this run says about its provenance."""
    return {
        "data": cfg.data,
        "dataset": getattr(dataset, "name", None),
        "photo_folder": cfg.photo_folder,
        "n_train_photos": len(dataset.photo_ids("train")) if dataset is not None else 0,
        "n_val_photos": len(val.gallery_ids) if val else 0,
        "config": to_json(cfg),
        "seed": cfg.seed,
        "git_commit": git_commit(),
    }


def train_sketches_by_photo(dataset, bank: PhotoBank) -> dict[int, list]:
    """The dataset's train sketch records, grouped by the bank position of their photo."""
    index_of = {pid: i for i, pid in enumerate(bank.ids)}
    sketches_of: dict[int, list] = {}
    for record in dataset.sketches("train"):
        sketches_of.setdefault(index_of[record.photo_id], []).append(record)
    return sketches_of


def prepare_stage(loop: StageLoop, stage: str) -> bool:
    """Load what ``stage`` trains on into ``loop``; False (and says why) when there is nothing to train on."""
    cfg = loop.cfg
    if stage == "quickdraw":
        loop.quickdraw = load_quickdraw(cfg.quickdraw, cfg.quickdraw_limit, cfg.seed)
        if cfg.pretrain_sketches:
            loop.quickdraw += [r.sketch for r in open_dataset(cfg.pretrain_sketches).sketches("train")]
        if not loop.quickdraw:
            print(f"skipping quickdraw: no drawings under {cfg.quickdraw} and no --pretrain-sketches")
            return False
    if stage == "finegrained" and len(getattr(loop, "sketched", ())) < 2:
        print("skipping finegrained: the dataset has no train sketches")
        return False
    return True


# --- config plumbing ----------------------------------------------------------------------------
def default_run_name(cfg: Config, encoder: Encoder) -> str:
    data = Path(cfg.data).name if cfg.data else "photos"
    return f"{encoder.meta['arch']}__{data.replace(':', '-')}__{cfg.seed}__{datetime.datetime.now(datetime.UTC):%Y%m%d-%H%M%S}"


def to_json(cfg: Config) -> dict:
    return {
        k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()
    }


def from_json(values: dict) -> dict:
    kinds = {f.name: type(f.default) for f in fields(Config)}
    return {k: kinds[k](v) for k, v in values.items() if k in kinds}


def print_config(cfg: Config, run_dir: Path) -> None:
    print(f"run folder: {run_dir}")
    print("| param | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in to_json(cfg).items()))


def parse_args(argv: list[str] | None = None) -> Config:
    return parse_config(Config, argv, description=__doc__)


def main(argv: list[str] | None = None) -> None:
    run_dir = run(parse_args(argv))
    print(f"done: best checkpoint {run_dir / 'best'}, log {run_dir / 'log.csv'}, curve {run_dir / 'curve.png'}")


if __name__ == "__main__":
    main()
