"""Fine-tune a trained encoder on one folder of photos, without any sketch.

    python -m retrieval.adapt --model assets/model --photos ~/photos --out ~/models/mine --minutes 10
    make adapt MODEL=assets/model PHOTOS=~/photos OUT=~/models/mine MINUTES=10

What it trains on (the ``gallery`` stage of ``retrieval.train``, ``steps.gallery_step``): each photo,
augmented, against pseudo-sketches of itself (randomised edge maps traced into ordered strokes,
``retrieval.data.pseudo_sketch``) cut at random points like a drawing in progress, and now and then
a plain edge map; batches gather each photo's nearest neighbours in the folder (hard negatives).
What it keeps: a distillation term holds the sketch embeddings of rehearsal drawings (Quick, Draw!
and procedural sketches) where the frozen start model put them. Same architecture, so the
per-stroke cost is the start model's.

The result is a normal checkpoint folder; its card says which photos (count and content hash),
how many minutes and steps, and which model it started from (weights hash). The run happens in a
hidden folder beside ``--out`` that is renamed to ``--out`` only when complete: a run that is cut off
(Ctrl-C, ``kill``) leaves no output folder and removes its work folder; after ``kill -9`` the next
run with the same ``--out`` clears it.
"""

from __future__ import annotations

import datetime
import hashlib
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from retrieval.cli import parse_config
from retrieval.data.images import PhotoFolder
from retrieval.model.card import ModelCard
from retrieval.model.checkpoint import CheckpointError
from retrieval.model.encoder import Encoder
from retrieval.train.batches import bank_square_size
from retrieval.train.config import Config
from retrieval.train.pipeline import run as train_run

MIN_PHOTOS = 8  # a batch needs a photo, its nearest neighbour and a few more as negatives
WARMUP_STEPS = 10  # a fine-tune of a trained model: a short warm-up, not training from scratch's 50
NO_CHECKPOINT_STEPS = 10**9  # eval/save intervals that never fire: the stage's end writes the model once


@dataclass
class AdaptConfig:
    """Sketch-free adaptation of a checkpoint to a photo folder."""

    model: str = "assets/model"
    """start checkpoint folder (model.safetensors + model.json)"""
    photos: str = ""
    """folder of the gallery's photos (.jpg/.png/.webp, searched recursively); no sketches needed"""
    out: str = ""
    """checkpoint folder to write (must not exist yet)"""
    minutes: float = 10.0
    """time budget of the adaptation"""
    steps: int = 0
    """step budget (0 = minutes only; with both, whichever ends first): equal-compute comparisons fix steps"""
    distill_weight: float = 1.0
    """weight of the distillation from the frozen start model on rehearsal sketches (0 = off)"""
    quickdraw: str = "../shared/data/quickdraw-raw"
    """Quick, Draw! raw ndjson folder for the rehearsal sketches ('' or absent: procedural sketches only)"""
    pretrain_sketches: str = "procedural:photos=300"
    """dataset spec whose train sketches join the rehearsal sketches ('' for none)"""
    batch_size: int = 32
    """photo/sketch pairs per step"""
    lr: float = 3e-4
    """peak learning rate (a fine-tune: lower than training from scratch)"""
    seed: int = 0
    """seed of batches, augmentation and pseudo-sketches"""
    threads: int = 2
    """torch CPU threads"""
    progress: bool = True
    """show a progress bar"""


