"""Photo galleries: embed a dataset split or any photo folder into a :class:`PhotoIndex`, cached on disk.

A gallery is a PhotoIndex plus a way back from a photo id to its image. Building one costs an
encoder forward per photo, so the result is cached (outside the repo, ``~/.cache/earlysketch`` or
``$EARLYSKETCH_CACHE`` or an explicit folder) under a key made of the model hash and the gallery's
identity. Re-opening a folder whose files changed only embeds the new or modified photos.

Gallery specs (``open_gallery``):
    ``/some/photos``                   any folder of png/jpg/jpeg/webp, searched recursively
    ``procedural:photos=200@val``      a dataset spec (see ``open_dataset``) and an optional split
    ``../shared/data/chairv2-train``   a QMUL-layout folder is a dataset (all photos unless ``@split``)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retrieval.data.dataset_protocol import RetrievalDataset
from retrieval.data.datasets import COORDINATE_SUFFIX, open_dataset
from retrieval.data.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, read_rgb, scan_photo_folder
from retrieval.model.encoder import Encoder
from retrieval.serving.index import PhotoIndex
from retrieval.serving.serving_config import default_cache_dir
from retrieval.serving.versions import snapshot_id
from retrieval.types import RGBImage

# Decompression-bomb guard: a 48 MP phone photo passes, a crafted 1-gigapixel PNG does not.
SPLIT_SEPARATOR = "@"
ALL_SPLITS = "all"
CACHE_VERSION = 1


def model_hash(encoder: Encoder) -> str:
    """Hash of what photo embeddings depend on: the weights and the preprocessing meta."""
    digest = hashlib.sha256()
    keys = ("arch", "input_size", "embed_dim", "normalisation", "branch_sharing")
    digest.update(json.dumps({k: encoder.meta.get(k) for k in keys}, sort_keys=True).encode())
    for name, tensor in sorted(encoder.net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class PhotoSource:
    """The photos a gallery spec names, listed without decoding or embedding any of them.

    What a gallery is built from (:func:`index_photos`), and all a front end that ranks on a cluster
    needs of the gallery (``app.py --serve-url``): the ids, and each photo read lazily by id.

    Attributes:
        name: the spec it was opened from (logged as the study's ``gallery``).
        ids: photo ids in listing order.
        load_photo: photo id -> ``(H, W, 3)`` uint8 RGB, read on demand.
        cache_key: identity of the photos in the index cache's key ("" = never cached).
        stamps: photo id -> change stamp (file size and mtime for folders): a cached embedding is
            reused only while its stamp is unchanged.
        paths: photo id -> image file, for folder galleries and folder datasets.
        refused: files left out while listing (symlinks leaving the folder), with the reason.
    """

    name: str
    ids: tuple[str, ...]
    load_photo: Callable[[str], RGBImage]
    cache_key: str = ""
    stamps: dict[str, list] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    _members: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_members", frozenset(self.ids))  # O(1) membership for 10M ids

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, photo_id: object) -> bool:
        return photo_id in self._members


@dataclass
class Gallery:
    """A built gallery: the index, the id -> photo mapping and where it is cached.

    Attributes:
        index: photo embeddings searchable by sketch embedding.
        source: the gallery spec it was built from.
        paths: photo id -> image file, for folder galleries (empty for dataset galleries).
        loader: photo id -> RGB image (reads ``paths`` or asks the dataset).
        cache_folder: where the index is cached, ``None`` when caching was off.
        skipped: files left out (unreadable, too large, escaping symlinks), with the reason.
        encoder_hash: :func:`model_hash` of the encoder that embedded the photos.
    """

    index: PhotoIndex
    source: str
    paths: dict[str, Path] = field(default_factory=dict)
    loader: Callable[[str], RGBImage] | None = None
    cache_folder: Path | None = None
    skipped: list[str] = field(default_factory=list)
    encoder_hash: str = ""

    @property
    def snapshot(self) -> str:
        """What an answer was ranked against: encoder hash + gallery content hash (:func:`snapshot_id`)."""
        return snapshot_id(self.encoder_hash, self.index.content_hash())

    @property
    def photos(self) -> PhotoSource:
        """The indexed photos (unreadable ones left out) as a :class:`PhotoSource`."""
        return PhotoSource(self.source, tuple(self.index.ids), self.load_photo, paths=self.paths)

    def load_photo(self, photo_id: str) -> RGBImage:
        """The photo of ``photo_id`` as ``(H, W, 3)`` uint8 RGB."""
        if self.loader is None:
            raise KeyError(f"gallery {self.source} has no photo loader")
        return self.loader(photo_id)


def _embed(
    encoder: Encoder, ids: list[str], load: Callable[[str], RGBImage], batch_size: int, progress: bool, what: str
) -> tuple[np.ndarray, list[str], list[str]]:
    """Embed photos in batches; returns (embeddings, ids that worked, skipped with reasons)."""
    kept_vecs, kept_ids, skipped = [], [], []
    for start in tqdm(range(0, len(ids), batch_size), desc=f"embedding {what}", unit="batch", disable=not progress):
        images, batch_ids = [], []
        for pid in ids[start : start + batch_size]:
            try:
                images.append(load(pid))
                batch_ids.append(pid)
            except (ValueError, OSError) as exc:
                skipped.append(f"{pid}: {exc}")
                warnings.warn(f"skipping photo {pid}: {exc}", UserWarning, stacklevel=3)
        if images:
            kept_vecs.append(encoder.embed_photos(images))
            kept_ids += batch_ids
    dim = encoder.meta["embed_dim"]
    return (np.concatenate(kept_vecs) if kept_vecs else np.zeros((0, dim), np.float32)), kept_ids, skipped


# --- cache ---------------------------------------------------------------------------------------
def _cache_folder(cache_dir: Path, model: str, fingerprint: str) -> Path:
    key = hashlib.sha256(f"v{CACHE_VERSION}\0{model}\0{fingerprint}".encode()).hexdigest()[:20]
    return cache_dir / "galleries" / key


def _read_cache(folder: Path) -> tuple[PhotoIndex, dict[str, list]] | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        return PhotoIndex.load(folder / "index"), manifest["entries"]
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        if folder.exists():
            warnings.warn(f"ignoring unreadable gallery cache {folder} ({exc}); rebuilding", UserWarning, stacklevel=3)
        return None


def _write_cache(folder: Path, index: PhotoIndex, entries: dict[str, list], source: str) -> None:
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    index.save(tmp / "index")
    (tmp / "manifest.json").write_text(json.dumps({"source": source, "entries": entries}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # a reader never sees a half-written cache


def index_photos(
    encoder: Encoder,
    photos: PhotoSource,
    cache_dir: str | Path | None = None,
    *,
    batch_size: int = 32,
    progress: bool = True,
    kind: str = "auto",
) -> Gallery:
    """Embed ``photos`` into a :class:`Gallery`, reusing cached embeddings whose stamp is unchanged.

    Photos that fail to decode are skipped with a warning naming them. ``cache_dir=None`` (or a
    source without a ``cache_key``) disables caching.
    """
    cache_dir = _opt_path(cache_dir) if photos.cache_key else None
    folder = _cache_folder(cache_dir, model_hash(encoder), photos.cache_key) if cache_dir else None
    entries = {pid: photos.stamps.get(pid, []) for pid in photos.ids}
    cached = _read_cache(folder) if folder else None
    index, old = cached if cached else (None, {})
    unchanged = [pid for pid in entries if old.get(pid) == entries[pid]] if index is not None else []
    reuse = set(unchanged)
    todo = [pid for pid in entries if pid not in reuse]
    vecs, new_ids, skipped = _embed(encoder, todo, photos.load_photo, batch_size, progress, photos.name)
    stale = index is not None and len(unchanged) != len(index)  # photos removed or modified since
    if index is None or stale:
        row_of = {pid: row for row, pid in enumerate(index.ids)} if index is not None else {}
        keep_rows = [row_of[pid] for pid in unchanged]
        base = index.vectors[keep_rows] if keep_rows else np.zeros((0, vecs.shape[1]), np.float32)
        index = PhotoIndex.build(np.concatenate([base, vecs]), unchanged + new_ids, kind=kind)
    elif new_ids:
        index.add(vecs, new_ids)
    if folder and (new_ids or stale or cached is None or index.rebuilt_on_load):
        _write_cache(folder, index, {pid: entries[pid] for pid in index.ids}, photos.name)
    paths = {pid: photos.paths[pid] for pid in index.ids if pid in photos.paths}
    return Gallery(index, photos.name, paths, photos.load_photo, folder, photos.refused + skipped, model_hash(encoder))


def folder_photos(root: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> PhotoSource:
    """Every image under ``root``; ids are paths relative to it (``"shoes/12.jpg"``), stamped with
    size and mtime. Symlinks leaving ``root`` are refused with a warning naming them."""
    root = Path(root).expanduser().resolve()
    paths, refused = scan_photo_folder(root)
    for item in refused:
        warnings.warn(f"skipping {item}", UserWarning, stacklevel=2)
    if not paths:
        raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images under {root}")
    stamps = {pid: [p.stat().st_size, p.stat().st_mtime_ns] for pid, p in paths.items()}

    def load(pid: str) -> RGBImage:
        return read_rgb(paths[pid], max_pixels)

    return PhotoSource(str(root), tuple(paths), load, f"folder:{root}", stamps, paths, refused)


def build_folder_gallery(
    encoder: Encoder,
    root: str | Path,
    cache_dir: str | Path | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    batch_size: int = 32,
    progress: bool = True,
    kind: str = "auto",
) -> Gallery:
    """Gallery of every image under ``root`` (:func:`folder_photos`); unreadable, broken or
    oversized images are skipped with a warning naming them. ``cache_dir=None`` disables caching.
    """
    photos = folder_photos(root, max_pixels=max_pixels)
    gallery = index_photos(encoder, photos, cache_dir, batch_size=batch_size, progress=progress, kind=kind)
    if len(gallery.index) == 0:
        raise ValueError(f"no readable images under {photos.name}: {'; '.join(gallery.skipped[:5])}")
    return gallery


def dataset_photo_ids(dataset: RetrievalDataset, split: str | None) -> list[str]:
    """Photo ids of one split, or of all splits when ``split`` is ``None`` or ``"all"``."""
    if split in (None, ALL_SPLITS):
        return sorted({pid for s in dataset.splits() for pid in dataset.photo_ids(s)})
    if split not in dataset.splits():
        raise KeyError(f"dataset {dataset.name} has no split {split!r}; available: {dataset.splits()} or 'all'")
    return dataset.photo_ids(split)


def dataset_photos(dataset: RetrievalDataset, split: str | None = None, *, identity: str | None = None) -> PhotoSource:
    """A dataset split's photos (all photos when ``split`` is None/"all").

    ``identity`` names the dataset in the cache key (e.g. the spec string it was opened from).
    The key always adds a hash of the first photo's pixels (the one photo read here), so two
    datasets that share a name and ids but not images never share a cache entry.
    """
    ids = dataset_photo_ids(dataset, split)
    if not ids:
        raise ValueError(f"dataset {dataset.name} split {split!r} has no photos")
    identity = identity or f"{dataset.name}:{getattr(dataset, 'root', '')}"
    identity += f"#{hashlib.sha256(dataset.load_photo(ids[0]).tobytes()).hexdigest()[:12]}"
    source = f"{identity}{SPLIT_SEPARATOR}{split or ALL_SPLITS}"
    paths = {}
    if hasattr(dataset, "photo_path"):  # folder datasets can say where each photo lives
        paths = {pid: Path(dataset.photo_path(pid)) for pid in ids}
    return PhotoSource(source, tuple(ids), dataset.load_photo, f"dataset:{source}", paths=paths)


def build_dataset_gallery(
    encoder: Encoder,
    dataset: RetrievalDataset,
    split: str | None = None,
    cache_dir: str | Path | None = None,
    *,
    identity: str | None = None,
    batch_size: int = 32,
    progress: bool = True,
    kind: str = "auto",
) -> Gallery:
    """Gallery of a dataset split's photos (:func:`dataset_photos`)."""
    photos = dataset_photos(dataset, split, identity=identity)
    return index_photos(encoder, photos, cache_dir, batch_size=batch_size, progress=progress, kind=kind)


def split_gallery_spec(spec: str) -> tuple[str, str | None]:
    """``"procedural:photos=50@val"`` -> ``("procedural:photos=50", "val")``; no ``@split`` -> None."""
    head, sep, tail = str(spec).rpartition(SPLIT_SEPARATOR)
    if sep and tail and not Path(spec).expanduser().exists() and "/" not in tail and ":" not in tail:
        return head, tail
    return str(spec), None


def is_dataset_spec(spec: str) -> bool:
    """True for procedural specs and QMUL-layout folders; plain photo folders are not datasets."""
    if spec.split(":", 1)[0] == "procedural":
        return True
    path = Path(spec).expanduser()
    return path.is_dir() and any(path.glob(f"*{COORDINATE_SUFFIX}*"))


def open_photos(spec: str | Path) -> PhotoSource:
    """The photos a gallery spec names (see the module docstring), listed without embedding."""
    base, split = split_gallery_spec(str(spec))
    if is_dataset_spec(base):
        identity = base if base.startswith("procedural") else str(Path(base).expanduser().resolve())
        return dataset_photos(open_dataset(base), split, identity=identity)
    if split is not None:
        raise ValueError(f"{base} is a plain photo folder; '{SPLIT_SEPARATOR}{split}' only applies to datasets")
    return folder_photos(base)


def open_gallery(
    encoder: Encoder,
    spec: str | Path,
    cache_dir: str | Path | None = None,
    *,
    cache: bool = True,
    progress: bool = True,
    **kwargs,
) -> Gallery:
    """Build (or load from cache) the gallery a spec names (:func:`open_photos`).

    ``cache_dir`` defaults to :func:`default_cache_dir`; ``cache=False`` always re-embeds.
    ``kwargs``: ``batch_size`` and ``kind`` of :func:`index_photos`.
    """
    cache_dir = (cache_dir or default_cache_dir()) if cache else None
    gallery = index_photos(encoder, open_photos(spec), cache_dir, progress=progress, **kwargs)
    if len(gallery.index) == 0:
        raise ValueError(f"no readable images in {gallery.source}: {'; '.join(gallery.skipped[:5])}")
    return gallery


def _opt_path(path: str | Path | None) -> Path | None:
    return None if path is None else Path(path).expanduser()
