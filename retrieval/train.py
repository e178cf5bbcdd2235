"""Supervised encoder training: ``python -m retrieval.train --data ../shared/data/chairv2-train``.

Three optional stages, run in the order given (default below), each with its own time budget:

1. ``quickdraw``: sketch-domain pre-training of the sketch branch on Quick, Draw! raw strokes
   plus procedural chair sketches (``--pretrain-sketches``, a different seed from the data), instance contrastive: a full augmented view vs a PARTIAL augmented view of the same drawing.
   First, because it trains the sketch side only: run after ``edges`` it would pull the sketch
   embeddings away from the photo embeddings that stage aligned.
2. ``edges``: sketch-free pre-training, photos vs randomised edge maps of themselves (works on any
   photo folder via ``--photo-folder``, so a user's photos can be indexed with no sketches at all).
3. ``finegrained``: sketch/photo pairs of a RetrievalDataset, InfoNCE + batch-hard triplet (or the
   Recall@k surrogate, ``--loss``), half the
   sketches cut at a random point fraction (partial-sketch training), hard negatives from a cached
   photo-embedding bank, some sketches replaced by edge maps of their photo (regulariser).

The default budgets (10 + 15 + 30 min) fit a Chair-V2-sized pipeline in under an hour on 2 cores:

    python -m retrieval.train --data ../shared/data/chairv2-train --out runs
    python -m retrieval.train --resume runs/<run folder>              # continue after a stop
    python -m retrieval.train --data "" --photo-folder ~/photos --stages edges   # no sketches at all

Model selection uses ONLY the ``val`` split (carved from train photos): the rank of the true photo
among the val photos at the 17 point cuts -> m@A, m@B, A@1/5/10 (``retrieval.metrics``). The best
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

from retrieval.augment import SketchAugment, flip_sketch, render_augmented
from retrieval.cli import parse_config
from retrieval.datasets import open_dataset
from retrieval.encoder import Encoder
from retrieval.losses import hardest_triplet, info_nce, recall_at_k_loss
from retrieval.train_data import PhotoBank, ValidationSet, hard_batch
from retrieval.train_loop import RunState, StageLoop, git_commit, load_quickdraw, read_photo_folder

STAGES = ("quickdraw", "edges", "finegrained")
# Losses of the finegrained stage (Config.loss); docs/results/chair-v2_recall_at_k.md compares them.
LOSSES = ("infonce", "recall", "infonce+recall")
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
    """dataset spec for retrieval.datasets.open_dataset (a QMUL-layout folder or 'procedural[:...]'); '' for none"""
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
    """sketch backbone (the whole network unless --photo-arch is set); see retrieval.network.ARCHS"""
    input_size: int = 128
    """square network input and raster size in pixels"""
    embed_dim: int = 128
    """embedding size D"""
    separate_blocks: int = 0
    """leading backbone blocks NOT shared between the sketch and photo branches (0 = fully shared)"""
    photo_arch: str = ""
    """photo backbone of a two-tower model (retrieval.two_tower); '' = one shared trunk"""
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
    retrieval.losses.recall_at_k_loss alone) or infonce+recall (both, the surrogate times --recall-weight)"""
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
    eval_every: int = 200
    """steps between validations (and best-checkpoint updates)"""
    save_every: int = 200
    """steps between resumable checkpoints"""
    select_metric: str = "m@B"
    """val metric that picks the best checkpoint: m@B, m@A, A@1, A@5, A@10, or 'mix' (m@B + m@A/2)"""
    val_fraction: float = 0.1
    """share of train photos carved out as the val split"""
    holdout_fraction: float = 0.0
    """share of train photos carved out as a 'holdout' split no model is selected on (0 = none)"""
    seed: int = 0
    """seed of everything (saved in the card)"""
    split_seed: int = -1
    """seed of the val/holdout carve only (-1 = --seed): other training seeds, same val split"""
    threads: int = 2
    """torch CPU threads"""
    device: str = "cpu"
    """torch device of the network while training (cpu, cuda, cuda:1); data preparation stays on the CPU"""
    progress: bool = True
    """show tqdm bars"""