def adapt(cfg: AdaptConfig) -> Path:
    """Run the adaptation per ``cfg`` and return ``cfg.out``, written whole or not at all."""
    out = Path(cfg.out).expanduser()
    started = time.monotonic()
    start_card, start, photos = check_inputs(cfg, out)
    identity = photo_identity(cfg.photos, photos)  # hashed before training: the content that was decoded
    work = out.parent / f".{out.name}.partial"
    shutil.rmtree(work, ignore_errors=True)  # a previous run killed outright
    try:
        run_dir = train_run(training_config(cfg, work), photos=photos)
        adapted = Encoder.load(run_dir / "best")
        wall_minutes = (time.monotonic() - started) / 60
        card = adapted_card(cfg, (start_card, start), identity, adapted.card, wall_minutes)
        adapted.save(work / "model", card=card)
        for name in ("log.csv", "curve.png"):
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, work / "model" / name)
        (work / "model").rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def check_inputs(cfg: AdaptConfig, out: Path) -> tuple[ModelCard, dict, PhotoFolder]:
    """The start model's card and identity and the photos, decoded once; a clear error for anything that cannot run."""
    if not cfg.out:
        raise ValueError("--out is required: the folder the adapted checkpoint goes to")
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose another --out or remove it first")
    if not cfg.photos or not Path(cfg.photos).expanduser().is_dir():
        raise NotADirectoryError(f"--photos {cfg.photos!r} is not a folder of photos")
    if not cfg.minutes > 0 and cfg.steps <= 0:
        raise ValueError("give the adaptation a budget: --minutes > 0 (and/or --steps > 0)")
    try:
        encoder = Encoder.load(cfg.model)
    except (CheckpointError, FileNotFoundError, OSError) as err:
        raise CheckpointError(f"--model {cfg.model}: not a checkpoint this version can adapt: {err}") from err
    photos = PhotoFolder.read(Path(cfg.photos).expanduser(), bank_square_size(encoder.meta))
    if len(photos.squares) < MIN_PHOTOS:
        why = f" ({len(photos.skipped)} unreadable, e.g. {photos.skipped[0]})" if photos.skipped else ""
        raise ValueError(
            f"{cfg.photos} has {len(photos.squares)} readable photo(s){why}: adaptation needs at least {MIN_PHOTOS} "
            "to form negatives (fine-grained training tells each photo from its neighbours)"
        )
    start = {"path": str(cfg.model), "weights_sha256": encoder.meta["weights_sha256"], "arch": encoder.meta["arch"]}
    return encoder.card, start, photos


def photo_hash(files: dict[str, Path]) -> str:
    """sha256 over each photo file's relative path and bytes (``retrieval.data.images.scan_photo_folder``).

    Renaming, editing, adding or removing a photo changes it, and nothing else does (not timestamps,
    not the folder's location).
    """
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(files[rel].read_bytes()).digest())
    return digest.hexdigest()


def photo_identity(folder: str | Path, photos: PhotoFolder) -> dict:
    """The card's ``{"folder", "count", "sha256", "skipped"}``: the photos trained on and the folder's content hash."""
    return {
        "folder": str(folder),
        "count": len(photos.squares),
        "sha256": photo_hash(photos.files),
        "skipped": photos.skipped,
    }


def training_config(cfg: AdaptConfig, work: Path) -> Config:
    """The ``gallery`` stage of ``retrieval.train`` on the photo folder, from the start checkpoint."""
    return Config(
        data="",
        photo_folder=str(Path(cfg.photos).expanduser()),
        init_from=str(cfg.model),
        stages=("gallery",),
        minutes_gallery=cfg.minutes if cfg.minutes > 0 else float("inf"),
        steps_gallery=cfg.steps,
        distill_weight=cfg.distill_weight,
        quickdraw=cfg.quickdraw,
        pretrain_sketches=cfg.pretrain_sketches,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        threads=cfg.threads,
        progress=cfg.progress,
        out=work,
        run_name="run",
        warmup_steps=WARMUP_STEPS,
        eval_every=NO_CHECKPOINT_STEPS,
        save_every=NO_CHECKPOINT_STEPS,
    )


def adapted_card(
    cfg: AdaptConfig, start: tuple[ModelCard, dict], photos: dict, run_card: ModelCard, wall_minutes: float
) -> ModelCard:
    """The model card: where the model started, which photos, what budget and how many steps it took.

    ``start`` is the start model's card and identity. The adaptation run's own card has no split (a
    photo folder); the adapted model carries the start model's, which evaluation defaults to.
    """
    start_card, identity = start
    steps = int(run_card.details.get("steps_per_stage", {}).get("gallery", 0))
    card = replace(run_card, split=start_card.split, split_counts=start_card.split_counts)
    return card.with_entries(
        adaptation={
            "start_model": identity,
            "photos": {k: photos[k] for k in ("folder", "count", "sha256")} | {"skipped": len(photos["skipped"])},
            "minutes": cfg.minutes,
            "wall_minutes": round(wall_minutes, 2),
            "steps": steps,
            "config": asdict(cfg),
            "finished_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
    )


def parse_args(argv: list[str] | None = None) -> AdaptConfig:
    return parse_config(AdaptConfig, argv, description=__doc__)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    # `kill` (SIGTERM) unwinds like Ctrl-C, so adapt() still removes its work folder
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        out = adapt(cfg)
    except (ValueError, OSError, CheckpointError) as err:
        raise SystemExit(f"error: {err}") from err
    print(f"adapted checkpoint: {out} (serve it with: python app.py --model {out} --photos {cfg.photos})")


if __name__ == "__main__":
    main()
