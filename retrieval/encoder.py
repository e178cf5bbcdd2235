"""Inference wrapper around :class:`~retrieval.network.SketchPhotoNet` and its checkpoint format.

A checkpoint is a folder holding ``model.safetensors`` (weights only: loading never unpickles) and
``model.json`` (``meta``: everything needed to rebuild the network, plus a model ``card``: data,
config, seed, validation metrics, git commit). A legacy ``.pt`` file is read with
``torch.load(weights_only=True)`` and must hold ``{"meta": {...}, "state_dict": {...}}``.

Default architecture, chosen by measurement (bench/bench_encoder.py -> bench/results/encoder.md,
render + forward of one partial sketch, batch 1, CPU, torch 2.14): mobilenet_v3_small at 128 x 128
costs 3.0-3.3 ms p50 / 3.1-3.6 ms p95 on one thread, against 6.6-7.4 ms for mobilenet_v3_large,
4.9-5.7 for shufflenet_v2, 9.3-9.8 for efficientnet_b0, 9.5-10 for regnet_x_400mf and 14-15 for
resnet18 at the same size. That leaves almost all of the 20 ms per-stroke p50 budget for search and
UI even when the 2 cores are shared (under load, 2 torch threads were SLOWER than 1: p95 75-110 ms),
and leaves headroom to batch several users. 128 px keeps 3 px QMUL strokes at 1.5 px; 160-224 px cost
30-60 % more for line drawings drawn on ~256 px canvases. mobilenet_v3_large @128 is the fallback
when accuracy needs more capacity (still ~7 ms). channels_last saves ~5-10 % (``channels_last=True``).
"""

from __future__ import annotations

import copy
import json
import math
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from retrieval.network import ARCHS, IMAGENET_MEAN, IMAGENET_STD, SketchPhotoNet, photo_tensor, sketch_tensor
from retrieval.pooling import l2n
from retrieval.pretrained import PRETRAINED_MEAN, PRETRAINED_STD, sha256_of
from retrieval.progress_head import HEAD_TYPE, STATE_PREFIX, ProgressHead, ink_share
from retrieval.raster import render
from retrieval.sketch import Sketch
from retrieval.two_tower import TwoTowerNet
from retrieval.types import Embeddings

FORMAT = "earlysketch-encoder"
FORMAT_VERSION = 1
WEIGHTS_FILE, META_FILE = "model.safetensors", "model.json"
DEFAULT_ARCH, DEFAULT_INPUT_SIZE, DEFAULT_EMBED_DIM = "mobilenet_v3_small", 128, 128
_BATCH = 64  # images per forward pass: bounds memory when embedding a whole photo folder


class CheckpointError(ValueError):
    """A checkpoint that is missing, malformed, tampered with or not ours."""


def default_line_width(raster_size: int) -> int:
    """Ink width matching the 3 px QMUL/app convention on a 256 px canvas, scaled to ``raster_size``."""
    return max(1, round(3 * raster_size / 256))


