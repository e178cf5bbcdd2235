"""QMUL FG-SBIR coordinate files (Chair-V2, Shoe-V2): the original pickle and a pickle-free ``.npz``.

Both map a key ``'/<split>/<photo_id>_<n>'`` to a float64 array of absolute points on a 256x256
canvas: ``(n, 3)`` ``x, y, pen`` or, in the ``.npz`` export, ``(n, 4)`` ``x, y, pen, t_ms``. ``pen``
is 1 on the **last point of each stroke**. The pickle is read with a numpy-only unpickler, never
``pickle.load``. QMUL has no timing, so its sketches get ``t = 0``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from retrieval.data.formats.safe_pickle import safe_load
from retrieval.data.sketch import Sketch

QMUL_CANVAS = 256.0
NPZ_SUFFIX = ".npz"


def split_key(key: str) -> tuple[str, str]:
    """``'/train/3922958_v1_Black_2'`` -> ``('train', '3922958_v1_Black')``.

    Raises:
        ValueError: the key is not ``/<split>/<photo_id>_<n>``.
    """
    parts = key.split("/", 2)
    photo_id, _, n = parts[-1].rpartition("_")
    if len(parts) != 3 or parts[0] != "" or not parts[1] or not photo_id or not n:
        raise ValueError(f"QMUL key {key!r} must look like '/<split>/<photo_id>_<n>', e.g. '/train/2342_v1_3'")
    return parts[1], photo_id


def _checked(key: object, value: object, source: Path) -> np.ndarray:
    if not isinstance(key, str):
        raise ValueError(f"{source}: keys must be strings like '/train/<photo_id>_<n>', got {type(key).__name__}")
    arr = np.asarray(value)
    if arr.ndim != 2 or arr.shape[1] not in (3, 4) or len(arr) == 0 or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{source}: {key!r} must be a non-empty numeric (n, 3) or (n, 4) array, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{source}: {key!r} holds NaN or infinite coordinates")
    return arr.astype(np.float64, copy=False)


def read_qmul_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """Read an original QMUL ``<Name>_Coordinate`` pickle safely; keys sorted.

    Raises:
        retrieval.data.formats.safe_pickle.UnsafePickleError: the file names anything but numpy arrays.
        ValueError: the content is not a dict of ``(n, 3)`` arrays.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        data = safe_load(fh, encoding="latin1")  # latin1: the release may come from Python 2 numpy
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict of key -> (n, 3) array, got {type(data).__name__}")
    return {key: _checked(key, data[key], path) for key in sorted(data)}


def read_qmul_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read the pickle-free ``<Name>_Coordinate.npz`` export (``allow_pickle=False``); keys sorted."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            # Some zip writers drop the leading '/' of member names: restore it.
            data = {(k if k.startswith("/") else "/" + k): npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a readable pickle-free .npz of (n, 3|4) arrays ({exc})") from exc
    return {key: _checked(key, data[key], path) for key in sorted(data)}


def write_qmul_npz(path: str | Path, arrays: Mapping[str, np.ndarray | Sketch]) -> Path:
    """Write QMUL-layout arrays (or sketches, stored as ``(n, 4)`` x, y, pen, t) to a pickle-free ``.npz``.

    Args:
        path: output file; ``.npz`` is appended when missing, as numpy does.
        arrays: key ``'/<split>/<photo_id>_<n>'`` -> ``(n, 3|4)`` array or :class:`Sketch`.

    Returns:
        The path written.
    """
    path = Path(path)
    if path.suffix != NPZ_SUFFIX:
        path = path.with_name(path.name + NPZ_SUFFIX)
    out = {}
    for key in sorted(arrays):
        split_key(key)  # fail early on keys the readers could not split
        value = arrays[key]
        out[key] = sketch_to_qmul_array(value) if isinstance(value, Sketch) else _checked(key, value, path)
    np.savez_compressed(path, **out)
    return path


def qmul_array_to_sketch(arr: np.ndarray, canvas: float = QMUL_CANVAS, meta: dict | None = None) -> Sketch:
    """Split an ``(n, 3|4)`` x, y, pen[, t] array into strokes (a stroke ends where pen == 1).

    Points after the last pen lift (a file that forgot the final flag) form the last stroke.
    """
    arr = np.asarray(arr, dtype=np.float64)
    ends = np.flatnonzero(arr[:, 2] > 0.5) + 1
    bounds = [0, *ends.tolist()]
    if bounds[-1] != len(arr):
        bounds.append(len(arr))
    t = arr[:, 3] if arr.shape[1] == 4 else np.zeros(len(arr))
    xyt = np.column_stack([arr[:, 0], arr[:, 1], t])
    strokes = tuple(xyt[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a)
    return Sketch(strokes, canvas, canvas, dict(meta or {}))


def sketch_to_qmul_array(sketch: Sketch, with_time: bool = True) -> np.ndarray:
    """The QMUL array of a sketch: ``(n, 4)`` x, y, pen, t (or ``(n, 3)`` without time)."""
    rows = []
    for stroke in sketch.strokes:
        pen = np.zeros(len(stroke))
        pen[-1] = 1.0
        cols = [stroke[:, 0], stroke[:, 1], pen] + ([stroke[:, 2]] if with_time else [])
        rows.append(np.column_stack(cols))
    return np.concatenate(rows) if rows else np.zeros((0, 4 if with_time else 3))


def read_qmul(path: str | Path) -> dict[str, Sketch]:
    """Read a QMUL pickle or ``.npz`` into sketches keyed like the file; ``meta`` has key, split, photo_id."""
    path = Path(path)
    arrays = read_qmul_npz(path) if path.suffix == NPZ_SUFFIX else read_qmul_pickle(path)
    out = {}
    for key, arr in arrays.items():
        split, photo_id = split_key(key)
        out[key] = qmul_array_to_sketch(arr, meta={"key": key, "split": split, "photo_id": photo_id})
    return out
