"""Precomputed RL inputs: frozen sketch features at every drawing step, photo embeddings, targets.

The backbone is frozen during RL, so the feature of every partial sketch of a split is computed
once (render every step -> ``Encoder.sketch_features``) and cached as an ``.npz`` keyed by model,
dataset, split and step mode. An environment step is then an index into an array plus one
``(D,) @ (D, N)`` product: microseconds instead of a CNN forward.

Variable step counts (``step_mode="strokes"``) are padded by repeating each sketch's last step,
so every padded step is the finished sketch (ranks stay well defined) and ``num_steps`` says
where each episode ends.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from retrieval.raster import render_steps
from retrieval.sketch import step_cuts

CACHE_VERSION = 1  # bump when the cache layout or the rendering protocol changes


@dataclass(frozen=True)
class FeatureCache:
    """Everything an RL episode or a validation pass needs, as plain arrays.

    Attributes:
        features: ``(S, T, F)`` float32 frozen feature of sketch ``s`` after step ``t``; steps past
            ``num_steps[s]`` repeat the last real one.
        num_steps: ``(S,)`` int64 real step count of each sketch (``<= T``).
        photo_embeddings: ``(N, D)`` float32 L2-normalised embeddings of the split's gallery.
        true_index: ``(S,)`` int64 row of each sketch's true photo in ``photo_embeddings``.
        photo_ids: the gallery ids, row order of ``photo_embeddings``.
        sketch_keys: the sketch keys, row order of ``features``.
        meta: provenance (model hash, dataset, split, step mode, ...).
    """

    features: np.ndarray
    num_steps: np.ndarray
    photo_embeddings: np.ndarray
    true_index: np.ndarray
    photo_ids: list[str]
    sketch_keys: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s, t, _ = self.features.shape
        if self.num_steps.shape != (s,) or self.true_index.shape != (s,):
            raise ValueError(f"num_steps/true_index must be ({s},), got {self.num_steps.shape}/{self.true_index.shape}")
        if s and (self.num_steps.min() < 1 or self.num_steps.max() > t):
            raise ValueError(f"num_steps must lie in [1, {t}]")
        if s and (self.true_index.min() < 0 or self.true_index.max() >= len(self.photo_embeddings)):
            raise ValueError("true_index points outside photo_embeddings: the gallery must hold every true photo")

    @property
    def num_sketches(self) -> int:
        return self.features.shape[0]

    @property
    def max_steps(self) -> int:
        return self.features.shape[1]

    @property
    def feature_dim(self) -> int:
        return self.features.shape[2]

    @property
    def embed_dim(self) -> int:
        return self.photo_embeddings.shape[1]

    def save(self, path: str | Path) -> None:
        """Write one ``.npz`` (atomic rename, so a killed run never leaves half a cache)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            features=self.features,
            num_steps=self.num_steps,
            photo_embeddings=self.photo_embeddings,
            true_index=self.true_index,
            photo_ids=np.asarray(self.photo_ids, dtype=str),
            sketch_keys=np.asarray(self.sketch_keys, dtype=str),
            meta=np.asarray(json.dumps(self.meta)),
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> FeatureCache:
        with np.load(path, allow_pickle=False) as z:
            return cls(
                features=z["features"].astype(np.float32, copy=False),
                num_steps=z["num_steps"].astype(np.int64),
                photo_embeddings=z["photo_embeddings"].astype(np.float32, copy=False),
                true_index=z["true_index"].astype(np.int64),
                photo_ids=[str(x) for x in z["photo_ids"]],
                sketch_keys=[str(x) for x in z["sketch_keys"]],
                meta=json.loads(str(z["meta"])),
            )