class Encoder:
    """Maps sketch rasters and photos into one L2-normalised embedding space (eval mode, no grad).

    Attributes:
        net: the underlying :class:`SketchPhotoNet` (training code may train it in place).
        meta: architecture, sizes, normalisation, pooling, branch sharing and the model ``card``.
    """

    def __init__(
        self,
        net: SketchPhotoNet,
        meta: dict[str, Any],
        channels_last: bool = False,
        progress_head: ProgressHead | None = None,
    ) -> None:
        self.net = net.eval()
        self.meta = meta
        # Optional progress-aware sketch head (retrieval/progress_head.py) replacing net.sketch_head.
        self.progress_head = progress_head.eval() if progress_head is not None else None
        self.channels_last = channels_last
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    # --- construction -------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        arch: str = DEFAULT_ARCH,
        embed_dim: int = DEFAULT_EMBED_DIM,
        input_size: int = DEFAULT_INPUT_SIZE,
        raster_size: int | None = None,
        line_width: int | None = None,
        separate_blocks: int = 0,
        gem_p: float = 3.0,
        seed: int | None = None,
        channels_last: bool = False,
        calibrate: bool = True,
        photo_arch: str = "",
        photo_input_size: int | None = None,
        pretrained: tuple[str, ...] = (),
        sketch_frozen_blocks: int = 0,
        lock_photo: bool = False,
        sketch_polarity: str = "ink_high",
    ) -> Encoder:
        """A new real model (for training, tests and benchmarks): random init unless ``pretrained``.

        ``photo_arch`` (or any of the tower options) selects the two-tower layout of
        :mod:`retrieval.two_tower`: ``pretrained`` names the towers ("sketch", "photo") that start
        from the packaged ImageNet weights, ``lock_photo`` freezes the whole photo tower (LiT),
        ``sketch_frozen_blocks`` freezes leading sketch-tower blocks, ``photo_input_size`` sizes
        photos apart from sketches. ``sketch_polarity`` "paper_high" feeds sketches as black ink on
        white paper (as a pretrained network saw images), "ink_high" as ink = 1 on paper = 0.

        ``calibrate`` fits the batch-norm statistics of a from-scratch model to a few procedural
        photos and sketches (see :meth:`calibrate_batchnorm`), so even the untrained model gives
        distinct embeddings; pretrained statistics are never overwritten.
        """
        if seed is not None:
            torch.manual_seed(seed)
        raster_size = raster_size or input_size
        two_tower = bool(photo_arch or pretrained or lock_photo or sketch_frozen_blocks)
        towers = None
        if two_tower:
            towers = {
                "photo_arch": photo_arch or arch,
                "pretrained": sorted(pretrained),
                "sketch_frozen_blocks": int(sketch_frozen_blocks),
                "lock_photo": bool(lock_photo),
            }
        photo_norm = (PRETRAINED_MEAN, PRETRAINED_STD) if "photo" in pretrained else (IMAGENET_MEAN, IMAGENET_STD)
        sketch_norm = (0.5, 0.5) if sketch_polarity == "paper_high" else (0.0, 1.0)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "arch": arch,
            "input_size": int(input_size),
            "photo_input_size": int(photo_input_size or input_size),
            "raster_size": int(raster_size),
            "line_width": int(line_width or default_line_width(raster_size)),
            "embed_dim": int(embed_dim),
            "normalisation": {
                "photo_mean": list(photo_norm[0]),
                "photo_std": list(photo_norm[1]),
                "sketch": "ink=1-gray/255 (paper_high: 1-ink), then (value-mean)/std",
                "sketch_polarity": sketch_polarity,
                "sketch_mean": sketch_norm[0],
                "sketch_std": sketch_norm[1],
            },
            "pooling": {"type": "gem", "p_init": float(gem_p), "learnable": True},
            "branch_sharing": {
                "separate_blocks": int(separate_blocks),
                "shared": separate_blocks == 0 and not two_tower,
            },
            "card": {},
        }
        if towers is not None:
            meta["towers"] = towers
        _check_meta({**meta, "feature_dim": 1})
        net = _build_net(meta, gem_p=gem_p, pretrained=tuple(pretrained))
        meta["feature_dim"] = net.feature_dim
        if towers is not None:
            towers["photo_feature_dim"] = net.photo_feature_dim
            towers["imagenet_sha256"] = net.weights_sha256
        encoder = cls(net, meta, channels_last=channels_last)
        if calibrate and not pretrained:
            encoder.calibrate_batchnorm(*_calibration_images(encoder))
        return encoder

    @classmethod
    def load(cls, path: str | Path, channels_last: bool = False) -> Encoder:
        """Load a checkpoint folder (or its ``model.safetensors``/``model.json``, or a ``.pt`` file).

        Raises:
            CheckpointError: with a message saying what is wrong, for anything that is not a
                well-formed checkpoint of this project. Nothing is ever unpickled.
        """
        path = Path(path)
        if path.suffix in (".pt", ".pth"):
            meta, state = _read_pt(path)
        else:
            folder = path.parent if path.is_file() else path
            meta = _read_meta(folder / META_FILE)
            state = _read_safetensors(folder / WEIGHTS_FILE, meta.get("weights_sha256"))
        _check_meta(meta)
        head_state = {k[len(STATE_PREFIX) :]: state.pop(k) for k in list(state) if k.startswith(STATE_PREFIX)}
        net = _build_net(meta)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise CheckpointError(
                f"{path}: weights do not fit the architecture in its meta ({err}). "
                "Re-export the checkpoint with Encoder.save."
            ) from err
        if not all(torch.isfinite(t).all() for t in state.values()):
            raise CheckpointError(f"{path}: weights contain NaN/inf; use an earlier checkpoint of the run")
        head = None
        if meta.get("sketch_head", {}).get("type") == HEAD_TYPE:
            try:
                head = ProgressHead.from_state(meta["sketch_head"], head_state)
            except (KeyError, RuntimeError) as err:
                raise CheckpointError(f"{path}: progress head tensors do not fit meta['sketch_head'] ({err})") from err
        return cls(net, meta, channels_last=channels_last, progress_head=head)

    def save(self, path: str | Path, card: dict[str, Any] | None = None) -> Path:
        """Write ``path/model.safetensors`` and ``path/model.json``; returns the folder.

        ``card`` (data, config, seed, validation metrics, git commit...) must be JSON-serialisable;
        it replaces the card carried in ``meta`` when given.
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.net.state_dict().items()}
        if self.progress_head is not None:
            state |= {
                STATE_PREFIX + k: v.detach().contiguous().cpu() for k, v in self.progress_head.state_dict().items()
            }
        tmp = folder / (WEIGHTS_FILE + ".tmp")
        save_file(state, str(tmp))
        tmp.replace(folder / WEIGHTS_FILE)  # atomic: a crash never leaves half a weights file
        meta = dict(self.meta)
        if card is not None:
            meta["card"] = card
        meta["pooling"] = {**meta["pooling"], "p": float(self.net.pool.p.item())}
        meta["weights_sha256"] = sha256_of(folder / WEIGHTS_FILE)
        text = json.dumps(meta, indent=2, sort_keys=True, default=_json_default)
        (folder / (META_FILE + ".tmp")).write_text(text)
        (folder / (META_FILE + ".tmp")).replace(folder / META_FILE)
        self.meta = meta
        return folder

    # --- inference ----------------------------------------------------------------------------------
    def render(self, sketch: Sketch, n_points: int | None = None) -> np.ndarray:
        """Rasterise (a prefix of) a sketch at this model's raster size and line width."""
        return render(sketch, n_points, size=self.meta["raster_size"], width=self.meta["line_width"])

    def embed_sketches(self, images: np.ndarray | Sequence[np.ndarray]) -> Embeddings:
        """Sketch rasters ``(B, H, W)`` uint8 (white paper, black ink) -> ``(B, D)`` float32, unit rows."""
        if self.progress_head is not None:  # reads the rasters' ink share as drawing progress too
            images = _batch_of(images, 2)
            return self.progress_head.embed(self.sketch_features(images), ink_share(images))
        return self._run(self.net.embed_sketches, self.sketch_batch, _batch_of(images, 2))

    def embed_photos(self, images: np.ndarray | Sequence[np.ndarray]) -> Embeddings:
        """RGB uint8 photos (a list of any sizes, or ``(B, H, W, 3)``) -> ``(B, D)`` float32, unit rows."""
        return self._run(self.net.embed_photos, self.photo_batch, _batch_of(images, 3))

    def sketch_features(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Sketch rasters -> ``(B, F)`` float32 GeM-pooled backbone features (the RL observation)."""
        return self._run(self.net.sketch_features, self.sketch_batch, _batch_of(images, 2))

    def sketch_head_apply(self, features: np.ndarray | torch.Tensor) -> Embeddings:
        """``(B, F)`` features -> ``(B, D)`` float32 unit rows through the sketch head (Linear + L2)."""
        with torch.inference_mode():
            x = _float_tensor(features)
            return l2n(self.net.sketch_head(x.reshape(-1, self.meta["feature_dim"]))).numpy()

    def sketch_head_state(self) -> dict[str, torch.Tensor]:
        """The sketch head's ``{"weight": (D, F), "bias": (D,)}`` (cloned tensors)."""
        return {k: v.detach().clone() for k, v in self.net.sketch_head.state_dict().items()}

    def with_sketch_head(self, state: dict[str, torch.Tensor | np.ndarray]) -> Encoder:
        """A copy of this encoder whose sketch head is ``state`` (``weight`` (D, F), ``bias`` (D,))."""
        want = {"weight": (self.meta["embed_dim"], self.meta["feature_dim"]), "bias": (self.meta["embed_dim"],)}
        tensors = {k: _float_tensor(v) for k, v in state.items()}
        got = {k: tuple(v.shape) for k, v in tensors.items()}
        if got != want:
            raise ValueError(
                f"sketch head state must have shapes {want}, got {got}. A policy that also reads "
                "the progress input must drop that extra column before export."
            )
        other = Encoder(copy.deepcopy(self.net), copy.deepcopy(self.meta), channels_last=self.channels_last)
        other.net.sketch_head.load_state_dict(tensors)
        return other

    def with_progress_head(self, head: ProgressHead) -> Encoder:
        """A copy of this encoder whose sketch embeddings come from ``head`` (features + ink progress)."""
        if (head.feature_dim, head.embed_dim) != (self.meta["feature_dim"], self.meta["embed_dim"]):
            raise ValueError(
                f"head is {head.feature_dim} -> {head.embed_dim}, encoder {self.meta['feature_dim']} -> {self.meta['embed_dim']}"
            )
        meta = {**copy.deepcopy(self.meta), "sketch_head": head.config()}
        return Encoder(copy.deepcopy(self.net), meta, self.channels_last, copy.deepcopy(head))

    # --- helpers ------------------------------------------------------------------------------------
    def calibrate_batchnorm(self, sketches: Sequence[np.ndarray], photos: Sequence[np.ndarray]) -> Encoder:
        """Fit every batch-norm layer's running statistics to these images; weights untouched.

        A freshly initialised CNN in eval mode uses running statistics (mean 0, var 1) that do not
        match its activations, so they shrink layer after layer and every embedding collapses to
        the same vector. One no-grad train-mode pass with cumulative averages fixes that. Training
        overwrites these statistics anyway, so this only matters for untrained models.
        """
        norms = [m for m in self.net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        for module in norms:
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batch
        was_training = self.net.training
        self.net.train()
        with torch.no_grad():
            self.net.embed_pair(self.sketch_batch(sketches), self.photo_batch(photos))
        self.net.train(was_training)
        for module, momentum in zip(norms, momenta):
            module.momentum = momentum
        return self

    @property
    def device(self) -> torch.device:
        """Where the network's weights are (training may move them to a GPU); batches are built there."""
        return next(self.net.parameters()).device

    def sketch_batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        norm = self.meta["normalisation"]
        paper_high = norm.get("sketch_polarity") == "paper_high"
        x = sketch_tensor(images, self.meta["input_size"], norm["sketch_mean"], norm["sketch_std"], paper_high)
        return x.to(self.device)

    def photo_batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        norm = self.meta["normalisation"]
        size = self.meta.get("photo_input_size", self.meta["input_size"])
        return photo_tensor(images, size, norm["photo_mean"], norm["photo_std"]).to(self.device)

    def _run(self, forward, to_tensor, images) -> np.ndarray:
        if len(images) == 0:
            raise ValueError("no images given: pass at least one image")
        was_training = self.net.training
        self.net.eval()
        outputs = []
        try:
            with torch.inference_mode():
                for start in range(0, len(images), _BATCH):
                    x = to_tensor(images[start : start + _BATCH])
                    if self.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    outputs.append(forward(x).float().cpu().numpy())
        finally:
            self.net.train(was_training)
        return np.ascontiguousarray(np.concatenate(outputs), dtype=np.float32)


def _float_tensor(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A detached float32 CPU tensor (accepts numpy arrays and tensors that require grad)."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float32)
    return torch.as_tensor(np.asarray(values, dtype=np.float32))


def _batch_of(images: np.ndarray | Sequence[np.ndarray], single_ndim: int) -> np.ndarray | Sequence[np.ndarray]:
    """Promote one image (an array with ``single_ndim`` dims) to a batch of one."""
    if isinstance(images, np.ndarray) and images.ndim == single_ndim:
        return images[None]
    return images


# --- checkpoint reading: every failure becomes a CheckpointError that says how to fix it ---------------
def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"model card value {obj!r} is not JSON-serialisable")


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(
            f"{path.parent} is not an encoder checkpoint: expected a folder holding {WEIGHTS_FILE} "
            f"and {META_FILE} (written by Encoder.save / python -m retrieval.train)"
        )
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); re-export the checkpoint") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(meta).__name__}")
    return meta


