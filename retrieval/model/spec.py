"""What a new encoder is built from: :class:`ModelSpec`, the named presets, and ``model_spec``.

One typed value replaces the keyword lists that used to travel from a training config to the
encoder (and the presets that lived in the training config): ``create_encoder(preset, **overrides)``
(:mod:`retrieval.model.encoder`, like timm's ``create_model``) builds the network a spec describes,
and a checkpoint's ``model.json`` meta is derived from it (``checkpoint.new_meta``). A loaded
checkpoint gives its spec back with :meth:`ModelSpec.from_meta`, so every model on disk, old ones
included, reads as the same type.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from retrieval.model.network import ARCHS

DEFAULT_ARCH, DEFAULT_INPUT_SIZE, DEFAULT_EMBED_DIM = "mobilenet_v3_small", 128, 128
POLARITIES = ("ink_high", "paper_high")
TOWERS = ("sketch", "photo")


@dataclass(frozen=True)
class ModelSpec:
    """The architecture and input conventions of an encoder (its weights come from training or a file)."""

    arch: str = DEFAULT_ARCH
    """sketch backbone (the whole network unless two-tower), a name of ``retrieval.model.network.ARCHS``"""
    embed_dim: int = DEFAULT_EMBED_DIM
    """size of the shared embedding"""
    input_size: int = DEFAULT_INPUT_SIZE
    """side of the square sketch input (and photo input unless photo_input_size)"""
    raster_size: int | None = None
    """side sketches are rasterised at (None: input_size)"""
    line_width: int | None = None
    """ink width in raster pixels (None: 3 px on a 256 px canvas, scaled)"""
    separate_blocks: int = 0
    """leading backbone blocks kept apart per domain in the shared-trunk layout"""
    gem_p: float = 3.0
    """initial GeM pooling exponent (learnable)"""
    photo_arch: str = ""
    """photo tower's backbone: any tower option makes the two-tower layout ('' = arch)"""
    photo_input_size: int | None = None
    """side of the photo input (None: input_size)"""
    pretrained: tuple[str, ...] = ()
    """towers ("sketch", "photo") that start from the packaged ImageNet weights"""
    sketch_frozen_blocks: int = 0
    """leading sketch-tower blocks kept frozen"""
    lock_photo: bool = False
    """freeze the whole photo tower (LiT)"""
    sketch_polarity: str = "ink_high"
    """ink_high: ink = 1 on paper = 0; paper_high: black ink on white, as a pretrained network saw images"""

    def __post_init__(self) -> None:
        object.__setattr__(self, "pretrained", tuple(self.pretrained))  # a list from JSON or a CLI compares equal
        for name in ("arch", *(("photo_arch",) if self.photo_arch else ())):
            if getattr(self, name) not in ARCHS:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {sorted(ARCHS)}")
        if not set(self.pretrained) <= set(TOWERS):
            raise ValueError(f"pretrained names towers {TOWERS}, got {self.pretrained!r}")
        if self.sketch_polarity not in POLARITIES:
            raise ValueError(f"sketch_polarity must be one of {POLARITIES}, got {self.sketch_polarity!r}")
        if self.embed_dim < 1 or self.input_size < 1 or self.separate_blocks < 0 or self.sketch_frozen_blocks < 0:
            raise ValueError(f"sizes must be positive and block counts non-negative: {self}")

    @property
    def towers(self) -> dict[str, Any] | None:
        """``meta["towers"]`` of the two-tower layout, or None when the spec asks for the shared trunk."""
        if not (self.photo_arch or self.pretrained or self.lock_photo or self.sketch_frozen_blocks):
            return None
        return {
            "photo_arch": self.photo_arch or self.arch,
            "pretrained": sorted(self.pretrained),
            "sketch_frozen_blocks": int(self.sketch_frozen_blocks),
            "lock_photo": bool(self.lock_photo),
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> ModelSpec:
        """The spec a checkpoint's (checked) meta was built from; ``new_meta`` of it gives that meta back."""
        towers = meta.get("towers") or {}
        return cls(
            arch=meta["arch"],
            embed_dim=meta["embed_dim"],
            input_size=meta["input_size"],
            raster_size=meta["raster_size"],
            line_width=meta["line_width"],
            separate_blocks=meta["branch_sharing"]["separate_blocks"],
            gem_p=meta["pooling"]["p_init"],
            photo_arch=towers.get("photo_arch", ""),
            photo_input_size=meta.get("photo_input_size", meta["input_size"]),
            pretrained=tuple(towers.get("pretrained", ())),
            sketch_frozen_blocks=towers.get("sketch_frozen_blocks", 0),
            lock_photo=towers.get("lock_photo", False),
            sketch_polarity=meta["normalisation"].get("sketch_polarity", "ink_high"),
        )


# Named layouts, compared side by side in docs/results/chair-v2_ablation.md.
PRESETS: dict[str, ModelSpec] = {
    # mobilenet_v3_small from scratch, one shared trunk: the layout before ImageNet weights
    "scratch": ModelSpec(),
    # LiT: locked ImageNet efficientnet_lite0 photo tower (features cached once), sketch tower from scratch
    "lit-mobilenet": ModelSpec(
        photo_arch="efficientnet_lite0", pretrained=("photo",), lock_photo=True, photo_input_size=224
    ),
    # LiT with an ImageNet efficientnet_lite0 sketch tower too, its first blocks frozen, fed black on white
    "lit-lite0": ModelSpec(
        arch="efficientnet_lite0",
        photo_arch="efficientnet_lite0",
        pretrained=("photo", "sketch"),
        lock_photo=True,
        photo_input_size=224,
        sketch_frozen_blocks=3,
        sketch_polarity="paper_high",
    ),
}
SPEC_FIELDS = tuple(f.name for f in fields(ModelSpec))


def model_spec(preset: str | ModelSpec = "scratch", **overrides: Any) -> ModelSpec:
    """``preset`` (a name of :data:`PRESETS` or a spec) with ``overrides`` of its fields, checked."""
    if isinstance(preset, ModelSpec):
        base = preset
    elif preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise ValueError(f"unknown encoder preset {preset!r}; choose one of {sorted(PRESETS)}")
    unknown = sorted(set(overrides) - set(SPEC_FIELDS))
    if unknown:
        raise TypeError(f"not ModelSpec fields: {unknown}; the fields are {list(SPEC_FIELDS)}")
    return replace(base, **overrides)
