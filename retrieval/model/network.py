"""The two-branch sketch/photo network and the uint8 -> tensor preprocessing both branches use.

Layout (one torchvision CNN, ``weights=None``: nothing is ever downloaded)::

    sketch raster -> sketch_stem -+                          +-> sketch_head Linear(F, D) -> L2
                                  +-> trunk -> GeM (size F) -+
    photo         -> photo_stem  -+                          +-> photo_head  Linear(F, D) -> L2

``separate_blocks`` leading backbone blocks are domain specific (the stems); the rest (the trunk)
is shared. ``separate_blocks=0`` shares the whole backbone. The heads are cirtorch-style learned
whitening (a Linear with bias) followed by L2 normalisation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torchvision.models as tvm
from torch import nn

from retrieval.data.images import as_rgb, fit_square
from retrieval.model.pooling import GeM, l2n
from retrieval.model.pretrained import load_imagenet_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _features_blocks(model: nn.Module) -> list[nn.Module]:
    return list(model.features)


def _resnet_blocks(model: nn.Module) -> list[nn.Module]:
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    return [stem, model.layer1, model.layer2, model.layer3, model.layer4]


def _shufflenet_blocks(model: nn.Module) -> list[nn.Module]:
    return [nn.Sequential(model.conv1, model.maxpool), model.stage2, model.stage3, model.stage4, model.conv5]


def _regnet_blocks(model: nn.Module) -> list[nn.Module]:
    return [model.stem, *model.trunk_output]


def _timm_efficientnet_blocks(model: nn.Module) -> list[nn.Module]:
    return [nn.Sequential(model.conv_stem, model.bn1), *model.blocks, nn.Sequential(model.conv_head, model.bn2)]


def _timm_efficientnet_lite0(weights: None = None) -> nn.Module:
    import timm  # only this arch needs it; pretrained=False always: weights come from retrieval.model.pretrained

    return timm.create_model("efficientnet_lite0", pretrained=False)


# arch name -> (constructor, how to split it into a list of sequential blocks). A fixed table, so a
# checkpoint's "arch" string can never reach an arbitrary attribute of torchvision.
ARCHS: dict[str, tuple[Callable[..., nn.Module], Callable[[nn.Module], list[nn.Module]]]] = {
    "mobilenet_v3_small": (tvm.mobilenet_v3_small, _features_blocks),
    "mobilenet_v3_large": (tvm.mobilenet_v3_large, _features_blocks),
    "efficientnet_b0": (tvm.efficientnet_b0, _features_blocks),
    "resnet18": (tvm.resnet18, _resnet_blocks),
    "resnet34": (tvm.resnet34, _resnet_blocks),
    "shufflenet_v2_x1_0": (tvm.shufflenet_v2_x1_0, _shufflenet_blocks),
    "regnet_x_400mf": (tvm.regnet_x_400mf, _regnet_blocks),
    "regnet_y_400mf": (tvm.regnet_y_400mf, _regnet_blocks),
    "efficientnet_lite0": (_timm_efficientnet_lite0, _timm_efficientnet_blocks),
}


def backbone_blocks(arch: str, pretrained: bool = False) -> tuple[list[nn.Module], str | None]:
    """Backbone of ``arch`` as a list of blocks (no classifier), and the sha256 of its weights.

    Random init unless ``pretrained``: then the ImageNet weights shipped in a pip package
    (:mod:`retrieval.model.pretrained`) are loaded, checked against their pinned sha256.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    build, split = ARCHS[arch]
    model = build(weights=None)
    digest = load_imagenet_weights(model, arch) if pretrained else None
    return split(model), digest


class SketchPhotoNet(nn.Module):
    """Trainable two-branch network; see the module docstring for the layout."""

    def __init__(self, arch: str, embed_dim: int = 128, separate_blocks: int = 0, gem_p: float = 3.0) -> None:
        super().__init__()
        blocks, _ = backbone_blocks(arch)
        if not 0 <= separate_blocks < len(blocks):
            raise ValueError(f"separate_blocks must be in [0, {len(blocks) - 1}] for {arch}, got {separate_blocks}")
        self.sketch_stem = nn.Sequential(*blocks[:separate_blocks])
        self.photo_stem = copy.deepcopy(self.sketch_stem)
        self.trunk = nn.Sequential(*blocks[separate_blocks:])
        self.pool = GeM(gem_p)
        with torch.no_grad():  # dummy forward to size the heads (works for any backbone)
            self.feature_dim = int(self.trunk(self.sketch_stem(torch.zeros(1, 3, 64, 64))).shape[1])
        self.sketch_head = nn.Linear(self.feature_dim, embed_dim)
        self.photo_head = nn.Linear(self.feature_dim, embed_dim)

    def sketch_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S) -> (B, F)`` GeM-pooled backbone feature of sketches."""
        return self.pool(self.trunk(self.sketch_stem(x)))

    def photo_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S) -> (B, F)`` GeM-pooled backbone feature of photos."""
        return self.pool(self.trunk(self.photo_stem(x)))

    def embed_sketches(self, x: torch.Tensor) -> torch.Tensor:
        return l2n(self.sketch_head(self.sketch_features(x)))

    def embed_photos(self, x: torch.Tensor) -> torch.Tensor:
        return l2n(self.photo_head(self.photo_features(x)))

    def embed_pair(self, sketches: torch.Tensor, photos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed both domains with ONE trunk pass (training); see :meth:`features_pair`."""
        sketch_feats, photo_feats = self.features_pair(sketches, photos)
        return l2n(self.sketch_head(sketch_feats)), l2n(self.photo_head(photo_feats))

    def features_pair(self, sketches: torch.Tensor, photos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GeM features of both domains from ONE trunk pass (training).

        Batch-norm in the shared trunk then sees mixed batches in training exactly as its running
        statistics will describe them at test time; alternating single-domain batches would leave
        the running statistics biased to whichever domain came last.
        """
        n = len(sketches)
        feats = self.pool(self.trunk(torch.cat([self.sketch_stem(sketches), self.photo_stem(photos)])))
        return feats[:n], feats[n:]


def photo_tensor(
    images: Sequence[np.ndarray] | np.ndarray,
    size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """RGB uint8 photos of any size -> ``(B, 3, size, size)`` float32, ImageNet-normalised."""
    batch = np.stack([fit_square(as_rgb(img), size) for img in images])  # size: B, S, S, 3
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def sketch_tensor(
    images: Sequence[np.ndarray] | np.ndarray,
    size: int,
    mean: float = 0.0,
    std: float = 1.0,
    paper_high: bool = False,
) -> torch.Tensor:
    """Sketch rasters ``(B, H, W)`` uint8 (white paper, black ink) -> ``(B, 3, size, size)`` float32.

    Ink is mapped to 1 and paper to 0 so zero padding in the convolutions looks like paper, unless
    ``paper_high``: then paper is 1 and ink 0, a drawing as an ImageNet-pretrained network saw
    images (black lines on white), before ``(value - mean) / std``.
    """
    arr = np.asarray(images) if not isinstance(images, np.ndarray) else images
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise ValueError(
            f"sketch rasters must be (B, H, W) uint8 from retrieval.data.raster.render, got {arr.shape} {arr.dtype}"
        )
    if arr.shape[1] != size or arr.shape[2] != size:
        arr = np.stack([fit_square(img, size) for img in arr])
    ink = 1.0 - torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0)
    value = 1.0 - ink if paper_high else ink
    return ((value - mean) / std).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