def _read_safetensors(path: Path, expected_sha256: str | None) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: copy the whole checkpoint folder")
    if expected_sha256 is not None and sha256_of(path) != expected_sha256:
        raise CheckpointError(
            f"{path} does not match the sha256 recorded in {META_FILE}: the weights were modified "
            "or partially copied. Copy the checkpoint folder again from its source."
        )
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a valid safetensors file ({err})") from err


def _read_pt(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, AttributeError, TypeError) as err:
        raise CheckpointError(
            f"refused to load {path}: only plain tensors and containers are accepted "
            f"(torch.load weights_only=True) ({type(err).__name__}: {err}). "
            "Convert it to a safetensors checkpoint folder with Encoder.save."
        ) from err
    if not (isinstance(blob, dict) and isinstance(blob.get("meta"), dict) and isinstance(blob.get("state_dict"), dict)):
        raise CheckpointError(f"{path} must hold {{'meta': dict, 'state_dict': dict}}; save with Encoder.save instead")
    return blob["meta"], blob["state_dict"]


def _check_meta(meta: dict[str, Any]) -> None:
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"meta format is {meta.get('format')!r}, expected {FORMAT!r}: not an EarlySketch encoder")
    if meta.get("arch") not in ARCHS:
        raise CheckpointError(f"unknown arch {meta.get('arch')!r}; supported: {sorted(ARCHS)}")
    for key, low, high in (
        ("input_size", 32, 1024),
        ("raster_size", 32, 2048),
        ("embed_dim", 1, 8192),
        ("line_width", 1, 64),
        ("feature_dim", 1, 1 << 16),
    ):
        value = meta.get(key)
        if not isinstance(value, int) or not low <= value <= high:
            raise CheckpointError(f"meta {key}={value!r} must be an int in [{low}, {high}]")
    norm = meta.get("normalisation", {})
    numbers = [*norm.get("photo_mean", []), *norm.get("photo_std", []), norm.get("sketch_mean"), norm.get("sketch_std")]
    if len(numbers) != 8 or not all(isinstance(v, int | float) and math.isfinite(v) for v in numbers):
        raise CheckpointError(f"meta normalisation is malformed: {norm!r}")
    sep = meta.get("branch_sharing", {}).get("separate_blocks")
    if not isinstance(sep, int) or sep < 0:
        raise CheckpointError(f"meta branch_sharing.separate_blocks={sep!r} must be a non-negative int")
    if norm.get("sketch_polarity", "ink_high") not in ("ink_high", "paper_high"):
        raise CheckpointError(
            f"meta normalisation.sketch_polarity={norm.get('sketch_polarity')!r}: ink_high or paper_high"
        )
    photo_size = meta.get("photo_input_size", meta.get("input_size"))
    if not isinstance(photo_size, int) or not 32 <= photo_size <= 1024:
        raise CheckpointError(f"meta photo_input_size={photo_size!r} must be an int in [32, 1024]")
    towers = meta.get("towers")
    if towers is not None:
        if not isinstance(towers, dict) or towers.get("photo_arch") not in ARCHS:
            raise CheckpointError(f"meta towers.photo_arch must be one of {sorted(ARCHS)}, got {towers!r}")
        frozen = towers.get("sketch_frozen_blocks")
        if not isinstance(frozen, int) or frozen < 0 or not isinstance(towers.get("lock_photo"), bool):
            raise CheckpointError(
                f"meta towers needs an int sketch_frozen_blocks >= 0 and a bool lock_photo: {towers!r}"
            )


