"""Photo -> randomised edge map that looks like a sketch raster (white paper, black ink).

Sketch-free pre-training (EdgeMAC / rBTE style) pairs each photo with edge maps of itself, drawn
differently every time so the sketch branch learns shape rather than one edge detector's
artefacts: a random Gaussian smoothing scale and Canny thresholds (as quantiles of the gradient,
so they adapt to the photo's contrast), optional thinning to one-pixel skeletons, random dropout of
whole edge fragments (people leave out details), and a random line width by dilation. The map is
computed at ``work_size`` and area-resampled to ``size``, which anti-aliases it like
:func:`retrieval.data.raster.render` does for strokes.

Everything random comes from the ``numpy.random.Generator`` passed in, so a seed gives one map.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from skimage.feature import canny
from skimage.measure import label
from skimage.morphology import thin

from retrieval.data.images import as_rgb, fit_square
from retrieval.types import GrayImage, RGBImage


@dataclass(frozen=True)
class EdgeParams:
    """Ranges the randomised edge maps are drawn from (uniform unless stated)."""

    sigma: tuple[float, float] = (1.0, 3.0)  # Gaussian smoothing of Canny, in work_size pixels
    high_quantile: tuple[float, float] = (0.85, 0.95)  # Canny high threshold as a gradient quantile
    low_ratio: tuple[float, float] = (0.4, 0.8)  # low threshold = high quantile x this
    thin_prob: float = 0.5  # chance to thin edges to one-pixel skeletons
    fragment_dropout: tuple[float, float] = (0.0, 0.3)  # share of connected edge fragments removed
    width: tuple[int, int] = (2, 6)  # ink width at work_size, inclusive (dilation); training sketches: 2-6 px on 256
    min_fragment: int = 8  # fragments with fewer pixels are noise: always removed


def edge_map(
    photo: RGBImage, rng: np.random.Generator, size: int = 128, work_size: int = 256, params: EdgeParams = EdgeParams()
) -> GrayImage:
    """A randomised edge map of ``photo`` as a ``(size, size)`` uint8 sketch-like raster.

    Args:
        photo: RGB (or gray/RGBA) uint8 photo of any size; letterboxed like the encoder does.
        rng: source of all randomness (same generator state -> same map).
        size: output side in pixels (the encoder's raster size).
        work_size: side at which edges are detected; line widths are in these pixels.
        params: the ranges the random choices are drawn from.
    """
    edges = edge_pixels(photo, rng, work_size, params)
    width = int(rng.integers(params.width[0], params.width[1] + 1))
    ink = edges.astype(np.uint8) * 255
    if width > 1:
        ink = cv2.dilate(ink, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width)))
    paper = 255 - ink
    if size != work_size:
        paper = cv2.resize(paper, (size, size), interpolation=cv2.INTER_AREA)
    return paper


def edge_pixels(
    photo: RGBImage, rng: np.random.Generator, work_size: int = 256, params: EdgeParams = EdgeParams()
) -> np.ndarray:
    """The randomised edges of ``photo`` before inking: a ``(work_size, work_size)`` bool mask.

    Random smoothing and thresholds, optional thinning, fragment dropout (see :class:`EdgeParams`);
    :func:`edge_map` inks it, ``retrieval.data.pseudo_sketch`` traces it into strokes.
    """
    rgb = as_rgb(photo)
    gray = cv2.cvtColor(fit_square(rgb, work_size), cv2.COLOR_RGB2GRAY).astype(np.float64) / 255.0
    # Only the photo itself, not the letterbox padding: a grey background next to white padding
    # would otherwise draw a frame line no person would sketch.
    inside = fit_square(np.ones(rgb.shape[:2], np.uint8), work_size, fill=0) > 0
    high_q = rng.uniform(*params.high_quantile)
    edges = canny(
        gray,
        sigma=rng.uniform(*params.sigma),
        low_threshold=high_q * rng.uniform(*params.low_ratio),
        high_threshold=high_q,
        mask=inside,
        use_quantiles=True,
    )
    if rng.random() < params.thin_prob:
        edges = thin(edges)
    return _drop_fragments(edges, rng.uniform(*params.fragment_dropout), params.min_fragment, rng)


def _drop_fragments(edges: np.ndarray, rate: float, min_pixels: int, rng: np.random.Generator) -> np.ndarray:
    """Remove a random ``rate`` share of 8-connected edge fragments and all tiny ones, keeping the longest."""
    labels, count = label(edges, connectivity=2, return_num=True)
    if count == 0:
        return edges
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = (rng.random(count + 1) >= rate) & (sizes >= min_pixels)
    keep[np.argmax(sizes[1:]) + 1] = True  # the longest fragment always stays: never a blank "sketch"
    keep[0] = False  # background
    return keep[labels]


def edge_maps(
    photo: RGBImage,
    rng: np.random.Generator,
    count: int,
    size: int = 128,
    work_size: int = 256,
    params: EdgeParams = EdgeParams(),
) -> np.ndarray:
    """``count`` independent randomised edge maps of one photo: ``(count, size, size)`` uint8."""
    return np.stack([edge_map(photo, rng, size, work_size, params) for _ in range(count)])
