"""Google Quick, Draw! ndjson: streaming reader, writer and human-timing statistics.

Two flavours share one layout, one drawing a line (``word``, ``countrycode``, ``timestamp``,
``recognized``, ``key_id``, ``drawing``):

- *raw*: each stroke is ``[[x...], [y...], [t...]]`` with ``t`` in ms since the drawing's first
  point; coordinates are screen pixels of an unrecorded canvas, so the canvas is taken as the
  extent from the origin to the farthest point (``ceil(max) + 1``).
- *simplified*: each stroke is ``[[x...], [y...]]`` scaled to a 256x256 canvas, no timing (t = 0).

The flavour is detected per drawing from the stroke arity.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from retrieval.cli import POSITIONAL, parse_config
from retrieval.data.sketch import Sketch

SIMPLIFIED_CANVAS = 256.0
TIMING_PERCENTILES = (10, 50, 90)


def _open_text(path: str | Path, mode: str) -> IO[str]:
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def _stroke_from_quickdraw(stroke: list, where: str) -> np.ndarray:
    if not isinstance(stroke, list) or len(stroke) not in (2, 3):
        raise ValueError(f"{where}: a stroke must be [[x...], [y...]] or [[x...], [y...], [t...]]")
    lengths = {len(row) for row in stroke}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"{where}: x, y (and t) lists must be non-empty and of equal length, got {lengths}")
    arr = np.zeros((lengths.pop(), 3), dtype=np.float64)
    for col, row in enumerate(stroke):
        arr[:, col] = row
    return arr


def drawing_to_sketch(record: dict, where: str = "drawing") -> Sketch:
    """Convert one parsed ndjson record (a dict with ``drawing``) to a :class:`Sketch`.

    Args:
        record: the decoded JSON object of one line.
        where: a location used in error messages (file and line).

    Returns:
        The sketch; ``meta`` holds every field except ``drawing`` plus ``format``.
    """
    drawing = record.get("drawing")
    if not isinstance(drawing, list) or not drawing:
        raise ValueError(f"{where}: 'drawing' must be a non-empty list of strokes")
    strokes = tuple(_stroke_from_quickdraw(s, f"{where} stroke {i}") for i, s in enumerate(drawing))
    simplified = all(len(s) == 2 for s in drawing)
    meta = {k: v for k, v in record.items() if k != "drawing"}
    meta["format"] = "quickdraw-simplified" if simplified else "quickdraw-raw"
    if simplified:
        return Sketch(strokes, SIMPLIFIED_CANVAS, SIMPLIFIED_CANVAS, meta)
    pts = np.concatenate(strokes)
    width = float(math.ceil(max(pts[:, 0].max(), 0.0)) + 1)
    height = float(math.ceil(max(pts[:, 1].max(), 0.0)) + 1)
    return Sketch(strokes, width, height, meta)


def read_ndjson(path: str | Path) -> Iterator[tuple[dict, Sketch]]:
    """Stream ``(meta, sketch)`` pairs from a Quick, Draw! ``.ndjson`` (or ``.ndjson.gz``) file.

    Blank lines are skipped. A malformed line raises ``ValueError`` naming the file and line.
    """
    with _open_text(path, "r") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc}); is this a Quick, Draw! .ndjson file?") from exc
            if not isinstance(record, dict):
                raise ValueError(f"{where}: each line must be a JSON object with a 'drawing' field")
            sketch = drawing_to_sketch(record, where)
            yield sketch.meta, sketch


def _number(v: float) -> int | float:
    # Quick, Draw! stores integers; keep them integral so files round-trip byte-for-byte in spirit.
    return int(v) if float(v).is_integer() else float(v)


def sketch_to_drawing(sketch: Sketch, simplified: bool = False) -> list:
    """The ``drawing`` field for a sketch: raw (x, y, t) or simplified (x, y) strokes."""
    cols = 2 if simplified else 3
    return [[[_number(v) for v in stroke[:, c]] for c in range(cols)] for stroke in sketch.strokes]


def write_ndjson(path: str | Path, items: Iterable[tuple[dict, Sketch] | Sketch], simplified: bool = False) -> int:
    """Write drawings one per line; returns how many were written.

    Args:
        path: output file (``.gz`` compresses).
        items: sketches or ``(meta, sketch)`` pairs; meta fields (except ``format``) are written.
        simplified: write ``[[x...], [y...]]`` strokes without timing.
    """
    count = 0
    with _open_text(path, "w") as fh:
        for item in items:
            meta, sketch = (item.meta, item) if isinstance(item, Sketch) else item
            record = {k: v for k, v in meta.items() if k not in ("format", "drawing")}
            record["drawing"] = sketch_to_drawing(sketch, simplified)
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            count += 1
    return count


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    arr = np.asarray(values, dtype=np.float64)
    out: dict[str, float] = {"count": int(len(arr)), "mean": float(arr.mean())}
    for q in TIMING_PERCENTILES:
        out[f"p{q}"] = float(np.percentile(arr, q))
    return out


def timing_stats(sketches: Iterable[Sketch]) -> dict[str, dict[str, float]]:
    """Percentiles of human drawing timing, to calibrate synthetic sketches.

    Untimed sketches (all ``t == 0``, e.g. simplified or QMUL) count towards ``strokes_per_drawing``
    only.

    Returns:
        ``{"pen_up_gap_ms", "stroke_duration_ms", "drawing_duration_ms", "strokes_per_drawing",
        "points_per_stroke"}``, each ``{"count", "mean", "p10", "p50", "p90"}``. A pen-up gap is the
        next stroke's first t minus the previous stroke's last t.
    """
    gaps: list[float] = []
    durations: list[float] = []
    drawings: list[float] = []
    strokes_per: list[float] = []
    points_per: list[float] = []
    for sketch in sketches:
        strokes_per.append(sketch.num_strokes)
        points_per.extend(len(s) for s in sketch.strokes)
        if sketch.num_strokes == 0 or not any(s[:, 2].any() for s in sketch.strokes):
            continue
        durations.extend(float(s[-1, 2] - s[0, 2]) for s in sketch.strokes)
        gaps.extend(float(b[0, 2] - a[-1, 2]) for a, b in zip(sketch.strokes[:-1], sketch.strokes[1:]))
        drawings.append(float(sketch.strokes[-1][-1, 2] - sketch.strokes[0][0, 2]))
    return {
        "pen_up_gap_ms": _summary(gaps),
        "stroke_duration_ms": _summary(durations),
        "drawing_duration_ms": _summary(drawings),
        "strokes_per_drawing": _summary(strokes_per),
        "points_per_stroke": _summary(points_per),
    }


def iter_folder(folder: str | Path) -> Iterator[tuple[dict, Sketch]]:
    """Stream every drawing of every ``*.ndjson`` / ``*.ndjson.gz`` file in a folder, files sorted."""
    files = sorted(Path(folder).glob("*.ndjson")) + sorted(Path(folder).glob("*.ndjson.gz"))
    if not files:
        raise FileNotFoundError(f"no .ndjson files in {folder}; point at a folder of Quick, Draw! files")
    for file in files:
        yield from read_ndjson(file)


@dataclass
class TimingConfig:
    """Print the stroke timing statistics of a Quick, Draw! file or folder as JSON."""

    path: Path | None = field(default=None, metadata=POSITIONAL)
    """an .ndjson file or a folder of them"""


def sample_folder(folder: str | Path, limit: int, seed: int) -> list[Sketch]:
    """Up to ``limit`` Quick, Draw! drawings (seeded sample), each fitted to a 256 canvas."""
    if not folder or not Path(folder).is_dir():
        return []
    drawings = [sketch.normalized(256.0) for _, sketch in iter_folder(folder) if sketch.num_points > 1]
    if len(drawings) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(drawings), size=limit, replace=False))
        drawings = [drawings[i] for i in keep]
    return drawings


def main(argv: list[str] | None = None) -> None:
    """Print :func:`timing_stats` of a Quick, Draw! file or folder as JSON."""
    args = parse_config(TimingConfig, argv)
    items = iter_folder(args.path) if args.path.is_dir() else read_ndjson(args.path)
    print(json.dumps(timing_stats(sketch for _, sketch in items), indent=2))


if __name__ == "__main__":
    main()
