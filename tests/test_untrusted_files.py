"""Untrusted files are refused with a clear error and no code from them ever runs.

Every malicious payload here would create a sentinel file if it were executed; each test checks
both the error and that the sentinel was never written. Covers the QMUL coordinate pickle (reader
and ``open_dataset``), npz object arrays, encoder checkpoints (``.pt`` pickles, safetensors of
the wrong shapes, bogus ``model.json``), and photos in formats other than PNG, JPEG and WebP.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import EpsImagePlugin, Image
from safetensors.torch import save_file

from retrieval.data.datasets import open_dataset
from retrieval.data.formats.qmul import read_qmul_npz, read_qmul_pickle
from retrieval.data.formats.safe_pickle import UnsafePickleError
from retrieval.data.images import read_rgb
from retrieval.model.encoder import CheckpointError, Encoder, create_encoder


class _RunsCode:
    """Unpickling this calls ``func(arg)``: exec/system/eval would create the sentinel."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def _payloads(sentinel: Path) -> dict[str, _RunsCode]:
    code = f"open({str(sentinel)!r}, 'w').write('pwned')"
    return {
        "exec": _RunsCode(exec, code),
        "eval": _RunsCode(eval, f"__import__('builtins').exec({code!r})"),
        "os.system": _RunsCode(os.system, f"touch {sentinel}"),
    }


@pytest.fixture
def sentinel(tmp_path):
    path = tmp_path / "SENTINEL_code_ran"
    yield path
    assert not path.exists(), "a malicious file executed code"


@pytest.fixture(scope="module")
def encoder():
    return create_encoder(seed=0)


# --- QMUL coordinate pickles --------------------------------------------------------------------
@pytest.mark.parametrize("how", ["exec", "eval", "os.system"])
@pytest.mark.parametrize("where", ["top level", "inside a value", "as a key"])
def test_malicious_qmul_pickle_is_refused(tmp_path, sentinel, how, where):
    evil = _payloads(sentinel)[how]
    data = {
        "top level": evil,
        "inside a value": {"/train/a_1": np.zeros((3, 3)), "/train/b_1": evil},
        "as a key": {"/train/a_1": np.zeros((3, 3)), ("k", evil): np.zeros((2, 3))},
    }[where]
    path = tmp_path / "ChairV2_Coordinate"
    path.write_bytes(pickle.dumps(data, protocol=3))
    with pytest.raises(UnsafePickleError, match="refusing to unpickle"):
        read_qmul_pickle(path)


def test_open_dataset_on_a_folder_with_a_malicious_pickle(tmp_path, sentinel):
    folder = tmp_path / "evil_release"
    (folder / "photo").mkdir(parents=True)
    Image.new("RGB", (32, 32), "white").save(folder / "photo" / "a.png")
    (folder / "Evil_Coordinate").write_bytes(pickle.dumps({"/train/a_1": _payloads(sentinel)["exec"]}))
    with pytest.raises(UnsafePickleError):
        open_dataset(folder).sketches("train")


def test_npz_with_object_arrays_is_refused(tmp_path, sentinel):
    path = tmp_path / "Evil_Coordinate.npz"
    evil = np.empty(1, dtype=object)
    evil[0] = _payloads(sentinel)["exec"]
    np.savez(path, **{"/train/a_1": evil})
    with pytest.raises(ValueError, match="not a readable pickle-free"):
        read_qmul_npz(path)


# --- encoder checkpoints ------------------------------------------------------------------------
def _torch_zip_with_pickle(path: Path, payload: bytes) -> None:
    """A file in torch.save's zip layout whose data.pkl is ``payload``."""
    buffer = io.BytesIO()
    torch.save({"meta": {}, "state_dict": {}}, buffer)
    buffer.seek(0)
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = payload if item.filename.endswith("data.pkl") else src.read(item.filename)
            dst.writestr(item, data)


@pytest.mark.parametrize("how", ["exec", "eval", "os.system"])
@pytest.mark.parametrize("layout", ["torch zip", "plain pickle"])
def test_code_executing_pt_checkpoint_is_refused(tmp_path, sentinel, how, layout):
    blob = pickle.dumps({"meta": {"format": "earlysketch-encoder"}, "state_dict": _payloads(sentinel)[how]}, protocol=2)
    path = tmp_path / "model.pt"
    if layout == "torch zip":
        _torch_zip_with_pickle(path, blob)
    else:
        path.write_bytes(blob)
    with pytest.raises(CheckpointError, match="refused to load") as info:
        Encoder.load(path)
    assert "Encoder.save" in str(info.value), "the error should say how to fix it"


