"""Contact sheet of the procedural dataset: photos, two drawers' sketches at 25/50/100 %, fine-grained pairs.

.venv/bin/python -m retrieval.data.procedural.preview docs/contact_sheet.png
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from retrieval.cli import POSITIONAL, parse_config
from retrieval.data.procedural.dataset import generate_photo, generate_sketch
from retrieval.data.procedural.params import VERSION, sample_params
from retrieval.data.raster import render

FRACTIONS = (0.25, 0.5, 1.0)
# Attributes that must agree for two instances to count as a "differs only in details" pair.
_COARSE = (
    "family",
    "seat_shape",
    "leg_style",
    "stretchers",
    "back_shape",
    "back_fill",
    "arms",
    "cushion",
    "frame_material",
    "seat_material",
    "frame_color",
    "seat_color",
)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.putText(out, text, (3, out.shape[0] - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (30, 90, 200), 1, cv2.LINE_AA)
    return out


def _sketch_tiles(seed: int, index: int, drawer: int, tile: int) -> list[np.ndarray]:
    sketch = generate_sketch(seed, index, drawer)
    tiles = []
    for p in FRACTIONS:
        gray = render(sketch.first_fraction(p), size=tile, width=2)
        text = f"drawer {drawer}: {int(p * 100)}%" + (f" {sketch.num_strokes} strokes" if p == 1.0 else "")
        tiles.append(_label(cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB), text))
    return tiles


def fine_grained_pairs(seed: int, count: int, search: int = 4000) -> list[tuple[int, int]]:
    """Index pairs sharing every coarse attribute (and colours): they differ only in details."""
    groups: dict[tuple, int] = {}
    pairs = []
    for i in range(search):
        p = sample_params(seed, i)
        key = tuple(getattr(p, name) for name in _COARSE)
        if key in groups and p.family == "chair":
            pairs.append((groups.pop(key), i))
            if len(pairs) == count:
                break
        else:
            groups[key] = i
    return pairs


def contact_sheet(path: str | Path, seed: int = 0, rows: int = 8, tile: int = 128) -> Path:
    """Write the sheet: one row per photo (photo + 2 drawers x 3 partial sketches) + fine-grained pairs."""
    lines = []
    for index in range(rows):
        photo = _label(cv2.resize(generate_photo(seed, index), (tile, tile), interpolation=cv2.INTER_AREA), f"#{index}")
        lines.append(np.hstack([photo, *_sketch_tiles(seed, index, 0, tile), *_sketch_tiles(seed, index, 1, tile)]))
    pair_tiles = []
    for a, b in fine_grained_pairs(seed, 3):
        pa = cv2.resize(generate_photo(seed, a), (tile, tile), interpolation=cv2.INTER_AREA)
        pb = cv2.resize(generate_photo(seed, b), (tile, tile), interpolation=cv2.INTER_AREA)
        pair_tiles += [_label(pa, f"#{a}"), _label(pb, f"#{b}")]
    width = lines[0].shape[1]
    pairs_row = np.full((tile, width, 3), 255, np.uint8)
    strip = np.hstack(pair_tiles)[:, :width]
    pairs_row[:, : strip.shape[1]] = strip
    header = np.full((22, width, 3), 255, np.uint8)
    cv2.putText(
        header,
        f"procedural v{VERSION} seed {seed}: photo | drawer 0 at 25/50/100% | drawer 1 at 25/50/100%",
        (4, 15),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.45,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    footer = np.full((22, width, 3), 255, np.uint8)
    cv2.putText(
        footer,
        "fine-grained pairs (same attributes and colours, different details):",
        (4, 15),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.45,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    sheet = np.vstack([header, *lines, footer, pairs_row])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), sheet[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path


@dataclass
class PreviewConfig:
    """Draw the procedural dataset's contact sheet."""

    out: Path = field(default=Path("docs/contact_sheet.png"), metadata=POSITIONAL)
    """where the PNG goes"""
    seed: int = 0
    """dataset seed"""


if __name__ == "__main__":
    args = parse_config(PreviewConfig, description=__doc__)
    print(contact_sheet(args.out, seed=args.seed))
