"""Image files and arrays: the one photo reader, the image suffixes, letterboxing and RGB coercion.

Every photo file the project decodes (dataset photos, gallery folders) goes through :func:`read_rgb`,
which accepts only the formats of ``PHOTO_FORMATS``, checks the pixel count in the header before
decoding, and downscales at load so that a batch of phone photos stays small in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from retrieval.types import RGBImage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # also the preference order when an id has several files
# Pillow decoders read_rgb may use, whatever a file's suffix says. Any other plugin is attack surface
# for nothing (EPS and PDF even run Ghostscript when it is installed). JPEG covers MPO phone photos.
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP")
DEFAULT_MAX_PIXELS = 50_000_000  # decompression-bomb guard: Chair-V2 photos are ~0.1 MP
# Longest side a photo keeps at load. Encoders see 128-224 px (at most 1024, the largest input size a
# checkpoint may declare), so nothing they see is lost, while a 48 MP phone photo (144 MB as RGB) shrinks
# to 0.8 MP: a batch of 32 holds ~100 MB instead of ~4.6 GB.
MAX_PHOTO_SIDE = 1024


def read_rgb(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = MAX_PHOTO_SIDE) -> RGBImage:
    """Read a PNG, JPEG or WebP image as ``(H, W, 3)`` uint8 RGB; transparency is composited onto white.

    The header size is checked against ``max_pixels`` before any pixel is decoded. An image larger
    than ``max_side`` on its longest side is shrunk to it, keeping its aspect ratio: a JPEG is
    decoded at 1/2, 1/4 or 1/8 scale where that still leaves ``max_side`` (``Image.draft``), then
    resampled (``Image.thumbnail``). ``max_side=None`` keeps full resolution.

    Raises:
        ValueError: another format, an unreadable file, or more than ``max_pixels`` pixels (the
            message names the file and what to do).
    """
    try:
        with Image.open(path, formats=PHOTO_FORMATS) as img:  # lazy: reads the header only
            width, height = img.size
            if width * height <= max_pixels:
                if max_side is not None:
                    img.draft(None, (max_side, max_side))  # JPEG only: both sides stay >= max_side
                img.load()
                if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
                    img = Image.alpha_composite(white, img.convert("RGBA"))
                rgb = img.convert("RGB")
                if max_side is not None:
                    rgb.thumbnail((max_side, max_side))  # no-op when already small enough
                return np.asarray(rgb, dtype=np.uint8).copy()
    except UnidentifiedImageError as exc:
        raise ValueError(
            f"cannot read photo {path}: not a valid {', '.join(PHOTO_FORMATS)} file (other formats are refused, "
            "whatever the suffix). Convert it to PNG or JPEG, or delete it."
        ) from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read photo {path}: {exc}. Replace or delete the broken file.") from exc
    raise ValueError(
        f"{path} is {width}x{height} = {width * height:,} pixels, over the {max_pixels:,} limit "
        "(decompression-bomb guard); downscale it or raise max_pixels"
    )


def scan_photo_folder(root: str | Path) -> tuple[dict[str, Path], list[str]]:
    """Image files under ``root`` (recursive) as ``{relative posix path: resolved path}``.

    Symlinks are followed only when they resolve inside ``root``; ones escaping it are refused
    (listed in the second return value) so a gallery can never read files it was not given.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"photo folder {root} does not exist or is not a folder")
    found: dict[str, Path] = {}
    refused: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            path = Path(dirpath) / name
            resolved = path.resolve()
            if not resolved.is_relative_to(root):
                refused.append(f"{path} (symlink leaving {root})")
                continue
            if resolved.is_file():
                found[path.relative_to(root).as_posix()] = resolved
    return found, refused


@dataclass
class PhotoFolder:
    """The photos of a folder for training, each decoded once and kept as a ``size`` square (:func:`fit_square`).

    ``files`` is every image file found (relative posix path -> file; the folder's content, readable or
    not), ``squares`` the ones :func:`read_rgb` decodes, ``skipped`` why each other file was left out
    (a symlink leaving the folder, a broken or oversized image).
    """

    files: dict[str, Path]
    squares: dict[str, RGBImage]
    skipped: list[str]

    @classmethod
    def read(cls, root: str | Path, size: int) -> PhotoFolder:
        files, skipped = scan_photo_folder(root)
        squares = {}
        for rel, path in files.items():
            try:
                squares[rel] = fit_square(read_rgb(path), size)
            except ValueError as exc:
                skipped.append(str(exc))
        return cls(files, squares, skipped)


def fit_square(image: np.ndarray, size: int, fill: int = 255) -> np.ndarray:
    """Letterbox an image into ``size x size`` keeping its aspect ratio, padding with ``fill``.

    Same rule as the sketch canvas (aspect kept, centred), so a photo and a sketch traced over it
    line up. White padding because catalogue photos sit on white.
    """
    h, w = image.shape[:2]
    if h == w == size:
        return image
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    if nh == nw == size:
        return resized
    out = np.full((size, size, *image.shape[2:]), fill, dtype=image.dtype)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = resized.reshape(nh, nw, *image.shape[2:])
    return out


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Gray ``(H, W)``, ``(H, W, 1)`` or RGBA to ``(H, W, 3)`` uint8 (alpha composited on white)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"photos must be uint8 RGB arrays, got dtype {image.dtype}; convert with .astype(np.uint8)")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        return (image[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"a photo must be (H, W, 3) uint8 RGB, got shape {image.shape}")
