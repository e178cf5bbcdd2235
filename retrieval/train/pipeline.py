"""Supervised encoder training: ``python -m retrieval.train --data ../shared/data/chairv2-train``.

Three optional stages, run in the order given (default below), each with its own time budget:

1. ``edges``: sketch-free pre-training, photos vs randomised edge maps of themselves (works on any
   photo folder via ``--photo-folder``, so a user's photos can be indexed with no sketches at all).
2. ``quickdraw``: sketch-domain pre-training of the sketch branch on Quick, Draw! raw strokes
   plus procedural chair sketches (``--pretrain-sketches``, a different seed from the data), instance
   contrastive: a full augmented view vs a PARTIAL augmented view of the same drawing. Run last it
   leaves sketch and photo embeddings apart, and a pipeline that stops here is far worse than one
   ending on ``edges``; after ``finegrained`` the order makes no difference
   (``docs/results/chair-v2_pretrain_arms.md``).
3. ``finegrained``: sketch/photo pairs of a RetrievalDataset, InfoNCE + batch-hard triplet (or the
   Recall@k surrogate, ``--loss``), half the
   sketches cut at a random point fraction (partial-sketch training), hard negatives from a cached
   photo-embedding bank, some sketches replaced by edge maps of their photo (regulariser).

Not in the default list: ``gallery``, sketch-free adaptation of a trained model (``--init-from``) to
``--photo-folder`` (``steps.gallery_step``; ``python -m retrieval.adapt`` is its command), and
``jigsaw`` (run it first), mixed-modal jigsaw pre-training of
the shared trunk on photo and edge-map tiles (``retrieval.train.jigsaw``, Pang et al. CVPR'20).
Jigsaw is off by default everywhere: in the cross-validated benchmark (``docs/results/accuracy_bench.md``, 5 folds x 2
seeds) it gained m@B +2.30 [-0.06, +4.55], an interval that reaches 0, so it was not kept.

The default budgets (15 + 10 + 30 min) fit a Chair-V2-sized pipeline in under an hour on 2 cores:

    python -m retrieval.train --data ../shared/data/chairv2-train --out runs
    python -m retrieval.train --resume runs/<run folder>              # continue after a stop
    python -m retrieval.train --data "" --photo-folder ~/photos --stages edges   # no sketches at all

Model selection uses ONLY the ``val`` split (carved from train photos): the rank of the true photo
among the val photos at the 17 point cuts -> m@A, m@B, A@1/5/10 (``retrieval.evaluation.metrics``). The best
checkpoint (by ``--select-metric``) goes to ``<run>/best`` with a model card; ``<run>/last`` holds
the resumable state (``--resume <run>``); ``log.csv`` and ``curve.png`` track the run.
"""

from __future__ import annotations

import copy
import datetime
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from retrieval.cli import parse_config
from retrieval.data.datasets import open_dataset
from retrieval.data.formats import quickdraw
from retrieval.data.images import PhotoFolder
from retrieval.data.splits import check_disjoint, pretrain_spec
from retrieval.model.card import ModelCard, Provenance
from retrieval.model.encoder import Encoder, create_encoder
from retrieval.provenance import git_commit
from retrieval.runtime import set_threads
from retrieval.train.batches import PhotoBank, ValidationSet, bank_square_size
from retrieval.train.config import LOSSES, STAGES, Config, SupervisedRecipe, from_json, pipeline_config, to_json
from retrieval.train.jigsaw import JigsawHead
from retrieval.train.loop import RunState, StageLoop
from retrieval.train.steps import STEP_FNS

R = TypeVar("R", bound=SupervisedRecipe)


# --- the run ----------------------------------------------------------------------------------------
def run(cfg: Config, dataset=None, photos: PhotoFolder | None = None) -> Path:
    """Train per ``cfg`` (``dataset`` overrides ``cfg.data``; ``photos``, ``cfg.photo_folder`` already read
    at the bank's square size, spares a second decode); returns the run folder."""
    if cfg.resume:
        cfg = resumed_config(cfg)
    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    check_config(cfg)

    encoder = starting_encoder(cfg)
    encoder.net.to(cfg.device)
    run_dir = Path(cfg.resume) if cfg.resume else cfg.out / (cfg.run_name or default_run_name(cfg, encoder))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(to_json(cfg), indent=2))
    print_config(cfg, run_dir)

    if dataset is None and cfg.data:
        dataset = cfg.data_split.open()
    bank = photo_bank(cfg, dataset, encoder, photos)
    val = None
    if dataset is not None:
        val = ValidationSet.build(dataset, encoder.meta["raster_size"], encoder.meta["line_width"])
    state = RunState.load(run_dir) if cfg.resume else RunState()
    loop = StageLoop(cfg, encoder, bank, val, state, run_dir, card_base(cfg, encoder, dataset, val))
    loop.dataset = dataset
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