# --- ALGO LOGIC: one optimisation step per stage ---------------------------------------------------
def edges_step(loop: StageLoop) -> torch.Tensor:
    cfg, bank, rng = loop.cfg, loop.bank, loop.rng
    idx = rng.choice(len(bank), size=min(cfg.batch_size, len(bank)), replace=False)
    sketches, photos = [], []
    for i in idx:
        edge = bank.edge(i, rng)
        flip = rng.random() < 0.5  # paired flip keeps the fine-grained correspondence
        sketches.append(np.ascontiguousarray(edge[:, ::-1]) if flip else edge)
        photos.append(loop.photo_side.sample(i, flip, rng))
    s, p = loop.photo_side.embed_pair(sketches, photos)
    return info_nce(s, p, cfg.temperature)


def quickdraw_step(loop: StageLoop) -> torch.Tensor:
    cfg, rng, size, drawings = loop.cfg, loop.rng, loop.size, loop.quickdraw
    idx = rng.choice(len(drawings), size=min(cfg.batch_size, len(drawings)), replace=False)
    aug = SketchAugment(min_fraction=cfg.min_fraction)
    full = [render_augmented(drawings[i], aug, rng, size, partial=False) for i in idx]
    part = [render_augmented(drawings[i], aug, rng, size, partial=True) for i in idx]
    emb = loop.net.embed_sketches(loop.encoder.sketch_batch(np.stack(full + part)))
    return info_nce(emb[len(idx) :], emb[: len(idx)], cfg.temperature)


def finegrained_step(loop: StageLoop) -> torch.Tensor:
    cfg, bank, rng, size = loop.cfg, loop.bank, loop.rng, loop.size
    if cfg.hard_negatives and loop.step % cfg.bank_every == 0:
        loop.bank_embeddings = np.zeros((len(bank), loop.encoder.meta["embed_dim"]), np.float32)
        loop.bank_embeddings[loop.sketched] = loop.photo_side.bank_embeddings(loop.sketched)
    idx = hard_batch(loop.bank_embeddings if cfg.hard_negatives else None, cfg.batch_size, rng, loop.sketched)
    aug = SketchAugment(partial_prob=cfg.partial_prob, min_fraction=cfg.min_fraction)
    sketches, photos = [], []
    for i in idx:
        flip = rng.random() < 0.5  # paired flip keeps the fine-grained correspondence
        photos.append(loop.photo_side.sample(i, flip, rng))
        if rng.random() < cfg.edge_mix:
            raster = bank.edge(i, rng)
            raster = np.ascontiguousarray(raster[:, ::-1]) if flip else raster
        else:
            records = loop.sketches_of[i]
            sketch = records[int(rng.integers(len(records)))].sketch
            raster = render_augmented(flip_sketch(sketch) if flip else sketch, aug, rng, size)
        sketches.append(raster)
    s, p = loop.photo_side.embed_pair(sketches, photos)
    return finegrained_loss(cfg, s, p)


def finegrained_loss(cfg: Config, sketches: torch.Tensor, photos: torch.Tensor) -> torch.Tensor:
    """The finegrained stage's ``cfg.loss`` on ``(B, D)`` unit rows, ``sketches[i]`` matching ``photos[i]``."""
    if cfg.loss == "recall":
        return recall_at_k_loss(sketches, photos)
    loss = info_nce(sketches, photos, cfg.temperature)
    loss = loss + cfg.triplet_weight * hardest_triplet(sketches, photos, cfg.triplet_margin)
    if cfg.loss == "infonce+recall":
        loss = loss + cfg.recall_weight * recall_at_k_loss(sketches, photos)
    return loss


STEP_FNS = {"edges": edges_step, "quickdraw": quickdraw_step, "finegrained": finegrained_step}


