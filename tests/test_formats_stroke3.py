"""stroke-3 / stroke-5 conversions and sketch-rnn npz files read through the numpy-only unpickler."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from retrieval.data.formats import UnsafePickleError, read_qmul, stroke3
from retrieval.data.sketch import Sketch
from tests.sketch_compare import assert_same_sketch

SKETCH = Sketch((np.array([[10.0, 20, 0], [13, 24, 0], [15, 20, 0]]), np.array([[40.0, 40, 0]])), 64.0, 48.0)
STROKE3 = np.array([[10.0, 20, 0], [3, 4, 0], [2, -4, 1], [25, 20, 1]])


def test_sketch_to_stroke3_hand_computed():
    np.testing.assert_array_equal(stroke3.sketch_to_stroke3(SKETCH), STROKE3)
    assert stroke3.sketch_to_stroke3(Sketch(())).shape == (0, 3)


def test_stroke3_round_trip_keeps_absolute_positions():
    assert_same_sketch(stroke3.stroke3_to_sketch(STROKE3, canvas=(64, 48)), SKETCH)
    # Without a canvas the drawing is fitted into 256x256.
    fitted = stroke3.stroke3_to_sketch(STROKE3)
    assert (fitted.canvas_width, fitted.canvas_height) == (256.0, 256.0)
    x0, y0, x1, y1 = fitted.bbox()
    assert 0 <= x0 and x1 <= 256 and 0 <= y0 and y1 <= 256 and fitted.num_strokes == 2
    # Points after the last pen lift still make a stroke.
    assert stroke3.stroke3_to_sketch(STROKE3[:2], canvas=(64, 48)).num_strokes == 1
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        stroke3.stroke3_to_sketch(np.zeros((3, 5)))


def test_stroke5_layout_and_round_trip():
    big = stroke3.stroke3_to_stroke5(STROKE3, max_len=6)
    np.testing.assert_array_equal(
        big,
        [[10, 20, 1, 0, 0], [3, 4, 1, 0, 0], [2, -4, 0, 1, 0], [25, 20, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1]],
    )
    np.testing.assert_array_equal(stroke3.stroke5_to_stroke3(big), STROKE3)
    np.testing.assert_array_equal(stroke3.stroke5_to_stroke3(stroke3.stroke3_to_stroke5(STROKE3)), STROKE3)
    assert len(stroke3.stroke3_to_stroke5(STROKE3)) == 5
    with pytest.raises(ValueError, match="max_len"):
        stroke3.stroke3_to_stroke5(STROKE3, max_len=3)


def test_sketchrnn_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    splits = {
        name: [np.column_stack([rng.integers(-20, 20, (n, 2)), (rng.random(n) < 0.2)]) for n in (5, 9, 3)]
        for name in ("train", "valid", "test")
    }
    path = stroke3.write_sketchrnn_npz(tmp_path / "cat", splits)
    assert path.name == "cat.npz"
    with pytest.raises(ValueError, match="allow_pickle"):  # what numpy's safe default says about this file
        np.load(path)["train"]
    data = stroke3.read_sketchrnn_npz(path)
    assert sorted(data) == ["test", "train", "valid"]
    for name, drawings in splits.items():
        assert len(data[name]) == 3 and data[name][0].dtype == np.int16
        for got, want in zip(data[name], drawings):
            np.testing.assert_array_equal(got, want)
    sketches = list(stroke3.iter_sketchrnn(path, "valid", canvas=(256, 256)))
    expected = splits["valid"][1].astype(float)
    expected[-1, 2] = 1.0  # a sketch always ends with a pen lift, whatever the file said
    np.testing.assert_array_equal(stroke3.sketch_to_stroke3(sketches[1]), expected)
    with pytest.raises(KeyError, match="no split 'dev'"):
        next(stroke3.iter_sketchrnn(path, "dev"))


def test_sketchrnn_npz_plain_numeric_arrays(tmp_path):
    path = tmp_path / "padded.npz"
    np.savez(path, train=np.zeros((2, 4, 3), dtype=np.int16))
    assert [d.shape for d in stroke3.read_sketchrnn_npz(path)["train"]] == [(4, 3), (4, 3)]


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def test_malicious_sketchrnn_npz_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    member.write(pickle.dumps(np.array([_Exploit(marker)], dtype=object), protocol=3))
    path = tmp_path / "evil.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train.npy", member.getvalue())
    with pytest.raises(UnsafePickleError, match="only numpy arrays are allowed"):
        stroke3.read_sketchrnn_npz(path)
    assert not marker.exists()


def test_not_a_zip(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"nope")
    with pytest.raises(ValueError, match="not an .npz"):
        stroke3.read_sketchrnn_npz(tmp_path / "x.npz")


def test_real_chairv2_sketches_round_trip_through_stroke3_and_stroke5(shared_data):
    sketches = list(read_qmul(shared_data("chairv2-train", "ChairV2_Coordinate")).values())[:50]
    for sketch in sketches:
        s5 = stroke3.stroke3_to_stroke5(stroke3.sketch_to_stroke3(sketch), max_len=600)
        assert_same_sketch(
            stroke3.stroke3_to_sketch(stroke3.stroke5_to_stroke3(s5), canvas=(256, 256)), sketch, atol=1e-9
        )
