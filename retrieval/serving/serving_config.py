"""What every ranking process starts from: the model, the gallery, its cache and the thread count.

:class:`ServingConfig` holds the fields the app (``retrieval.ui.config.AppConfig``) and the Ray
Serve app (``retrieval.serving.ray_setup.ServeConfig``) share, so a flag means the same in both and
the default gallery (``procedural:photos=N``) is spelled once. Free of torch, faiss and ray: the
Serve ingress imports it without loading a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from retrieval.provenance import DEFAULT_MODEL_DIR


def default_cache_dir() -> Path:
    """``$EARLYSKETCH_CACHE`` or ``~/.cache/earlysketch``: derived data lives outside the repo."""
    return Path(os.environ.get("EARLYSKETCH_CACHE", Path.home() / ".cache" / "earlysketch")).expanduser()


@dataclass
class ServingConfig:
    """The model and gallery a ranking process serves (a base of the app's and the Serve app's configs)."""

    model: Path = DEFAULT_MODEL_DIR
    """checkpoint folder (model.safetensors + model.json); the app falls back to an untrained network, with a warning"""
    gallery: str = ""
    """gallery spec (dataset spec, QMUL folder, photo folder); default: procedural of --gallery-size"""
    gallery_size: int = 1000
    """photos of the default procedural gallery"""
    cache_dir: str = ""
    """gallery, index, shard and thumbnail cache (default $EARLYSKETCH_CACHE or ~/.cache/earlysketch)"""
    threads: int = 1
    """torch + faiss threads per ranking job or Serve replica (measured: 1 beats 2 under concurrent sessions)"""

    def gallery_spec(self) -> str:
        """The gallery to open: ``--gallery``, else the procedural gallery of ``--gallery-size`` photos."""
        return self.gallery or f"procedural:photos={self.gallery_size}"

    def cache_path(self) -> Path:
        """``--cache-dir`` with ``~`` expanded, else :func:`default_cache_dir`."""
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()
