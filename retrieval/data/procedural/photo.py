"""Shaded, textured "product photos" of a :class:`~retrieval.data.procedural.scene.Scene`.

Flat-shaded faces (per-part colour and material, one directional light, a specular term for metal
and plastic), material textures (wood grain, fabric weave, brushed metal), a blurred cast shadow on
the floor and a varied background, so a photo is not simply its own line drawing.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from retrieval.data.procedural.params import PALETTES
from retrieval.data.procedural.scene import SHIFT, Scene
from retrieval.types import RGBImage

_TILE = 512  # noise tiles are made once and cropped at random offsets: cheap per photo, still deterministic
_MATERIAL_CODES = {"wood": 1, "metal": 2, "plastic": 3, "fabric": 4}
_SPECULAR = {"wood": (0.08, 8.0), "metal": (0.45, 24.0), "plastic": (0.30, 40.0), "fabric": (0.0, 1.0)}


@lru_cache(maxsize=1)
def _noise_tiles() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240531)

    def smooth(cells: int) -> np.ndarray:
        low = rng.standard_normal((cells, cells)).astype(np.float32)
        return cv2.resize(low, (_TILE, _TILE), interpolation=cv2.INTER_CUBIC)

    fine = rng.standard_normal((_TILE, _TILE)).astype(np.float32)
    brushed = cv2.resize(rng.standard_normal((_TILE, 16)).astype(np.float32), (_TILE, _TILE))
    weave = np.sin(np.arange(_TILE, dtype=np.float32) * 1.9)
    across = np.arange(_TILE, dtype=np.float32)[None, :]
    grain = np.sin(across / 3.0 + 4.0 * smooth(10)) * 0.7 + np.sin(across / 1.3 + 2.0 * smooth(20)) * 0.3
    return {
        "grain": grain,
        "smooth": smooth(12),
        "medium": smooth(48),
        "fine": cv2.GaussianBlur(fine, (3, 3), 0.7),
        "brushed": brushed,
        "weave": (weave[:, None] + weave[None, :]) * 0.5,
    }


def _crop(tile: np.ndarray, rng: np.random.Generator, size: int, transpose: bool = False) -> np.ndarray:
    y, x = rng.integers(0, _TILE - size + 1, size=2)
    out = tile[y : y + size, x : x + size]
    return out.T if transpose else out


def _texture(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Multiplicative texture (size, size) around 0 for one material kind."""
    tiles = _noise_tiles()
    if kind == "wood":  # grain runs along one image axis, chosen per photo
        return 0.07 * _crop(tiles["grain"], rng, size, transpose=rng.random() < 0.5) + 0.05 * _crop(
            tiles["medium"], rng, size
        )
    if kind == "metal":
        return 0.05 * _crop(tiles["brushed"], rng, size, transpose=rng.random() < 0.5) + 0.04 * _crop(
            tiles["smooth"], rng, size
        )
    if kind == "fabric":
        return (
            0.06 * _crop(tiles["fine"], rng, size)
            + 0.04 * _crop(tiles["weave"], rng, size)
            + 0.04 * _crop(tiles["medium"], rng, size)
        )
    return 0.02 * _crop(tiles["smooth"], rng, size)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    style = rng.random()
    if style < 0.5:  # studio white
        top = np.full(3, rng.uniform(0.93, 1.0))
        bottom = top * rng.uniform(0.9, 1.0)
    elif style < 0.8:  # light tint
        top = rng.uniform(0.78, 0.98, size=3)
        bottom = top * rng.uniform(0.8, 0.95)
    else:  # a room-like two-tone wall and floor
        top = rng.uniform(0.55, 0.9, size=3)
        bottom = rng.uniform(0.35, 0.75, size=3)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    if style >= 0.8:
        horizon = rng.uniform(0.45, 0.7)
        ramp = 1.0 / (1.0 + np.exp(-(ramp - horizon) * 60.0))
    bg = (1 - ramp) * top.astype(np.float32) + ramp * bottom.astype(np.float32)
    return np.broadcast_to(bg, (size, size, 3)).copy()


