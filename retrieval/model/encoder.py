"""Inference wrapper around :class:`~retrieval.model.network.SketchPhotoNet`.

Checkpoints (a folder of ``model.safetensors`` + ``model.json``) are written and read by
:mod:`retrieval.model.checkpoint`; :meth:`Encoder.save` and :meth:`Encoder.load` are the entry points.

Default architecture, chosen by measurement (bench/speed/bench_encoder.py -> bench/results/encoder.md,
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrieval.data.raster import render
from retrieval.data.sketch import Sketch
from retrieval.model.card import ModelCard
from retrieval.model.checkpoint import (
    CheckpointError,
    build_net,
    check_meta,
    new_meta,
    read_checkpoint,
    write_checkpoint,
)
from retrieval.model.network import SketchPhotoNet, photo_tensor, sketch_tensor
from retrieval.model.pooling import l2n
from retrieval.model.progress_head import HEAD_TYPE, STATE_PREFIX, ProgressHead, ink_share
from retrieval.model.spec import ModelSpec, model_spec
from retrieval.types import Embeddings

_BATCH = 64  # images per forward pass: bounds memory when embedding a whole photo folder


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
        # Optional progress-aware sketch head (retrieval/model/progress_head.py) replacing net.sketch_head.
        self.progress_head = progress_head.eval() if progress_head is not None else None
        self.channels_last = channels_last
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    # --- construction -------------------------------------------------------------------------------
    @property
    def spec(self) -> ModelSpec:
        """The :class:`ModelSpec` this encoder was built from (read back from its meta: old checkpoints too)."""
        return ModelSpec.from_meta(self.meta)

    @property
    def card(self) -> ModelCard:
        """The model card, typed: spec, the data split it trained on, provenance, the rest as written."""
        return ModelCard.from_meta(self.meta)

    @classmethod
    def load(cls, path: str | Path, channels_last: bool = False) -> Encoder:
        """Load a checkpoint folder (or its ``model.safetensors``/``model.json``, or a ``.pt`` file).

        Raises:
            CheckpointError: with a message saying what is wrong, for anything that is not a
                well-formed checkpoint of this project. Nothing is ever unpickled.
        """
        path = Path(path)
        meta, state = read_checkpoint(path)
        head_state = {k[len(STATE_PREFIX) :]: state.pop(k) for k in list(state) if k.startswith(STATE_PREFIX)}
        net = build_net(meta)
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

    def save(self, path: str | Path, card: ModelCard | dict[str, Any] | None = None) -> Path:
        """Write ``path/model.safetensors`` and ``path/model.json``; returns the folder.

        ``card`` replaces the card carried in ``meta`` when given: a :class:`ModelCard`, or a card's
        JSON object (read through ``ModelCard`` first, so a malformed one is refused before writing).
        Its details must be JSON-serialisable.
        """
        state = {k: v.detach().contiguous().cpu() for k, v in self.net.state_dict().items()}
        if self.progress_head is not None:
            state |= {
                STATE_PREFIX + k: v.detach().contiguous().cpu() for k, v in self.progress_head.state_dict().items()
            }
        meta = dict(self.meta)
        if card is not None:
            typed = card if isinstance(card, ModelCard) else ModelCard.from_json(self.spec, card)
            meta["card"] = typed.to_json()
        meta["pooling"] = {**meta["pooling"], "p": float(self.net.pool.p.item())}
        folder = Path(path)
        self.meta = write_checkpoint(folder, state, meta)
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
        # Toggle only a network in training mode: eval() and train() walk every module (~1 ms of a
        # 9 ms per-stroke forward with the shipped model), and serving networks are already in eval.
        was_training = self.net.training
        if was_training:
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
            if was_training:
                self.net.train()
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


def create_encoder(
    preset: str | ModelSpec = "scratch",
    *,
    seed: int | None = None,
    channels_last: bool = False,
    calibrate: bool = True,
    **overrides: Any,
) -> Encoder:
    """A new real model (for training, tests and benchmarks): ``preset`` with ``overrides`` of its
    :class:`ModelSpec` fields, random init unless the spec names ``pretrained`` towers.

    ``create_encoder()`` is the default layout; ``create_encoder("lit-lite0")`` a named preset
    (:data:`retrieval.model.spec.PRESETS`); ``create_encoder(input_size=64, embed_dim=32, seed=0)``
    a small one. ``calibrate`` fits the batch-norm statistics of a from-scratch model to a few
    procedural photos and sketches (:meth:`Encoder.calibrate_batchnorm`), so even the untrained
    model gives distinct embeddings; pretrained statistics are never overwritten.
    """
    spec = model_spec(preset, **overrides)
    if seed is not None:
        torch.manual_seed(seed)
    meta = new_meta(spec)
    check_meta({**meta, "feature_dim": 1})  # the network's feature size is known once it is built
    net = build_net(meta, gem_p=spec.gem_p, pretrained=spec.pretrained)
    meta["feature_dim"] = net.feature_dim
    if "towers" in meta:
        meta["towers"]["photo_feature_dim"] = net.photo_feature_dim
        meta["towers"]["imagenet_sha256"] = net.weights_sha256
    encoder = Encoder(net, meta, channels_last=channels_last)
    if calibrate and not spec.pretrained:
        encoder.calibrate_batchnorm(*_calibration_images(encoder))
    return encoder


def _calibration_images(encoder: Encoder, count: int = 16) -> tuple[list, list]:
    """Rasters of ``count`` procedural sketches and their photos (seed 0): deterministic, offline."""
    from retrieval.data.procedural import generate_photo, generate_sketch

    sketches = [encoder.render(generate_sketch(0, i, 0)) for i in range(count)]
    return sketches, [generate_photo(0, i, encoder.meta["raster_size"]) for i in range(count)]
