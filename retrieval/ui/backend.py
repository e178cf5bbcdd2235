"""The app's backend: the model, the gallery index, thumbnails and the per-stroke ranker, loaded once.

Read-only after loading: per-user state lives in each tab's ``DrawingSession``.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from retrieval.data.sketch import Sketch
from retrieval.model.encoder import Encoder
from retrieval.provenance import code_version
from retrieval.serving.batching import RankBatcher
from retrieval.serving.gallery import Gallery, default_cache_dir, model_hash, open_gallery
from retrieval.serving.index import set_faiss_threads
from retrieval.serving.retriever import Retriever
from retrieval.serving.serve_client import ServeRanker
from retrieval.serving.thumbnails import ThumbnailCache
from retrieval.ui.config import AppConfig

THUMB_SIZE = 224


@dataclass(frozen=True)
class Backend:
    retriever: Retriever
    ranker: Retriever | RankBatcher | ServeRanker  # the per-stroke call (RankBatcher: shared forwards)
    gallery: Gallery
    ids: tuple[str, ...]
    thumbs: ThumbnailCache
    model_hash: str
    code_version: str
    notices: tuple[str, ...]
    snapshot: str = ""  # the gallery snapshot ranked against (the cluster's in --serve-url mode): in every log

    def thumb_url(self, photo_id: str) -> str:
        """URL of the photo's JPEG thumbnail, computed from the id (no I/O: the handlers call
        :meth:`prepare_thumbnails` before a view names a photo). Only the thumbnail folder is served."""
        return f"gradio_api/file={self.thumbs.path(photo_id)}"

    def prepare_thumbnails(self, photo_ids: Iterable[str]) -> None:
        """Make the thumbnails that are not cached yet (before the page asks for them)."""
        for photo_id in photo_ids:
            self.thumbs.get(photo_id)

    def warm_thumbnails(self) -> None:
        """Make every thumbnail ahead of time (background thread), so first results show at once."""
        for photo_id in self.ids:
            try:
                self.thumbs.get(photo_id)
            except (OSError, ValueError) as exc:
                print(f"warning: no thumbnail for {photo_id}: {exc}", flush=True)
            time.sleep(0.005)  # leave the cores to the people drawing

    def rank(self, sketch, target_id: str | None, k: int):
        return self.ranker.rank(sketch, k=k, target_id=target_id)


def load_backend(config: AppConfig) -> Backend:
    """Load the model and open (or build and cache) the gallery index.

    Uses the config's model, photos, gallery, gallery_size, cache_dir, threads, batch, concurrency
    and serve_url.
    """
    torch.set_num_threads(max(1, config.threads))
    notices = []
    if (config.model / "model.safetensors").exists():
        # channels_last: x0.94 per stroke at the same m@B (bench/results/encoder_options.md).
        encoder = Encoder.load(config.model, channels_last=True)
    else:
        encoder = Encoder.create(seed=0)
        notices.append(
            f"No trained model at {config.model}: using an untrained network, so rankings are "
            "close to random. Train one (see README) or pass --model."
        )
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    spec = config.photos or config.gallery or f"procedural:photos={config.gallery_size}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gallery = open_gallery(encoder, spec, cache_dir)
    # faiss and torch share one OpenMP pool: set the serving threads once the gallery is built.
    set_faiss_threads(config.threads)
    torch.set_num_threads(max(1, config.threads))
    if gallery.skipped:
        shown = [s.replace(gallery.source + os.sep, "") for s in gallery.skipped[:3]]  # names, not server paths
        notices.append(f"{len(gallery.skipped)} photo(s) skipped: " + "; ".join(shown))
        print("skipped photos:\n  " + "\n  ".join(gallery.skipped), flush=True)
    for w in caught:
        print(f"warning: {w.message}", flush=True)
    thumbs_folder = cache_dir / "thumbs" / hashlib.sha1(gallery.source.encode()).hexdigest()[:16]
    thumbs = ThumbnailCache(thumbs_folder.resolve(), gallery.load_photo, THUMB_SIZE)
    retriever = Retriever(encoder, gallery.index)
    retriever.snapshot = gallery.snapshot  # on every RankResult
    retriever.rank(Sketch((np.array([[10.0, 10.0, 0.0], [200.0, 180.0, 50.0]]),)), k=1)  # warm-up: first stroke fast
    snapshot = gallery.snapshot
    if config.serve_url:  # the cluster batches (@serve.batch) and searches its shards: docs/scaling.md
        ranker = ServeRanker(config.serve_url)
        snapshot = ranker.info()["snapshot"]  # what the cluster ranks against, logged instead of the local one
    else:
        ranker = RankBatcher(retriever, config.batch, workers=config.concurrency) if config.batch > 1 else retriever
    ids = tuple(gallery.index.ids)
    hashes = (model_hash(encoder), code_version(), tuple(notices), snapshot)
    return Backend(retriever, ranker, gallery, ids, thumbs, *hashes)
