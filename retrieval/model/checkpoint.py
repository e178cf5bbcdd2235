"""The encoder checkpoint format: what ``model.json`` holds, how a folder is written and read back.

A checkpoint is a folder holding ``model.safetensors`` (weights only: loading never unpickles) and
``model.json`` (``meta``: everything needed to rebuild the network, plus a model ``card``: data
split, config, seed, validation metrics, git commit; typed as :class:`~retrieval.model.card.ModelCard`). A legacy ``.pt`` file is read with
``torch.load(weights_only=True)`` and must hold ``{"meta": {...}, "state_dict": {...}}``.

Every reading failure becomes a :class:`CheckpointError` whose message says how to fix it.
:class:`~retrieval.model.encoder.Encoder` is the only user: it turns ``meta`` + tensors into a model.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from retrieval.model.network import ARCHS, IMAGENET_MEAN, IMAGENET_STD, SketchPhotoNet
from retrieval.model.pretrained import PRETRAINED_MEAN, PRETRAINED_STD, sha256_of
from retrieval.model.spec import ModelSpec
from retrieval.model.two_tower import TwoTowerNet

FORMAT = "earlysketch-encoder"
FORMAT_VERSION = 1
WEIGHTS_FILE, META_FILE = "model.safetensors", "model.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, malformed, tampered with or not ours."""


def default_line_width(raster_size: int) -> int:
    """Ink width matching the 3 px QMUL/app convention on a 256 px canvas, scaled to ``raster_size``."""
    return max(1, round(3 * raster_size / 256))


# --- meta: the architecture a checkpoint describes ------------------------------------------------------
def new_meta(spec: ModelSpec) -> dict[str, Any]:
    """The meta of a model about to be built from ``spec`` (``feature_dim`` comes from the network, once built)."""
    photo_norm = (PRETRAINED_MEAN, PRETRAINED_STD) if "photo" in spec.pretrained else (IMAGENET_MEAN, IMAGENET_STD)
    sketch_polarity = spec.sketch_polarity
    sketch_norm = (0.5, 0.5) if sketch_polarity == "paper_high" else (0.0, 1.0)
    input_size, raster_size, separate_blocks, towers = (
        spec.input_size,
        spec.raster_size,
        spec.separate_blocks,
        spec.towers,
    )
    raster_size = raster_size or input_size
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": spec.arch,
        "input_size": int(input_size),
        "photo_input_size": int(spec.photo_input_size or input_size),
        "raster_size": int(raster_size),
        "line_width": int(spec.line_width or default_line_width(raster_size)),
        "embed_dim": int(spec.embed_dim),
        "normalisation": {
            "photo_mean": list(photo_norm[0]),
            "photo_std": list(photo_norm[1]),
            "sketch": "ink=1-gray/255 (paper_high: 1-ink), then (value-mean)/std",
            "sketch_polarity": sketch_polarity,
            "sketch_mean": sketch_norm[0],
            "sketch_std": sketch_norm[1],
        },
        "pooling": {"type": "gem", "p_init": float(spec.gem_p), "learnable": True},
        "branch_sharing": {
            "separate_blocks": int(separate_blocks),
            "shared": separate_blocks == 0 and towers is None,
        },
        "card": {},
    }
    if towers is not None:
        meta["towers"] = towers
    return meta


def build_net(meta: dict[str, Any], gem_p: float = 3.0, pretrained: tuple[str, ...] = ()) -> torch.nn.Module:
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


def check_meta(meta: dict[str, Any]) -> None:
    """Raise :class:`CheckpointError` unless ``meta`` describes a network this code can build."""
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
        _check_towers(towers)


def _check_towers(towers: Any) -> None:
    if not isinstance(towers, dict) or towers.get("photo_arch") not in ARCHS:
        raise CheckpointError(f"meta towers.photo_arch must be one of {sorted(ARCHS)}, got {towers!r}")
    frozen = towers.get("sketch_frozen_blocks")
    if not isinstance(frozen, int) or frozen < 0 or not isinstance(towers.get("lock_photo"), bool):
        raise CheckpointError(f"meta towers needs an int sketch_frozen_blocks >= 0 and a bool lock_photo: {towers!r}")


# --- files ------------------------------------------------------------------------------------------------
def write_checkpoint(folder: Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``state`` and ``meta`` (plus the weights' sha256) into ``folder``; returns the meta written.

    Both files are written to a temporary name and renamed: a crash never leaves half a file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(folder / WEIGHTS_FILE)
    meta = {**meta, "weights_sha256": sha256_of(folder / WEIGHTS_FILE)}
    text = json.dumps(meta, indent=2, sort_keys=True, default=_json_default)
    (folder / (META_FILE + ".tmp")).write_text(text)
    (folder / (META_FILE + ".tmp")).replace(folder / META_FILE)
    return meta


def read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(meta, state)`` of a checkpoint folder (or one of its two files, or a ``.pt`` file), meta checked.

    Raises:
        CheckpointError: with a message saying what is wrong, for anything that is not a
            well-formed checkpoint of this project. Nothing is ever unpickled.
    """
    if path.suffix in (".pt", ".pth"):
        meta, state = _read_pt(path)
    else:
        folder = path.parent if path.is_file() else path
        meta = _read_meta(folder / META_FILE)
        state = _read_safetensors(folder / WEIGHTS_FILE, meta.get("weights_sha256"))
    check_meta(meta)
    return meta, state


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