# --- the run ----------------------------------------------------------------------------------------
def run(cfg: Config, dataset=None) -> Path:
    """Train per ``cfg`` (``dataset`` overrides ``cfg.data``); returns the run folder."""
    if cfg.resume:
        run_dir = Path(cfg.resume)
        saved = json.loads((run_dir / "config.json").read_text())
        overrides = {
            k: getattr(cfg, k)
            for k in (
                "minutes_edges",
                "minutes_quickdraw",
                "minutes_finegrained",
                "max_steps",
                "threads",
                "progress",
                "device",
            )
        }
        cfg = Config(**{**from_json(saved), **overrides, "resume": str(run_dir)})
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    unknown = set(cfg.stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; choose from {STAGES}")
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown --loss {cfg.loss!r}; choose from {', '.join(LOSSES)}")
    if torch.device(cfg.device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {cfg.device} asked for, but torch sees no CUDA device here; use --device cpu")

    if cfg.resume:
        encoder = Encoder.load(run_dir / "last")
    elif cfg.init_from:
        encoder = Encoder.load(cfg.init_from)
    else:
        encoder = Encoder.create(
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
    encoder.net.to(cfg.device)
    run_dir = Path(cfg.resume) if cfg.resume else cfg.out / (cfg.run_name or default_run_name(cfg, encoder))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(to_json(cfg), indent=2))
    print_config(cfg, run_dir)

    if dataset is None and cfg.data:
        dataset = open_dataset(
            cfg.data,
            val_fraction=cfg.val_fraction,
            seed=cfg.seed if cfg.split_seed < 0 else cfg.split_seed,
            holdout_fraction=cfg.holdout_fraction,
        )
    size = encoder.meta["input_size"]
    train_ids = list(dataset.photo_ids("train")) if dataset is not None else []
    loaders = {pid: dataset.load_photo for pid in train_ids}
    if cfg.photo_folder:
        loaders.update(read_photo_folder(cfg.photo_folder))
    if not loaders:
        raise ValueError("no training photos: pass --data (a dataset) and/or --photo-folder")
    bank = PhotoBank(
        list(loaders),
        lambda pid: loaders[pid](pid),
        cache_size=round(encoder.meta.get("photo_input_size", size) * 1.25),
        raster_size=encoder.meta["raster_size"],
        edges_per_photo=cfg.edges_per_photo,
    )
    val = None
    if dataset is not None:
        val = ValidationSet.build(dataset, encoder.meta["raster_size"], encoder.meta["line_width"])
    state = RunState.load(run_dir) if cfg.resume else RunState()
    card_base = {
        "data": cfg.data,
        "dataset": getattr(dataset, "name", None),
        "photo_folder": cfg.photo_folder,
        "n_train_photos": len(train_ids),
        "n_val_photos": len(val.gallery_ids) if val else 0,
        "config": to_json(cfg),
        "seed": cfg.seed,
        "git_commit": git_commit(),
    }
    loop = StageLoop(cfg, encoder, bank, val, state, run_dir, card_base)
    if dataset is not None:
        index_of = {pid: i for i, pid in enumerate(bank.ids)}
        loop.sketches_of = {}
        for record in dataset.sketches("train"):
            loop.sketches_of.setdefault(index_of[record.photo_id], []).append(record)
        loop.sketched = np.array(sorted(loop.sketches_of), dtype=np.int64)

    for stage in cfg.stages:
        if stage in state.done_stages:
            continue
        if stage == "quickdraw":
            loop.quickdraw = load_quickdraw(cfg.quickdraw, cfg.quickdraw_limit, cfg.seed)
            if cfg.pretrain_sketches:
                loop.quickdraw += [r.sketch for r in open_dataset(cfg.pretrain_sketches).sketches("train")]
            if not loop.quickdraw:
                print(f"skipping quickdraw: no drawings under {cfg.quickdraw} and no --pretrain-sketches")
                state.done_stages.append(stage)
                continue
        if stage == "finegrained" and len(getattr(loop, "sketched", ())) < 2:
            print("skipping finegrained: the dataset has no train sketches")
            state.done_stages.append(stage)
            continue
        loop.run_stage(stage, STEP_FNS[stage], getattr(cfg, f"minutes_{stage}"))
    loop.finish()
    return run_dir


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
