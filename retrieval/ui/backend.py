"""The app's backend: the model, the gallery index, thumbnails and the per-stroke ranker, loaded once.

With ``--serve-url`` the model and index live on the Ray Serve cluster: the front end lists the
photos only (:func:`load_cluster_backend`).

A study whose conditions name other models (its ``models`` map) gets each of them loaded once
too, every one with its own index of the same photos (:class:`RankingModel`); a stroke is ranked
by its trial's model (:meth:`Backend.rank`). Read-only after loading: per-user state lives in each
tab's ``DrawingSession``.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from retrieval.data.sketch import Sketch
from retrieval.model.checkpoint import CheckpointError
from retrieval.model.encoder import Encoder, create_encoder
from retrieval.provenance import code_version
from retrieval.runtime import set_threads
from retrieval.serving.batching import RankBatcher
from retrieval.serving.gallery import PhotoSource, model_hash, open_gallery, open_photos
from retrieval.serving.retriever import Retriever
from retrieval.serving.serve_client import ServeRanker, check_cluster_gallery
from retrieval.serving.versions import encoder_hash_of
from retrieval.ui.config import AppConfig
from retrieval.ui.thumbnails import ThumbnailCache

THUMB_SIZE = 224


@dataclass(frozen=True)
class RankingModel:
    """One more model a study's conditions rank with: its checkpoint, hash, and index of the gallery's photos."""

    key: str
    path: Path
    model_hash: str
    snapshot: str  # encoder hash + gallery content hash of its index (retrieval/serving/versions.py)
    retriever: Retriever
    ranker: Retriever | RankBatcher


@dataclass(frozen=True)
class Backend:
    """What every session shares: the per-stroke ranker, the gallery's photos and their thumbnails,
    and the versions each log record carries."""

    ranker: Retriever | RankBatcher | ServeRanker  # the per-stroke call (RankBatcher: shared forwards)
    photos: PhotoSource  # the ranked photos' ids (targets) and each photo by id (thumbnails)
    thumbs: ThumbnailCache
    model_hash: str  # of the encoder that ranks (the cluster's in --serve-url mode)
    code_version: str
    notices: tuple[str, ...]
    snapshot: str = ""  # the gallery snapshot ranked against (the cluster's in --serve-url mode): in every log
    models: Mapping[str, RankingModel] = field(default_factory=dict)  # by study ``models`` key
    retriever: Retriever | None = None  # the in-process model and index; None in --serve-url mode

    @property
    def ids(self) -> tuple[str, ...]:
        """The gallery's photo ids (a study's targets are drawn from them)."""
        return self.photos.ids

    def model_fields(self) -> dict[str, dict[str, str]]:
        """``{model key: {"model_hash", "snapshot"}}`` of every model that ranks ("" = the app's
        ``--model``): the fields a study trial's records take from the model that ranked it."""
        fields = {"": {"model_hash": self.model_hash, "snapshot": self.snapshot}}
        return fields | {key: {"model_hash": m.model_hash, "snapshot": m.snapshot} for key, m in self.models.items()}

    def thumb_url(self, photo_id: str) -> str:
        """URL of the photo's JPEG thumbnail, computed from the id (no I/O: the handlers call
        :meth:`prepare_thumbnails` before a view names a photo). Only the thumbnail folder is served."""
        return f"gradio_api/file={self.thumbs.path(photo_id)}"

    def prepare_thumbnails(self, photo_ids: Iterable[str]) -> None:
        """Make the thumbnails that are not cached yet (before the page asks for them)."""
        for photo_id in photo_ids:
            self.thumbs.get(photo_id)

    def warm_thumbnails(
        self, photo_ids: Iterable[str] | None = None, *, progress: bool = False, pause_s: float = 0.0
    ) -> None:
        """Make the thumbnails of ``photo_ids`` (default: the whole gallery) that are not cached yet, so
        results show at once; ``pause_s`` between photos leaves the cores to people drawing."""
        ids = list(self.ids if photo_ids is None else photo_ids)
        for photo_id in tqdm(ids, desc="thumbnails", unit="photo", disable=not progress, mininterval=1.0):
            try:
                self.thumbs.get(photo_id)
            except (OSError, ValueError) as exc:
                print(f"warning: no thumbnail for {photo_id}: {exc}", flush=True)
            if pause_s:
                time.sleep(pause_s)

    def rank(self, sketch, target_id: str | None, k: int, model: str = ""):
        """Rank the gallery with the model a study's ``models`` key names ("" = the app's ``--model``)."""
        ranker = self.models[model].ranker if model else self.ranker
        return ranker.rank(sketch, k=k, target_id=target_id)


def check_model_folders(models: Mapping[str, str | Path]) -> None:
    """Every study model folder exists and holds a checkpoint, checked before anything loads.

    Raises:
        ValueError: naming the study's ``models`` key and the folder, and how to fix it.
    """
    for key, folder in models.items():
        path = Path(folder).expanduser()
        if not (path / "model.safetensors").is_file():
            raise ValueError(
                f"study model {key!r}: no checkpoint at {path} (expected {path / 'model.safetensors'}); "
                "point the study's 'models' entry at a folder written by training (e.g. make reproduce)"
            )


def _ranker(retriever: Retriever, config: AppConfig) -> Retriever | RankBatcher:
    return RankBatcher(retriever, config.batch, workers=config.concurrency) if config.batch > 1 else retriever


