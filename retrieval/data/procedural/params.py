"""Fine-grained chair/stool parameters: one frozen record per photo, drawn from ``rng([seed, index])``.

Continuous proportions are quantised (1 cm, 1 degree) so that "the same chair" is a well-defined
notion: two instances are duplicates exactly when their :class:`ChairParams` compare equal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

VERSION = 1  # bump whenever a change alters generated photos or sketches: it is baked into photo ids

SEAT_SHAPES = ("rect", "rounded", "trapezoid", "round")
LEG_STYLES = ("square", "round", "tapered", "pedestal")
STRETCHERS = ("none", "h", "box", "front")
BACK_SHAPES = ("rect", "rounded", "tapered")
BACK_FILLS = ("panel", "ladder", "spindle", "open")
ARM_STYLES = ("none", "straight", "curved")
MATERIALS = ("wood", "metal", "plastic", "fabric")

# Frame/seat colour palettes (RGB 0-1) per material; fabric also covers cushions.
PALETTES: dict[str, tuple[tuple[float, float, float], ...]] = {
    "wood": ((0.55, 0.36, 0.20), (0.72, 0.53, 0.33), (0.40, 0.25, 0.14), (0.82, 0.68, 0.48), (0.30, 0.20, 0.13)),
    "metal": ((0.62, 0.63, 0.66), (0.20, 0.20, 0.22), (0.80, 0.80, 0.78), (0.45, 0.47, 0.50)),
    "plastic": ((0.92, 0.92, 0.90), (0.12, 0.12, 0.13), (0.80, 0.20, 0.15), (0.20, 0.45, 0.70), (0.95, 0.75, 0.20)),
    "fabric": ((0.35, 0.38, 0.42), (0.70, 0.65, 0.58), (0.25, 0.35, 0.55), (0.60, 0.20, 0.22), (0.30, 0.50, 0.35)),
}


@dataclass(frozen=True)
class ChairParams:
    """Every attribute that makes one instance; lengths in metres, angles in degrees."""

    family: str  # "chair" or "stool"
    seat_shape: str
    seat_width: float
    seat_depth: float
    seat_height: float
    seat_thickness: float
    cushion: bool
    cushion_thickness: float
    leg_count: int  # 3 or 4 (pedestal: number of feet)
    leg_style: str
    leg_thickness: float
    leg_splay: float  # outward offset of a foot at the floor
    leg_inset: float  # distance of a leg from the seat edge
    stretchers: str
    stretcher_height: float  # fraction of seat height
    back_shape: str  # "none" for stools
    back_fill: str
    slat_count: int
    back_height: float
    back_tilt: float
    back_width: float  # fraction of seat width
    arms: str
    arm_height: float
    frame_material: str
    seat_material: str
    frame_color: int  # index into PALETTES[frame_material]
    seat_color: int
    cushion_color: int  # index into PALETTES["fabric"]

    def as_dict(self) -> dict:
        return asdict(self)


def _q(value: float, step: float = 0.01) -> float:
    return round(round(value / step) * step, 4)


def sample_params(seed: int, index: int) -> ChairParams:
    """The parameters of instance ``index``: ``np.random.default_rng([seed, index])``, O(1) per index."""
    rng = np.random.default_rng([seed, index])
    family = "stool" if rng.random() < 0.2 else "chair"
    stool = family == "stool"
    seat_shape = str(rng.choice(SEAT_SHAPES, p=(0.3, 0.3, 0.1, 0.3) if stool else (0.4, 0.35, 0.2, 0.05)))
    leg_style = str(rng.choice(LEG_STYLES, p=(0.3, 0.3, 0.3, 0.1)))
    frame_material = str(rng.choice(MATERIALS[:3], p=(0.55, 0.3, 0.15)))
    seat_material = frame_material if rng.random() < 0.6 else str(rng.choice(MATERIALS))
    back_fill = str(rng.choice(BACK_FILLS, p=(0.35, 0.25, 0.25, 0.15)))
    return ChairParams(
        family=family,
        seat_shape=seat_shape,
        seat_width=_q(rng.uniform(0.36, 0.56)),
        seat_depth=_q(rng.uniform(0.34, 0.52)),
        seat_height=_q(rng.uniform(0.50, 0.80) if stool else rng.uniform(0.40, 0.50)),
        seat_thickness=_q(rng.uniform(0.02, 0.09)),
        cushion=bool(rng.random() < (0.25 if stool else 0.35)),
        cushion_thickness=_q(rng.uniform(0.03, 0.07)),
        leg_count=int(rng.choice((3, 4, 5), p=(0.2, 0.6, 0.2)) if leg_style == "pedestal" or stool else 4),
        leg_style=leg_style,
        leg_thickness=_q(rng.uniform(0.018, 0.06), 0.002),
        leg_splay=_q(rng.uniform(0.0, 0.08)) if rng.random() < 0.6 else 0.0,
        leg_inset=_q(rng.uniform(0.0, 0.05)),
        stretchers=str(rng.choice(STRETCHERS, p=(0.4, 0.2, 0.25, 0.15))),
        stretcher_height=_q(rng.uniform(0.15, 0.45)),
        back_shape="none" if stool else str(rng.choice(BACK_SHAPES, p=(0.4, 0.35, 0.25))),
        back_fill="none" if stool else back_fill,
        slat_count=int(rng.integers(2, 7)),
        back_height=_q(rng.uniform(0.30, 0.60)),
        back_tilt=float(round(rng.uniform(0.0, 18.0))),
        back_width=_q(rng.uniform(0.75, 1.0)),
        arms="none" if stool or rng.random() < 0.65 else str(rng.choice(ARM_STYLES[1:])),
        arm_height=_q(rng.uniform(0.16, 0.27)),
        frame_material=frame_material,
        seat_material=seat_material,
        frame_color=int(rng.integers(len(PALETTES[frame_material]))),
        seat_color=int(rng.integers(len(PALETTES[seat_material]))),
        cushion_color=int(rng.integers(len(PALETTES["fabric"]))),
    )
