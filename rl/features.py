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

from retrieval.model.pooling import l2n

CACHE_VERSION = 2  # bump when the cache layout or the rendering protocol changes


@dataclass(frozen=True)
class FeatureCache:
    """Everything an RL episode or a validation pass needs, as plain arrays.

    Attributes:
        features: ``(S, T, F)`` float32 frozen feature of sketch ``s`` after step ``t``; steps past
            ``num_steps[s]`` repeat the last real one.
        num_steps: ``(S,)`` int64 real step count of each sketch (``<= T``).
        photo_embeddings: ``(N, D)`` float32 L2-normalised embeddings of the split's gallery.
        true_index: ``(S,)`` int64 row of each sketch's true photo in ``photo_embeddings``.
        ink: ``(S, T)`` float32 ink share of the rendered partial sketch after step ``t``
            (``retrieval.model.progress_head.ink_share``): the drawing-progress signal the app can
            measure too. Synthetic caches store the true progress ``(t + 1) / T`` here.
        photo_ids: the gallery ids, row order of ``photo_embeddings``.
        sketch_keys: the sketch keys, row order of ``features``.
        meta: provenance (model hash, dataset, split, step mode, ...).
    """

    features: np.ndarray
    num_steps: np.ndarray
    photo_embeddings: np.ndarray
    true_index: np.ndarray
    ink: np.ndarray
    photo_ids: list[str]
    sketch_keys: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s, t, _ = self.features.shape
        if self.num_steps.shape != (s,) or self.true_index.shape != (s,):
            raise ValueError(f"num_steps/true_index must be ({s},), got {self.num_steps.shape}/{self.true_index.shape}")
        if self.ink.shape != (s, t):
            raise ValueError(f"ink must be ({s}, {t}) like features[..., 0], got {self.ink.shape}")
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

    def ink_ref(self) -> float:
        """Median ink share of the complete sketches: progress ``p = ink / ink_ref`` is ~1 at the end."""
        final = self.ink[np.arange(self.num_sketches), self.num_steps - 1]
        return float(max(np.median(final), 1e-6))

    def subset(self, rows: np.ndarray) -> FeatureCache:
        """The same gallery with only sketches ``rows`` (a bootstrap or a split of sketches)."""
        rows = np.asarray(rows)
        return replace(
            self,
            features=self.features[rows],
            num_steps=self.num_steps[rows],
            true_index=self.true_index[rows],
            ink=self.ink[rows],
            sketch_keys=[self.sketch_keys[i] for i in rows],
        )

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
            ink=self.ink,
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
                ink=z["ink"].astype(np.float32, copy=False),
                photo_ids=[str(x) for x in z["photo_ids"]],
                sketch_keys=[str(x) for x in z["sketch_keys"]],
                meta=json.loads(str(z["meta"])),
            )


def synthetic_cache(
    num_sketches: int = 64,
    num_photos: int = 16,
    feature_dim: int = 32,
    embed_dim: int = 8,
    max_steps: int = 17,
    noise: float = 1.0,
    seed: int = 0,
    drift: float = 0.0,
    sketch_seed: int | None = None,
) -> tuple[FeatureCache, np.ndarray, np.ndarray]:
    """A small learnable problem with the shape of the real one (no model, no data needed).

    Each sketch's feature drifts from noise towards a fixed linear lift of its photo's embedding
    as drawing progresses, so early steps are ambiguous and late steps are easy, as with real
    sketches. ``drift > 0`` adds ``drift * (1 - 2 * progress)`` times one fixed feature direction
    (the lift of a random embedding direction): early sketches lean one way, finished ones the
    other. A bias cannot undo a lean that changes sign, and with ``feature_dim == embed_dim``
    nulling that direction costs the linear head a dimension of the photo; a head that reads
    progress can subtract it.
    ``ink`` holds the true progress ``(t + 1) / T``.

    ``seed`` fixes the photos, lift and drift direction; ``sketch_seed`` (default: ``seed``) draws
    the sketches' noise, so caches with one ``seed`` and different ``sketch_seed`` are train, val
    and holdout sketches of the same gallery. Returns the cache and a ``(D, F)`` weight, ``(D,)``
    bias of a decent-but-imperfect head (least squares on the finished sketches) to start from.
    """
    rng = np.random.default_rng(seed)
    photos = l2n(rng.standard_normal((num_photos, embed_dim))).astype(np.float32)
    lift = rng.standard_normal((embed_dim, feature_dim)).astype(np.float32)
    lean = (l2n(rng.standard_normal(embed_dim)).astype(np.float32) @ lift).astype(np.float32)
    sketch_rng = rng if sketch_seed is None else np.random.default_rng([seed, sketch_seed])
    true_index = np.arange(num_sketches) % num_photos
    progress = (np.arange(1, max_steps + 1) / max_steps)[None, :, None]
    clean = (photos[true_index] @ lift)[:, None, :]
    shape = (num_sketches, max_steps, feature_dim)
    features = progress * clean + noise * (1.5 - progress) * sketch_rng.standard_normal(shape)
    features = (features + drift * (1 - 2 * progress) * lean).astype(np.float32)
    last = features[:, -1]
    solution, *_ = np.linalg.lstsq(np.c_[last, np.ones(len(last))], photos[true_index], rcond=None)
    weight, bias = solution[:-1].T.astype(np.float32), solution[-1].astype(np.float32)
    cache = FeatureCache(
        features=features,
        num_steps=np.full(num_sketches, max_steps, dtype=np.int64),
        photo_embeddings=photos,
        true_index=true_index.astype(np.int64),
        ink=np.broadcast_to(progress[:, :, 0], (num_sketches, max_steps)).astype(np.float32),
        photo_ids=[f"p{i:04d}" for i in range(num_photos)],
        sketch_keys=[f"/train/p{i % num_photos:04d}_{i // num_photos}" for i in range(num_sketches)],
        meta={"source": "synthetic", "seed": seed, "sketch_seed": sketch_seed, "drift": drift},
    )
    return cache, weight, bias