def _warm(retriever: Retriever) -> None:
    """One ranking ahead of the first participant, so the first stroke is fast."""
    retriever.rank(Sketch((np.array([[10.0, 10.0, 0.0], [200.0, 180.0, 50.0]]),)), k=1)


def load_study_model(
    key: str, folder: str | Path, spec: str, cache_dir: Path, config: AppConfig, ids: tuple
) -> RankingModel:
    """Load one study model and index the gallery's photos with it (cached like the default index).

    Raises:
        ValueError: the checkpoint does not load, or its index does not hold the same photos.
    """
    path = Path(folder).expanduser()
    try:
        encoder = Encoder.load(path, channels_last=True)
    except CheckpointError as exc:
        raise ValueError(f"study model {key!r}: {exc}") from exc
    gallery = open_gallery(encoder, spec, cache_dir)
    if tuple(gallery.index.ids) != ids:
        raise ValueError(f"study model {key!r}: its index of {spec} does not hold the same photos as the app's")
    retriever = Retriever(encoder, gallery.index)
    retriever.snapshot = gallery.snapshot  # on every RankResult
    _warm(retriever)
    return RankingModel(key, path, model_hash(encoder), gallery.snapshot, retriever, _ranker(retriever, config))


def load_backend(config: AppConfig, study_models: Mapping[str, str | Path] | None = None) -> Backend:
    """Load the model(s) and open (or build and cache) the gallery index of each; with ``serve_url``,
    :func:`load_cluster_backend` instead (no model, no index: the cluster ranks).

    Uses the config's model, photos, gallery, gallery_size, cache_dir, threads, batch, concurrency
    and serve_url. ``study_models`` (``{key: checkpoint folder}``, a study's ``models`` that its
    conditions use) are checked before anything loads, then loaded once each.

    Raises:
        ValueError: a study model folder is missing or not a checkpoint, or study models are asked
            for together with ``serve_url`` (the cluster serves one model).
    """
    study_models = dict(study_models or {})
    check_model_folders(study_models)
    if study_models and config.serve_url:
        raise ValueError("conditions with their own models rank in process: drop --serve-url for this study")
    if config.serve_url:  # the cluster batches (@serve.batch) and searches its shards: docs/scaling.md
        return load_cluster_backend(config)
    set_threads(config.threads)
    notices = []
    if (config.model / "model.safetensors").exists():
        # channels_last: x0.94 per stroke at the same m@B (bench/results/encoder_options.md).
        encoder = Encoder.load(config.model, channels_last=True)
    else:
        encoder = create_encoder(seed=0)
        notices.append(
            f"No trained model at {config.model}: using an untrained network, so rankings are "
            "close to random. Train one (see README) or pass --model."
        )
    cache_dir = config.cache_path()
    spec = config.gallery_spec()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gallery = open_gallery(encoder, spec, cache_dir)
        ids = tuple(gallery.index.ids)
        models = {key: load_study_model(key, f, spec, cache_dir, config, ids) for key, f in study_models.items()}
    # faiss and torch share one OpenMP pool: set the serving threads once the gallery is built.
    set_threads(config.threads)
    notices += _skipped_notice(gallery.source, gallery.skipped, caught)
    retriever = Retriever(encoder, gallery.index)
    retriever.snapshot = gallery.snapshot  # on every RankResult
    _warm(retriever)
    photos = gallery.photos
    versions = (model_hash(encoder), code_version(), tuple(notices), gallery.snapshot)
    return Backend(_ranker(retriever, config), photos, _thumbnails(cache_dir, photos), *versions, models, retriever)


def load_cluster_backend(config: AppConfig) -> Backend:
    """The front end of a Ray Serve cluster (``--serve-url``): loads no model and embeds nothing.

    It lists the gallery's photos (the ids, for targets; each photo read by id when its thumbnail
    is first made), refuses to start when they are not the cluster's photos
    (:func:`check_cluster_gallery`), and logs the cluster's snapshot and encoder hash.

    Raises:
        RuntimeError: the cluster does not answer ``GET /info``.
        SnapshotMismatch: the cluster ranks other photos than ``--photos`` / ``--gallery`` names.
    """
    ranker = ServeRanker(config.serve_url)
    try:
        info = ranker.info()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            photos = open_photos(config.gallery_spec())
        check_cluster_gallery(info, photos.ids, photos.name)
    except BaseException:
        ranker.close()
        raise
    notices = _skipped_notice(photos.name, photos.refused, caught)
    snapshot = str(info["snapshot"])
    versions = (encoder_hash_of(snapshot), code_version(), tuple(notices), snapshot)
    return Backend(ranker, photos, _thumbnails(config.cache_path(), photos), *versions)


def _skipped_notice(source: str, skipped: list[str], caught: list[warnings.WarningMessage]) -> list[str]:
    """The page's notice about photos left out of the gallery (names, not server paths), printed in full."""
    for w in caught:
        print(f"warning: {w.message}", flush=True)
    if not skipped:
        return []
    print("skipped photos:\n  " + "\n  ".join(skipped), flush=True)
    shown = [s.replace(source + os.sep, "") for s in skipped[:3]]
    return [f"{len(skipped)} photo(s) skipped: " + "; ".join(shown)]


def _thumbnails(cache_dir: Path, photos: PhotoSource) -> ThumbnailCache:
    """The thumbnail cache of one photo source (its own folder, keyed by the source's name)."""
    folder = cache_dir / "thumbs" / hashlib.sha1(photos.name.encode()).hexdigest()[:16]
    return ThumbnailCache(folder.resolve(), photos.load_photo, THUMB_SIZE)