def test_pickle_disguised_as_safetensors_is_refused(tmp_path, sentinel, encoder):
    folder = encoder.save(tmp_path / "ckpt")
    (folder / "model.safetensors").write_bytes(pickle.dumps(_payloads(sentinel)["exec"]))
    meta = json.loads((folder / "model.json").read_text())
    meta.pop("weights_sha256")
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        Encoder.load(folder)


def test_safetensors_with_wrong_shapes_is_refused(tmp_path, encoder):
    folder = encoder.save(tmp_path / "ckpt")
    state = {k: v.clone() for k, v in encoder.net.state_dict().items()}
    head = next(k for k in state if k.startswith("sketch_head") and k.endswith("weight"))
    state[head] = state[head].T.contiguous()  # (F, D) instead of (D, F)
    save_file(state, str(folder / "model.safetensors"))
    meta = json.loads((folder / "model.json").read_text())
    meta.pop("weights_sha256")  # an attacker would also fix the hash; the shape check must still hold
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit the architecture"):
        Encoder.load(folder)


def test_safetensors_with_missing_and_extra_tensors_is_refused(tmp_path, encoder):
    folder = encoder.save(tmp_path / "ckpt")
    state = {k: v.clone() for k, v in list(encoder.net.state_dict().items())[1:]}
    state["payload"] = torch.zeros(3)
    save_file(state, str(folder / "model.safetensors"))
    meta = json.loads((folder / "model.json").read_text())
    meta.pop("weights_sha256")
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit"):
        Encoder.load(folder)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"arch": "__import__('os').system('touch /tmp/x')"}, "unknown arch"),
        ({"arch": "builtins.eval"}, "unknown arch"),
        ({"format": "pickle"}, "not an EarlySketch encoder"),
        ({"input_size": 10**9}, "input_size"),
        ({"embed_dim": -1}, "embed_dim"),
        ({"line_width": "3"}, "line_width"),
        (
            {"normalisation": {"photo_mean": [0, 0], "photo_std": [1, 1, 1], "sketch_mean": 0, "sketch_std": 1}},
            "normalisation",
        ),
        ({"branch_sharing": {"separate_blocks": -4}}, "separate_blocks"),
    ],
)
def test_bogus_model_json_is_refused(tmp_path, encoder, change, message):
    folder = encoder.save(tmp_path / "ckpt")
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, **change}))
    with pytest.raises(CheckpointError, match=message):
        Encoder.load(folder)


@pytest.mark.parametrize("text", ["[1, 2, 3]", "{not json", "\xff\xfe garbage", ""])
def test_model_json_that_is_not_an_object_is_refused(tmp_path, encoder, text):
    folder = encoder.save(tmp_path / "ckpt")
    (folder / "model.json").write_text(text, encoding="latin-1")
    with pytest.raises(CheckpointError):
        Encoder.load(folder)


def test_an_eps_file_named_png_is_refused_before_ghostscript_could_run(tmp_path, sentinel, monkeypatch):
    def ghostscript(*args, **kwargs):  # what Pillow runs to rasterise EPS, when it is installed
        sentinel.write_text("ghostscript ran")
        raise OSError("ghostscript ran")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    path = tmp_path / "photo.png"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n")
    with pytest.raises(ValueError, match="not a valid JPEG, PNG, WEBP file.*Convert it to PNG or JPEG"):
        read_rgb(path)


@pytest.mark.parametrize(("fmt", "suffix"), [("BMP", ".png"), ("GIF", ".jpg"), ("TIFF", ".webp"), ("PPM", ".png")])
def test_photo_formats_other_than_png_jpeg_webp_are_refused_whatever_the_suffix(tmp_path, fmt, suffix):
    path = tmp_path / f"photo{suffix}"
    Image.new("RGB", (8, 8), "red").save(path, format=fmt)
    with pytest.raises(ValueError, match="other formats are refused"):
        read_rgb(path)