def with_checkpoint_split(recipe: R) -> R:
    """``recipe`` on the split of its ``--checkpoint``'s card (split flags left at their defaults take
    the card's values, others must agree: ``DataSplit.adopt``); unchanged without a checkpoint."""
    if not recipe.checkpoint:
        return recipe
    split = recipe.adopt(Encoder.load(recipe.checkpoint).card.split, "--checkpoint")
    return replace(recipe, **asdict(split))


def start_recipe_run(recipe: R, out: str | Path) -> tuple[R, Path]:
    """The first steps of ``make rl-study`` and ``make reproduce``: the recipe as it will run
    (smoke-scaled, on its checkpoint's split), torch threads set, and ``out`` made with the recipe
    in ``config.json`` (so a run folder always says how it was made)."""
    recipe = with_checkpoint_split(recipe.smoke_scaled())
    set_threads(recipe.threads)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(asdict(recipe), indent=2))
    return recipe, folder


def supervised_encoder(recipe: SupervisedRecipe, out: Path, dataset=None, **fields) -> Path:
    """``recipe.checkpoint`` once its card shows the recipe's split, else a new run of ``pipeline_config`` -> its ``best``.

    ``fields`` are further ``Config`` fields (e.g. ``partial_prob``). A checkpoint carved differently is
    refused (``retrieval.data.splits.SplitMismatchError``): its val or holdout photos may be trained on.
    """
    if recipe.checkpoint:
        recipe.data_split.check_against(Encoder.load(recipe.checkpoint).card.split, "--checkpoint")
        return Path(recipe.checkpoint)
    cfg = pipeline_config(
        recipe,
        out,
        recipe.minutes_supervised,
        encoder=recipe.encoder,
        jigsaw=recipe.jigsaw,
        quickdraw=recipe.quickdraw,
        smoke=recipe.tiny,
        seed=recipe.seed,
        threads=recipe.threads,
        progress=recipe.progress,
        **fields,
    )
    return run(cfg, dataset=dataset) / "best"


