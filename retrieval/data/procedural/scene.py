"""One instance seen by one camera: projected faces in painter order plus a part-id buffer.

The photo renderer shades these faces; the sketch generator draws the parts' outlines and uses the
id buffer to drop the lines a nearer part hides, so both come from exactly the same geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from retrieval.data.procedural.geometry import Camera, Part, build_chair, cross3
from retrieval.data.procedural.params import ChairParams, sample_params

SHIFT = 4  # sub-pixel bits for cv2 polygon filling
_ONE = 1 << SHIFT


@dataclass
class Scene:
    """Projected geometry of one photo. Faces are sorted far to near (painter order)."""

    params: ChairParams
    camera: Camera
    parts: list[Part]
    size: int
    scale: float
    offset: np.ndarray
    face_polys: list[np.ndarray]  # (k, 2) int32 pixel coordinates in cv2 fixed point (SHIFT bits)
    face_part: np.ndarray  # (F,) part index
    face_normal: np.ndarray  # (F, 3) world-space outward unit normals
    id_buffer: np.ndarray  # (size, size) uint8: part index + 1 of the visible surface, 0 = background

    def project(self, pts: np.ndarray) -> np.ndarray:
        """World points ``(n, 3)`` to float pixel coordinates ``(n, 2)``."""
        return self.camera.project(pts, self.scale, self.offset)


def _outward_normals(faces: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Unit normals of convex polygons ``(F, k, 3)`` (Newell's method) pointing away from ``centres``."""
    normals = cross3(faces, np.roll(faces, -1, axis=1)).sum(axis=1)
    outward = faces.mean(axis=1) - centres
    normals[np.einsum("ij,ij->i", normals, outward) < 0] *= -1
    return normals / (np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12)


def _faces_by_ring_size(parts: list[Part]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """All loft faces grouped by vertex count: ``(faces (F, k, 3), loft centres (F, 3), part index (F,))``."""
    by_n: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for pi, part in enumerate(parts):
        for ring0, ring1 in part.rings:
            by_n.setdefault(len(ring0), []).append((pi, ring0, ring1))
    groups = []
    for n, items in by_n.items():
        idx = np.array([pi for pi, _, _ in items])
        r0 = np.stack([a for _, a, _ in items])
        r1 = np.stack([b for _, _, b in items])
        centre = (r0.mean(axis=1) + r1.mean(axis=1)) / 2
        quads = np.stack([r0, np.roll(r0, -1, axis=1), np.roll(r1, -1, axis=1), r1], axis=2).reshape(-1, 4, 3)
        groups.append((quads, np.repeat(centre, n, axis=0), np.repeat(idx, n)))
        groups.append((np.concatenate([r0, r1]), np.concatenate([centre, centre]), np.concatenate([idx, idx])))
    return groups


def build_scene(params: ChairParams, camera: Camera, size: int = 256) -> Scene:
    """Project ``params``' geometry through ``camera`` onto a ``size x size`` image."""
    parts = build_chair(params)
    rot = camera.rotation()
    all_vertices = np.concatenate([np.concatenate(loft) for part in parts for loft in part.rings])
    scale, offset = camera.fit(all_vertices, size)
    polys: list[np.ndarray] = []
    part_of, normals, depths = [], [], []
    for faces, centres, idx in _faces_by_ring_size(parts):
        nrm = _outward_normals(faces, centres)
        facing = (nrm @ rot.T)[:, 2] > 1e-3  # towards the viewer (view z grows towards the camera)
        if not facing.any():
            continue
        faces = faces[facing]
        proj = camera.project(faces.reshape(-1, 3), scale, offset).reshape(len(faces), -1, 2)
        polys.extend(np.round(proj * _ONE).astype(np.int32))
        part_of.append(idx[facing])
        normals.append(nrm[facing])
        depths.append(faces.mean(axis=1) @ rot[2])
    order = np.argsort(np.concatenate(depths), kind="stable")
    polys = [polys[i] for i in order]
    face_part = np.concatenate(part_of)[order]
    face_normal = np.concatenate(normals)[order]
    id_buffer = np.zeros((size, size), dtype=np.uint8)
    for poly, pi in zip(polys, face_part):
        cv2.fillPoly(id_buffer, [poly], int(pi) + 1, cv2.LINE_8, SHIFT)
    return Scene(params, camera, parts, size, scale, offset, polys, face_part, face_normal, id_buffer)


def scene_for(seed: int, index: int, size: int = 256) -> Scene:
    """Instance ``index`` of generator ``seed`` seen by its photo's camera (``rng([seed, index, 0])``)."""
    params = sample_params(seed, index)
    camera = Camera.sample(np.random.default_rng([seed, index, 0]))
    return build_scene(params, camera, size)
