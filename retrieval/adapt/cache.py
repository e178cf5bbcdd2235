"""Adapted models kept by what made them: the start model, the photo folder's content and the budget.

The app's ``--photos DIR --adapt-minutes M`` asks for ``cached_adaptation``: the first start adapts
(with a progress bar) and writes ``<cache>/adapted/<key>``; later starts with the same start
weights, the same photos (paths and bytes, ``run.photo_hash``) and the same budget reuse it.
Adding, removing or editing one photo makes a new key. The folder appears whole or not at all
(``run.adapt`` renames it into place), so a cut-off start leaves nothing a later one would trust.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from retrieval.adapt.run import AdaptConfig, adapt, photo_hash
from retrieval.data.images import scan_photo_folder
from retrieval.model.checkpoint import META_FILE, read_checkpoint
from retrieval.serving.serving_config import default_cache_dir

CACHE_VERSION = 1  # bump when the adaptation recipe changes: old entries no longer match


def cache_key(model: str | Path, photos: str | Path, minutes: float) -> str:
    """Key of an adapted model: start weights' sha256, the photos' content hash, the minutes, the recipe version."""
    meta, _ = read_checkpoint(Path(model))
    identity = {
        "version": CACHE_VERSION,
        "start_model": meta["weights_sha256"],
        "photos": photo_hash(scan_photo_folder(photos)[0]),
        "minutes": float(minutes),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def cached_adaptation(model: str | Path, photos: str | Path, minutes: float, cache_dir: str | Path = "") -> Path:
    """The checkpoint folder of ``model`` adapted to ``photos`` for ``minutes``: from the cache, else made now.

    ``cache_dir`` "" is the app's default cache (``retrieval.serving.serving_config.default_cache_dir``).
    """
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    folder = root / "adapted" / cache_key(model, photos, minutes)
    if (folder / META_FILE).is_file():
        print(f"adapted model from the cache: {folder}", flush=True)
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    print(f"adapting {model} to the photos in {photos} for {minutes:g} minutes (once; cached in {folder})", flush=True)
    return adapt(AdaptConfig(model=str(model), photos=str(photos), out=str(folder), minutes=minutes))
