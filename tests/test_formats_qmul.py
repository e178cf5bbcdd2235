"""QMUL FG-SBIR coordinate files: restricted unpickling, pickle-free npz, key splitting, round trips."""

from __future__ import annotations

import builtins
import os
import pickle

import numpy as np
import pytest

from retrieval.data.formats import (
    UnsafePickleError,
    qmul_array_to_sketch,
    read_qmul,
    read_qmul_npz,
    read_qmul_pickle,
    safe_loads,
    sketch_to_qmul_array,
    split_key,
    write_qmul_npz,
)
from retrieval.data.sketch import Sketch
from tests.sketch_compare import assert_same_sketch

# Two strokes (3 + 2 points); pen = 1 on the last point of each stroke.
ARRAY = np.array([[30.0, 40, 0], [50, 60, 0], [70, 80, 1], [100, 110, 0], [120, 130, 1]])


class _Exploit:
    """A pickle payload that runs a callable when loaded by an unrestricted unpickler."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _fixture_pickle(tmp_path, protocol=3):
    data = {"/train/2342_v1_2": ARRAY[:3], "/train/2342_v1_1": ARRAY, "/test/99_1": ARRAY[3:]}
    path = tmp_path / "ChairV2_Coordinate"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


def test_split_key():
    assert split_key("/train/3922958_v1_Black_2") == ("train", "3922958_v1_Black")
    assert split_key("/test/130396_12") == ("test", "130396")
    for bad in ("train/1_2", "/train/12", "/train/_2", "/train/", "12_1"):
        with pytest.raises(ValueError, match="/<split>/"):
            split_key(bad)


@pytest.mark.parametrize("protocol", [2, 3, 5])
def test_reads_pickle_fixture_sorted(tmp_path, protocol):
    arrays = read_qmul_pickle(_fixture_pickle(tmp_path, protocol))
    assert list(arrays) == ["/test/99_1", "/train/2342_v1_1", "/train/2342_v1_2"]
    np.testing.assert_array_equal(arrays["/train/2342_v1_1"], ARRAY)


def test_array_to_sketch_splits_strokes_at_pen_lifts():
    sketch = qmul_array_to_sketch(ARRAY)
    assert sketch.num_strokes == 2 and [len(s) for s in sketch.strokes] == [3, 2]
    assert (sketch.canvas_width, sketch.canvas_height) == (256.0, 256.0)
    assert not sketch.points()[:, 2].any()  # QMUL has no timing
    # A missing final pen lift still yields the trailing stroke.
    unterminated = qmul_array_to_sketch(np.vstack([ARRAY, [[5, 5, 0]]]))
    assert [len(s) for s in unterminated.strokes] == [3, 2, 1]
    np.testing.assert_array_equal(sketch_to_qmul_array(sketch, with_time=False), ARRAY)


def test_read_qmul_meta(tmp_path):
    sketches = read_qmul(_fixture_pickle(tmp_path))
    assert sketches["/train/2342_v1_2"].meta == {"key": "/train/2342_v1_2", "split": "train", "photo_id": "2342_v1"}
    assert sketches["/test/99_1"].meta["split"] == "test"


@pytest.mark.parametrize("func", [os.system, builtins.eval, builtins.exec])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, func):
    marker = tmp_path / "pwned"
    command = f"open({str(marker)!r}, 'w').write('x')" if func is not os.system else f"touch '{marker}'"
    payload = {"/train/1_1": ARRAY, "/train/1_2": _Exploit(func, command)}
    path = tmp_path / "Evil_Coordinate"
    path.write_bytes(pickle.dumps(payload, protocol=3))
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle .*only numpy arrays are allowed"):
        read_qmul_pickle(path)
    assert not marker.exists(), "the exploit ran: the unpickler is not restricted"


def test_refusal_names_the_global():
    with pytest.raises(UnsafePickleError, match="refusing to unpickle posix.system|refusing to unpickle nt.system"):
        safe_loads(pickle.dumps(_Exploit(os.system, "true")))
    with pytest.raises(UnsafePickleError, match="builtins.getattr"):
        safe_loads(pickle.dumps(_Exploit(getattr, "x")))


def test_non_dict_or_bad_arrays_are_rejected(tmp_path):
    path = tmp_path / "X_Coordinate"
    path.write_bytes(pickle.dumps([ARRAY]))
    with pytest.raises(ValueError, match="expected a dict"):
        read_qmul_pickle(path)
    path.write_bytes(pickle.dumps({"/train/1_1": np.zeros((4, 2))}))
    with pytest.raises(ValueError, match=r"\(n, 3\) or \(n, 4\)"):
        read_qmul_pickle(path)
    path.write_bytes(pickle.dumps({"/train/1_1": np.full((2, 3), np.nan)}))
    with pytest.raises(ValueError, match="NaN"):
        read_qmul_pickle(path)


def test_npz_round_trip_arrays_and_sketches(tmp_path):
    arrays = read_qmul_pickle(_fixture_pickle(tmp_path))
    written = write_qmul_npz(tmp_path / "ChairV2_Coordinate", arrays)
    assert written.name == "ChairV2_Coordinate.npz"
    again = read_qmul_npz(written)
    assert list(again) == list(arrays)
    for key in arrays:
        np.testing.assert_array_equal(again[key], arrays[key])
    # Sketches with timing are stored as (n, 4) x, y, pen, t and come back identical.
    timed = qmul_array_to_sketch(ARRAY).strokes
    timed = tuple(np.column_stack([s[:, :2], np.arange(len(s)) * 17.0 + 100 * i]) for i, s in enumerate(timed))
    sketch = Sketch(timed)
    path = write_qmul_npz(tmp_path / "Timed_Coordinate.npz", {"/train/7_1": sketch})
    assert read_qmul_npz(path)["/train/7_1"].shape == (5, 4)
    assert_same_sketch(read_qmul(path)["/train/7_1"], sketch)


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "Obj_Coordinate.npz"
    obj = np.empty(1, dtype=object)
    obj[0] = ARRAY
    np.savez(path, **{"/train/1_1": obj})
    with pytest.raises(ValueError, match="pickle-free"):
        read_qmul_npz(path)


def test_write_rejects_unsplittable_keys(tmp_path):
    with pytest.raises(ValueError, match="/<split>/"):
        write_qmul_npz(tmp_path / "x.npz", {"train_1": ARRAY})


def test_real_chairv2_pickle(shared_data, tmp_path):
    path = shared_data("chairv2-train", "ChairV2_Coordinate")
    sketches = read_qmul(path)
    assert len(sketches) == 952 and list(sketches) == sorted(sketches)
    assert {s.meta["split"] for s in sketches.values()} == {"train"}
    assert len({s.meta["photo_id"] for s in sketches.values()}) == 300
    strokes = [s.num_strokes for s in sketches.values()]
    points = [s.num_points for s in sketches.values()]
    assert (min(strokes), max(strokes), min(points), max(points)) == (1, 15, 40, 519)
    x0, y0, x1, y1 = np.array([s.bbox() for s in sketches.values()]).T
    assert x0.min() >= 0 and y0.min() >= 0 and x1.max() <= 256 and y1.max() <= 256
    # The pickle-free export reproduces it exactly.
    arrays = read_qmul_pickle(path)
    npz = read_qmul_npz(write_qmul_npz(tmp_path / "ChairV2_Coordinate.npz", arrays))
    assert list(npz) == list(arrays) and all(np.array_equal(npz[k], arrays[k]) for k in arrays)