def _build_net(meta: dict[str, Any], gem_p: float = 3.0, pretrained: tuple[str, ...] = ()) -> torch.nn.Module:
    """The network ``meta`` describes: two-tower when it has ``towers``, else the shared trunk.

    ``pretrained`` loads ImageNet weights into those towers (only when creating a model: a
    checkpoint carries all of its weights).
    """
    towers = meta.get("towers")
    if towers is None:
        return SketchPhotoNet(
            meta["arch"],
            embed_dim=meta["embed_dim"],
            separate_blocks=meta["branch_sharing"]["separate_blocks"],
            gem_p=gem_p,
        )
    return TwoTowerNet(
        meta["arch"],
        towers["photo_arch"],
        embed_dim=meta["embed_dim"],
        gem_p=gem_p,
        pretrained=pretrained,
        sketch_frozen_blocks=towers["sketch_frozen_blocks"],
        lock_photo=towers["lock_photo"],
    )


def _calibration_images(encoder: Encoder, count: int = 16) -> tuple[list, list]:
    """Rasters of ``count`` procedural sketches and their photos (seed 0): deterministic, offline."""
    from retrieval.procedural import generate_photo, generate_sketch

    sketches = [encoder.render(generate_sketch(0, i, 0)) for i in range(count)]
    return sketches, [generate_photo(0, i, encoder.meta["raster_size"]) for i in range(count)]