# --- setup steps of the run ------------------------------------------------------------------------
def check_config(cfg: Config) -> None:
    """Refuse settings that cannot run, before a run folder is made."""
    unknown = set(cfg.stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; choose from {STAGES}")
    if "jigsaw" in cfg.stages and not cfg.shared_trunk:
        raise ValueError("the jigsaw stage needs one shared trunk: drop --photo-arch and use --separate-blocks 0")
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown --loss {cfg.loss!r}; choose from {', '.join(LOSSES)}")
    if torch.device(cfg.device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {cfg.device} asked for, but torch sees no CUDA device here; use --device cpu")


def resumed_config(cfg: Config) -> Config:
    """The config saved in ``cfg.resume``, with this command line's budgets, threads and progress bars."""
    saved = json.loads((Path(cfg.resume) / "config.json").read_text())
    overrides = {
        k: getattr(cfg, k)
        for k in (
            "minutes_jigsaw",
            "minutes_edges",
            "minutes_quickdraw",
            "minutes_finegrained",
            "minutes_gallery",
            "steps_jigsaw",
            "steps_edges",
            "steps_quickdraw",
            "steps_finegrained",
            "steps_gallery",
            "max_steps",
            "threads",
            "progress",
            "device",
        )
    }
    return Config(**{**from_json(saved), **overrides, "resume": cfg.resume})


def starting_encoder(cfg: Config) -> Encoder:
    """The resumed run's last model, ``--init-from``'s checkpoint, or a new model of the configured layout."""
    if cfg.resume:
        return Encoder.load(Path(cfg.resume) / "last")
    if cfg.init_from:
        return Encoder.load(cfg.init_from)
    return create_encoder(cfg.model_spec(), seed=cfg.seed)


def photo_bank(cfg: Config, dataset, encoder: Encoder, photos: PhotoFolder | None = None) -> PhotoBank:
    """The training photos: the dataset's train split, then ``--photo-folder``'s readable photos (others named)."""
    train_ids = list(dataset.photo_ids("train")) if dataset is not None else []
    loaders = {pid: dataset.load_photo for pid in train_ids}
    size = bank_square_size(encoder.meta)
    if cfg.photo_folder:
        photos = photos or PhotoFolder.read(cfg.photo_folder, size)
        for reason in photos.skipped:
            print(f"skipping {reason}")
        if not photos.squares:
            raise FileNotFoundError(
                f"no readable images under {cfg.photo_folder}; point --photo-folder at a folder of .jpg/.png/.webp photos"
            )
        loaders.update({f"folder:{rel}": (lambda _pid, im=image: im) for rel, image in photos.squares.items()})
    if not loaders:
        raise ValueError("no training photos: pass --data (a dataset) and/or --photo-folder")
    return PhotoBank(
        list(loaders),
        lambda pid: loaders[pid](pid),
        cache_size=size,
        raster_size=encoder.meta["raster_size"],
        edges_per_photo=cfg.edges_per_photo,
        sketches_per_photo=cfg.sketches_per_photo,
    )


def card_base(cfg: Config, encoder: Encoder, dataset, val: ValidationSet | None) -> ModelCard:
    """What every checkpoint's model card of this run says: its split and provenance."""
    return ModelCard(
        spec=encoder.spec,
        split=cfg.data_split if cfg.data else None,  # a photo folder alone has no split
        split_counts=cfg.data_split.record(dataset)["counts"],
        provenance=Provenance(
            data=cfg.data,
            dataset=getattr(dataset, "name", None),
            seed=cfg.seed,
            config=to_json(cfg),
            git_commit=git_commit(),
        ),
        details={
            "photo_folder": cfg.photo_folder,
            "n_train_photos": len(dataset.photo_ids("train")) if dataset is not None else 0,
            "n_val_photos": len(val.gallery_ids) if val else 0,
            "pretrain_sketches": pretrain_spec(cfg.pretrain_sketches, dataset, cfg.split_seed)
            if "quickdraw" in cfg.stages
            else "",
        },
    )


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
    if stage in ("quickdraw", "gallery") and not loop.quickdraw:
        loop.quickdraw = pretraining_sketches(cfg, loop.dataset)
    if stage == "quickdraw" and not loop.quickdraw:
        print(f"skipping quickdraw: no drawings under {cfg.quickdraw} and no --pretrain-sketches")
        return False
    if stage == "gallery" and cfg.distill_weight > 0:
        if loop.quickdraw:  # the start model, frozen (a resumed run reloads it from --init-from)
            loop.teacher = Encoder.load(cfg.init_from) if cfg.init_from else copy.deepcopy(loop.encoder)
            loop.teacher.net.to(cfg.device)
        else:
            print(f"gallery stage without distillation: no drawings under {cfg.quickdraw} and no --pretrain-sketches")
    if stage == "jigsaw":
        loop.heads["jigsaw"] = JigsawHead(loop.net.feature_dim).to(cfg.device)
    if stage == "finegrained" and len(getattr(loop, "sketched", ())) < 2:
        print("skipping finegrained: the dataset has no train sketches")
        return False
    return True


def pretraining_sketches(cfg: Config, dataset) -> list:
    """Quick, Draw! drawings plus ``--pretrain-sketches``' train sketches (kept off evaluation photos)."""
    drawings = quickdraw.sample_folder(cfg.quickdraw, cfg.quickdraw_limit, cfg.seed)
    if cfg.pretrain_sketches:
        spec = pretrain_spec(cfg.pretrain_sketches, dataset, cfg.split_seed)
        records = open_dataset(spec).sketches("train")
        check_disjoint(records, dataset, f"--pretrain-sketches {spec!r}")
        drawings += [r.sketch for r in records]
    return drawings


# --- config plumbing ----------------------------------------------------------------------------
def default_run_name(cfg: Config, encoder: Encoder) -> str:
    data = Path(cfg.data).name if cfg.data else "photos"
    return f"{encoder.meta['arch']}__{data.replace(':', '-')}__{cfg.seed}__{datetime.datetime.now(datetime.UTC):%Y%m%d-%H%M%S}"


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
