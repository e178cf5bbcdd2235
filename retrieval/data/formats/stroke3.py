"""stroke-3 / stroke-5 offset formats and sketch-rnn ``.npz`` files (read without blind unpickling).

- stroke-3: rows ``(dx, dy, p)``; ``p = 1`` when the pen lifts after the point. The first row is the
  offset of the first point from the origin, so absolute positions come back exactly.
- stroke-5: rows ``(dx, dy, p1, p2, p3)`` = pen down / pen up / end of sketch (sketch-rnn's
  ``to_big_strokes``): the rows after the drawing are ``(0, 0, 0, 0, 1)``.

sketch-rnn's ``.npz`` files hold object arrays (one int16 stroke-3 array per drawing), which numpy
can only load by unpickling; :func:`read_sketchrnn_npz` unpickles them with the numpy-only
unpickler instead of ``allow_pickle=True``. Neither format carries timing: t = 0.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from retrieval.data.formats.safe_pickle import safe_load
from retrieval.data.sketch import Sketch

SKETCHRNN_SPLITS = ("train", "valid", "test")
DEFAULT_CANVAS = 256.0


def sketch_to_stroke3(sketch: Sketch) -> np.ndarray:
    """``(N, 3)`` float64 ``dx, dy, p`` of a sketch (timing dropped)."""
    if sketch.num_strokes == 0:
        return np.zeros((0, 3))
    pts = sketch.points()
    out = np.zeros((len(pts), 3))
    out[:, :2] = np.diff(pts[:, :2], axis=0, prepend=np.zeros((1, 2)))
    out[sketch.stroke_ends() - 1, 2] = 1.0
    return out


def stroke3_to_sketch(data: np.ndarray, canvas: tuple[float, float] | None = None, meta: dict | None = None) -> Sketch:
    """Rebuild a sketch from stroke-3 rows.

    Args:
        data: ``(N, 3)`` ``dx, dy, p``; points after the last pen lift form a final stroke.
        canvas: ``(width, height)`` to keep absolute positions on; ``None`` fits the drawing into a
            256x256 canvas (sketch-rnn offsets have no canvas and may start anywhere).
        meta: stored on the sketch.
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != 3 or not np.isfinite(data).all():
        raise ValueError(f"stroke-3 data must be a finite (N, 3) array of dx, dy, p; got shape {data.shape}")
    xyt = np.column_stack([np.cumsum(data[:, :2], axis=0), np.zeros(len(data))])
    bounds = [0, *(np.flatnonzero(data[:, 2] > 0.5) + 1).tolist()]
    if bounds[-1] != len(data):
        bounds.append(len(data))
    strokes = tuple(xyt[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a)
    if canvas is not None:
        return Sketch(strokes, float(canvas[0]), float(canvas[1]), dict(meta or {}))
    sketch = Sketch(strokes, DEFAULT_CANVAS, DEFAULT_CANVAS, dict(meta or {}))
    return sketch.normalized(DEFAULT_CANVAS) if strokes else sketch


def stroke3_to_stroke5(data: np.ndarray, max_len: int | None = None) -> np.ndarray:
    """stroke-3 -> stroke-5, padded with end rows to ``max_len`` (default: one end row).

    Raises:
        ValueError: the drawing is longer than ``max_len``.
    """
    data = np.asarray(data, dtype=np.float64)
    length = len(data) + 1 if max_len is None else int(max_len)
    if len(data) > length:
        raise ValueError(f"drawing has {len(data)} points, more than max_len={length}; raise max_len or drop it")
    out = np.zeros((length, 5))
    out[: len(data), :2] = data[:, :2]
    out[: len(data), 3] = data[:, 2]
    out[: len(data), 2] = 1.0 - data[:, 2]
    out[len(data) :, 4] = 1.0
    return out


def stroke5_to_stroke3(data: np.ndarray) -> np.ndarray:
    """stroke-5 -> stroke-3, cut at the first end-of-sketch row (``p3 = 1``)."""
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != 5:
        raise ValueError(f"stroke-5 data must be an (N, 5) array of dx, dy, p1, p2, p3; got shape {data.shape}")
    ends = np.flatnonzero(data[:, 4] > 0.5)
    length = int(ends[0]) if len(ends) else len(data)
    return data[:length][:, [0, 1, 3]].copy()


def _read_member(zf: zipfile.ZipFile, name: str, source: Path) -> list[np.ndarray]:
    with zf.open(name) as fh:
        version = np.lib.format.read_magic(fh)
        # Version 3.0 differs from 2.0 only in allowing utf-8 in the header, which object arrays do not use.
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(fh)
        if dtype.hasobject:
            drawings = safe_load(fh, encoding="latin1")  # latin1: sketch-rnn's files date from Python 2
        else:
            fh.seek(0)
            drawings = np.lib.format.read_array(fh, allow_pickle=False)
    out = []
    for i, drawing in enumerate(drawings):
        arr = np.asarray(drawing)
        if arr.ndim != 2 or arr.shape[1] != 3 or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{source}:{name} drawing {i} must be an (n, 3) stroke-3 array, got {arr.shape}")
        out.append(arr)
    return out


def read_sketchrnn_npz(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Read a sketch-rnn ``.npz`` (``train`` / ``valid`` / ``test`` lists of stroke-3 arrays) safely.

    Raises:
        retrieval.data.formats.safe_pickle.UnsafePickleError: an array's pickle names anything but numpy.
        ValueError: not a zip of ``.npy`` members holding stroke-3 arrays.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(".npy")]
            return {name[: -len(".npy")]: _read_member(zf, name, path) for name in sorted(names)}
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path}: not an .npz (zip) file ({exc}); sketch-rnn data comes as <category>.npz") from exc


def iter_sketchrnn(
    path: str | Path, split: str = "train", canvas: tuple[float, float] | None = None
) -> Iterator[Sketch]:
    """Sketches of one split of a sketch-rnn ``.npz`` (see :func:`stroke3_to_sketch` for ``canvas``)."""
    splits = read_sketchrnn_npz(path)
    if split not in splits:
        raise KeyError(f"{path} has no split {split!r}; available: {sorted(splits)}")
    for i, drawing in enumerate(splits[split]):
        yield stroke3_to_sketch(drawing, canvas, meta={"format": "sketch-rnn", "split": split, "index": i})


def write_sketchrnn_npz(path: str | Path, splits: Mapping[str, Sequence[np.ndarray]], dtype: type = np.int16) -> Path:
    """Write stroke-3 drawings per split as sketch-rnn does (object arrays of ``dtype`` arrays).

    Returns:
        The path written (``.npz`` appended when missing).
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    arrays = {}
    for split, drawings in splits.items():
        arr = np.empty(len(drawings), dtype=object)
        for i, drawing in enumerate(drawings):
            arr[i] = np.asarray(drawing).astype(dtype)
        arrays[split] = arr
    np.savez_compressed(path, **arrays)
    return path