# --- real features from an Encoder ------------------------------------------------------------


def model_fingerprint(encoder: Any) -> str:
    """Hash of the weights and preprocessing (``retrieval.serving.gallery.model_hash``) plus the raster settings."""
    from retrieval.serving.gallery import model_hash

    raster = f"{encoder.meta.get('raster_size')}/{encoder.meta.get('line_width')}"
    return hashlib.sha256(f"{model_hash(encoder)}|{raster}".encode()).hexdigest()[:16]


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
    progress: bool = True,
) -> FeatureCache:
    """Render every step of every sketch of ``split`` and run the frozen backbone on them.

    Uses the evaluation code's own rendering and embedding (``retrieval.evaluation.protocol``), so the RL
    head sees exactly the features the evaluation and the app compute.

    Args:
        encoder: a ``retrieval.model.encoder.Encoder``.
        dataset: a ``RetrievalDataset``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        step_mode: ``"points"`` (17 point cuts, the on-the-fly protocol) or ``"strokes"``.
        num_steps: cuts per sketch in ``"points"`` mode (only 17 is supported by the evaluation).
        progress: show tqdm bars.
    """
    from retrieval.evaluation.protocol import embed_steps, photo_embeddings, step_ink, true_photo_index

    if step_mode == "points" and num_steps != 17:
        raise ValueError("retrieval.evaluation.protocol renders the literature's 17 point cuts; use num_steps=17")
    records = list(dataset.sketches(split))
    if not records:
        raise ValueError(f"split {split!r} has no sketches; available splits: {dataset.splits()}")
    photo_ids, photos = photo_embeddings(encoder, dataset, split, progress=progress)
    features = embed_steps(encoder, records, step_mode, output="features", progress=progress)
    ink = step_ink(encoder, records, step_mode)
    # NaN padding -> repeat each sketch's last real step (the finished sketch).
    lengths = np.isfinite(features).all(axis=2).sum(axis=1).astype(np.int64)
    for s, n in enumerate(lengths):
        features[s, n:] = features[s, n - 1]
        ink[s, n:] = ink[s, n - 1]
    return FeatureCache(
        features=np.ascontiguousarray(features, dtype=np.float32),
        num_steps=lengths,
        photo_embeddings=np.ascontiguousarray(photos, dtype=np.float32),
        true_index=true_photo_index(records, photo_ids),
        ink=ink,
        photo_ids=list(photo_ids),
        sketch_keys=[r.key for r in records],
        meta={
            "split": split,
            "step_mode": step_mode,
            "num_steps": num_steps,
            "raster_size": encoder.meta.get("raster_size"),
            "line_width": encoder.meta.get("line_width"),
            "dataset": str(getattr(dataset, "name", "?")),
        },
    )


def cached_features(
    encoder: Any,
    dataset: Any,
    split: str,
    cache_dir: str | Path,
    *,
    step_mode: str = "points",
    num_steps: int = 17,
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
    cache = compute_features(encoder, dataset, split, step_mode=step_mode, num_steps=num_steps, progress=progress)
    cache = replace(cache, meta={**cache.meta, "model_hash": model_hash, "dataset_hash": data_hash, "path": str(path)})
    cache.save(path)
    return cache
