"""Training augmentation: stroke-aware for sketches (on :class:`Sketch` objects), classic for photos.

Sketch augmentation works on the vector strokes, before rasterising, so it can do what pixel
augmentation cannot: drop whole strokes, move strokes independently, and cut the drawing at a
random point for PARTIAL-sketch training (so early strokes already rank well). Timestamps are kept.

All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from retrieval.data.images import as_rgb, fit_square
from retrieval.data.raster import render
from retrieval.data.sketch import Sketch
from retrieval.types import GrayImage, RGBImage


@dataclass(frozen=True)
class SketchAugment:
    """Ranges for sketch augmentation (probabilities and uniform ranges)."""

    drop_stroke_prob: float = 0.1  # each stroke dropped with this chance (never all, never the last one left)
    scale: tuple[float, float] = (0.85, 1.1)  # global scale about the canvas centre
    rotate_deg: float = 8.0  # global rotation, +- degrees
    shear: float = 0.1  # global horizontal shear, +-
    translate: float = 0.06  # global shift, +- share of the canvas side
    stroke_shift: float = 0.015  # independent shift of each stroke, +- share of the canvas side
    point_noise: float = 0.003  # per-point Gaussian jitter, share of the canvas side
    partial_prob: float = 0.5  # chance to cut the sketch at a random point fraction
    min_fraction: float = 0.2  # smallest kept fraction of points when cutting
    width: tuple[int, int] = (1, 3)  # line width at raster size, inclusive range


def drop_strokes(sketch: Sketch, prob: float, rng: np.random.Generator) -> Sketch:
    """Drop each stroke with probability ``prob``; at least one stroke always survives."""
    if sketch.num_strokes <= 1 or prob <= 0:
        return sketch
    keep = rng.random(sketch.num_strokes) >= prob
    if not keep.any():
        keep[rng.integers(sketch.num_strokes)] = True
    return Sketch(
        tuple(s for s, k in zip(sketch.strokes, keep) if k), sketch.canvas_width, sketch.canvas_height, sketch.meta
    )


def jitter_strokes(sketch: Sketch, aug: SketchAugment, rng: np.random.Generator) -> Sketch:
    """A random global affine about the canvas centre, plus a small shift per stroke and point noise."""
    w, h = sketch.canvas_width, sketch.canvas_height
    side = max(w, h)
    angle = np.deg2rad(rng.uniform(-aug.rotate_deg, aug.rotate_deg))
    scale = rng.uniform(*aug.scale)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = scale * rot @ np.array([[1.0, rng.uniform(-aug.shear, aug.shear)], [0.0, 1.0]])
    centre = np.array([w / 2.0, h / 2.0])
    shift = centre + rng.uniform(-aug.translate, aug.translate, 2) * side
    out = []
    for stroke in sketch.strokes:
        s = stroke.copy()
        xy = (stroke[:, :2] - centre) @ matrix.T + shift + rng.uniform(-aug.stroke_shift, aug.stroke_shift, 2) * side
        s[:, :2] = xy + rng.normal(0.0, aug.point_noise * side, xy.shape)
        out.append(s)
    return Sketch(tuple(out), w, h, sketch.meta)


def random_cut(sketch: Sketch, min_fraction: float, rng: np.random.Generator) -> Sketch:
    """The sketch as drawn up to a uniformly random point fraction in ``[min_fraction, 1]``."""
    cut = max(1, round(rng.uniform(min_fraction, 1.0) * sketch.num_points))
    return sketch.first_points(cut)


def flip_sketch(sketch: Sketch) -> Sketch:
    """Mirror left-right on its canvas (pair with :func:`flip_photo` to keep fine-grained matches)."""
    out = []
    for stroke in sketch.strokes:
        s = stroke.copy()
        s[:, 0] = sketch.canvas_width - s[:, 0]
        out.append(s)
    return Sketch(tuple(out), sketch.canvas_width, sketch.canvas_height, sketch.meta)


def augment_sketch(sketch: Sketch, aug: SketchAugment, rng: np.random.Generator, partial: bool | None = None) -> Sketch:
    """Drop strokes, jitter, and (with ``partial_prob``, or when ``partial`` is True) cut at a random point."""
    out = jitter_strokes(drop_strokes(sketch, aug.drop_stroke_prob, rng), aug, rng)
    if partial if partial is not None else rng.random() < aug.partial_prob:
        out = random_cut(out, aug.min_fraction, rng)
    return out


def render_augmented(
    sketch: Sketch, aug: SketchAugment, rng: np.random.Generator, size: int, partial: bool | None = None
) -> GrayImage:
    """Augment then rasterise with a random line width: ``(size, size)`` uint8."""
    width = int(rng.integers(aug.width[0], aug.width[1] + 1))
    return render(augment_sketch(sketch, aug, rng, partial), size=size, width=width)


@dataclass(frozen=True)
class PhotoAugment:
    """Ranges for photo augmentation."""

    crop_scale: tuple[float, float] = (0.75, 1.0)  # side of the random square crop, share of the photo
    brightness: float = 0.2  # multiply by 1 +- this
    contrast: float = 0.2  # blend with the mean grey, 1 +- this
    saturation: float = 0.2  # blend with the greyscale image, 1 +- this


def flip_photo(photo: RGBImage) -> RGBImage:
    return np.ascontiguousarray(photo[:, ::-1])


def augment_photo(photo: RGBImage, aug: PhotoAugment, rng: np.random.Generator, size: int) -> RGBImage:
    """Random square crop (letterboxed first), resize to ``size``, colour jitter: ``(size, size, 3)`` uint8."""
    square = fit_square(as_rgb(photo), max(photo.shape[:2]))
    side = square.shape[0]
    crop = max(8, round(side * rng.uniform(*aug.crop_scale)))
    top, left = rng.integers(0, side - crop + 1, 2)
    img = cv2.resize(square[top : top + crop, left : left + crop], (size, size), interpolation=cv2.INTER_AREA)
    x = img.astype(np.float32)
    x *= rng.uniform(1 - aug.brightness, 1 + aug.brightness)
    x = x.mean() + (x - x.mean()) * rng.uniform(1 - aug.contrast, 1 + aug.contrast)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(1 - aug.saturation, 1 + aug.saturation)
    return np.clip(x, 0, 255).round().astype(np.uint8)