def _shadow(scene: Scene, light: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Soft cast shadow on the floor (size, size) in [0, 1]."""
    small = scene.size // 2
    mask = np.zeros((small, small), dtype=np.uint8)
    for part in scene.parts:
        for ring0, ring1 in part.rings:
            pts = np.concatenate([ring0, ring1])
            floor = pts - light[None, :] * (pts[:, 1:2] / light[1])
            xy = scene.project(floor) * 0.5
            hull = cv2.convexHull(np.round(xy * (1 << SHIFT)).astype(np.int32))
            cv2.fillConvexPoly(mask, hull, 255, cv2.LINE_AA, SHIFT)
    sigma = rng.uniform(0.015, 0.035) * small
    soft = cv2.GaussianBlur(mask, (0, 0), sigma).astype(np.float32) / 255.0
    return cv2.resize(soft, (scene.size, scene.size), interpolation=cv2.INTER_LINEAR)


def _albedos(scene: Scene, rng: np.random.Generator) -> tuple[list[np.ndarray], list[str]]:
    p = scene.params
    base = {
        "frame": (PALETTES[p.frame_material][p.frame_color], p.frame_material),
        "seat": (PALETTES[p.seat_material][p.seat_color], p.seat_material),
        "back": (PALETTES[p.seat_material][p.seat_color], p.seat_material),
        "cushion": (PALETTES["fabric"][p.cushion_color], "fabric"),
    }
    tint = {k: np.clip(np.asarray(c) * rng.uniform(0.9, 1.1, size=3), 0, 1) for k, (c, _) in base.items()}
    return [tint[part.material] for part in scene.parts], [base[part.material][1] for part in scene.parts]


def render_photo(scene: Scene, rng: np.random.Generator) -> RGBImage:
    """An RGB uint8 ``(size, size, 3)`` photo of ``scene``; appearance randomness comes from ``rng``."""
    size = scene.size
    light = np.array([rng.uniform(-0.8, 0.8), -1.0, rng.uniform(0.1, 0.9)])
    light /= np.linalg.norm(light)
    img = _background(rng, size)
    img *= (1.0 - rng.uniform(0.25, 0.5) * _shadow(scene, light, rng))[..., None]
    albedo, kinds = _albedos(scene, rng)
    to_eye = scene.camera.rotation().T @ np.array([0.0, 0.0, 1.0])
    half = to_eye - light
    half /= np.linalg.norm(half)
    diffuse = np.clip(scene.face_normal @ -light, 0, None)
    highlight = np.clip(scene.face_normal @ half, 0, None)
    ambient = rng.uniform(0.4, 0.55)
    spec = np.array([_SPECULAR[k] for k in kinds])[scene.face_part]  # (F, 2) strength, shininess
    colours = np.stack(albedo)[scene.face_part] * (ambient + (1 - ambient) * diffuse)[:, None]
    colours += (spec[:, 0] * highlight ** spec[:, 1])[:, None]
    colours = (np.clip(colours, 0, 1) * 255).round().tolist()
    canvas = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    for poly, colour in zip(scene.face_polys, colours):
        cv2.fillPoly(canvas, [poly], colour, cv2.LINE_AA, SHIFT)
    codes = np.zeros(len(scene.parts) + 1, dtype=np.uint8)
    codes[1:] = [_MATERIAL_CODES[k] for k in kinds]
    material_map = codes[scene.id_buffer]
    texture = np.zeros((size, size), dtype=np.float32)
    for kind in sorted(set(kinds)):  # sorted: a fixed order of rng draws
        np.copyto(texture, _texture(kind, rng, size), where=material_map == _MATERIAL_CODES[kind])
    texture += 1.0
    noise = _crop(_noise_tiles()["fine"], rng, size) * np.float32(rng.uniform(1.0, 3.0))  # sensor noise
    out = canvas * texture[..., None] + noise[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)