def _l2n(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def synthetic_cache(
    num_sketches: int = 64,
    num_photos: int = 16,
    feature_dim: int = 32,
    embed_dim: int = 8,
    max_steps: int = 17,
    noise: float = 1.0,
    seed: int = 0,
) -> tuple[FeatureCache, np.ndarray, np.ndarray]:
    """A small learnable problem with the shape of the real one (no model, no data needed).

    Each sketch's feature drifts from noise towards a fixed linear lift of its photo's embedding
    as drawing progresses, so early steps are ambiguous and late steps are easy, as with real
    sketches. Returns the cache and a ``(D, F)`` weight, ``(D,)`` bias of a decent-but-imperfect
    head (least squares on the finished sketches) to start RL from.
    """
    rng = np.random.default_rng(seed)
    photos = _l2n(rng.standard_normal((num_photos, embed_dim)))
    lift = rng.standard_normal((embed_dim, feature_dim)).astype(np.float32)
    true_index = np.arange(num_sketches) % num_photos
    progress = (np.arange(1, max_steps + 1) / max_steps)[None, :, None]
    clean = (photos[true_index] @ lift)[:, None, :]
    features = (progress * clean + noise * (1.5 - progress) * rng.standard_normal((num_sketches, max_steps, feature_dim)))
    features = features.astype(np.float32)
    last = features[:, -1]
    solution, *_ = np.linalg.lstsq(np.c_[last, np.ones(len(last))], photos[true_index], rcond=None)
    weight, bias = solution[:-1].T.astype(np.float32), solution[-1].astype(np.float32)
    cache = FeatureCache(
        features=features,
        num_steps=np.full(num_sketches, max_steps, dtype=np.int64),
        photo_embeddings=photos,
        true_index=true_index.astype(np.int64),
        photo_ids=[f"p{i:04d}" for i in range(num_photos)],
        sketch_keys=[f"/train/p{i % num_photos:04d}_{i // num_photos}" for i in range(num_sketches)],
        meta={"source": "synthetic", "seed": seed},
    )
    return cache, weight, bias


# --- real features from an Encoder ------------------------------------------------------------


def model_fingerprint(encoder: Any) -> str:
    """A short hash of what the encoder computes (its meta plus outputs on fixed probe inputs).

    Hashing behaviour rather than files works for any ``Encoder`` however it was built or loaded,
    and changes whenever the backbone or the photo branch changes.
    """
    rng = np.random.default_rng(12345)
    size = int(encoder.meta.get("raster_size", 256))
    sketch_probe = np.where(rng.random((2, size, size)) < 0.05, 0, 255).astype(np.uint8)
    photo_probe = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    # Only what shapes the computation: the card, file hashes and such change on every save.
    shape_keys = ("arch", "input_size", "raster_size", "line_width", "feature_dim", "embed_dim", "normalisation")
    h = hashlib.sha256(json.dumps({k: encoder.meta.get(k) for k in shape_keys}, sort_keys=True, default=str).encode())
    h.update(np.round(np.asarray(encoder.sketch_features(sketch_probe), np.float32), 4).tobytes())
    h.update(np.round(np.asarray(encoder.embed_photos(photo_probe), np.float32), 4).tobytes())
    return h.hexdigest()[:16]


def _dataset_fingerprint(dataset: Any, split: str, records: list, photo_ids: list[str]) -> str:
    h = hashlib.sha256(str(getattr(dataset, "name", type(dataset).__name__)).encode())
    h.update(split.encode())
    h.update("\n".join(r.key for r in records).encode())
    h.update("\n".join(photo_ids).encode())
    # Point counts catch edited sketches under unchanged keys at no real cost.
    h.update(np.asarray([r.sketch.num_points for r in records], dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def compute_features(
    encoder: Any,
    dataset: Any,
    split: str,
    *,
    step_mode: str = "points",
    num_steps: int = 17,
    batch_size: int = 64,
    progress: bool = True,
) -> FeatureCache:
    """Render every step of every sketch of ``split`` and run the frozen backbone on them.

    Args:
        encoder: a ``retrieval.encoder.Encoder`` (rasters are rendered at its ``raster_size`` and
            ``line_width`` so features match what the app computes).
        dataset: a ``RetrievalDataset``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        step_mode: ``"points"`` (``num_steps`` point cuts, the on-the-fly protocol) or ``"strokes"``.
        num_steps: cuts per sketch in ``"points"`` mode.
        batch_size: rasters per backbone forward.
        progress: show tqdm bars.
    """
    records = list(dataset.sketches(split))
    photo_ids = list(dataset.photo_ids(split))
    if not records:
        raise ValueError(f"split {split!r} has no sketches; available splits: {dataset.splits()}")
    row_of = {pid: i for i, pid in enumerate(photo_ids)}
    missing = sorted({r.photo_id for r in records} - row_of.keys())
    if missing:
        raise ValueError(f"{len(missing)} sketches of {split!r} have no photo in that split, e.g. {missing[:3]}")
    size = int(encoder.meta.get("raster_size", 256))
    width = int(encoder.meta.get("line_width", 3))
    cuts = [step_cuts(r.sketch, step_mode, num_steps) for r in records]
    max_t = max(len(c) for c in cuts)

    # Flatten all (sketch, step) rasters into one stream so every forward is a full batch.
    features: np.ndarray | None = None
    pending: list[np.ndarray] = []
    slots: list[tuple[int, int]] = []
    bar = tqdm(total=sum(len(c) for c in cuts), desc=f"features {split}", unit="raster", disable=not progress)

    def flush() -> None:
        nonlocal features
        feats = np.asarray(encoder.sketch_features(np.stack(pending)), dtype=np.float32)
        if features is None:
            features = np.zeros((len(records), max_t, feats.shape[1]), dtype=np.float32)
        for (s, t), f in zip(slots, feats):
            features[s, t] = f
        bar.update(len(pending))
        pending.clear()
        slots.clear()

    for s, (record, sketch_cuts) in enumerate(zip(records, cuts)):
        for t, raster in enumerate(render_steps(record.sketch, sketch_cuts, size, width)):
            pending.append(raster)
            slots.append((s, t))
            if len(pending) >= batch_size:
                flush()
    if pending:
        flush()
    bar.close()
    assert features is not None
    lengths = np.asarray([len(c) for c in cuts], dtype=np.int64)
    for s, n in enumerate(lengths):
        features[s, n:] = features[s, n - 1]

    photo_embeddings = embed_gallery(encoder, dataset, photo_ids, batch_size=batch_size, progress=progress)
    return FeatureCache(
        features=features,
        num_steps=lengths,
        photo_embeddings=photo_embeddings,
        true_index=np.asarray([row_of[r.photo_id] for r in records], dtype=np.int64),
        photo_ids=photo_ids,
        sketch_keys=[r.key for r in records],
        meta={"split": split, "step_mode": step_mode, "num_steps": num_steps, "raster_size": size,
              "line_width": width, "dataset": str(getattr(dataset, "name", "?"))},
    )


def embed_gallery(encoder: Any, dataset: Any, photo_ids: list[str], *, batch_size: int = 64,
                  progress: bool = True) -> np.ndarray:
    """``(N, D)`` photo embeddings in ``photo_ids`` order, loading photos a batch at a time."""
    out = []
    for i in tqdm(range(0, len(photo_ids), batch_size), desc="photos", unit="batch", disable=not progress):
        out.append(np.asarray(encoder.embed_photos([dataset.load_photo(p) for p in photo_ids[i : i + batch_size]]),
                              dtype=np.float32))
    return np.concatenate(out, axis=0)


def cached_features(
    encoder: Any,
    dataset: Any,
    split: str,
    cache_dir: str | Path,
    *,
    step_mode: str = "points",
    num_steps: int = 17,
    batch_size: int = 64,
    progress: bool = True,
) -> FeatureCache:
    """``compute_features`` through an on-disk cache keyed by model, dataset, split and step mode."""
    records = list(dataset.sketches(split))
    photo_ids = list(dataset.photo_ids(split))
    model_hash = model_fingerprint(encoder)
    data_hash = _dataset_fingerprint(dataset, split, records, photo_ids)
    steps = f"{step_mode}{num_steps}" if step_mode == "points" else step_mode
    path = Path(cache_dir) / f"feat-v{CACHE_VERSION}-{model_hash}-{data_hash}-{split}-{steps}.npz"
    if path.exists():
        return FeatureCache.load(path)
    cache = compute_features(encoder, dataset, split, step_mode=step_mode, num_steps=num_steps,
                             batch_size=batch_size, progress=progress)
    cache = replace(cache, meta={**cache.meta, "model_hash": model_hash, "dataset_hash": data_hash, "path": str(path)})
    cache.save(path)
    return cache
