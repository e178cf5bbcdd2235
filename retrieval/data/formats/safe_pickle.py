"""A restricted unpickler that rebuilds numpy arrays and nothing else.

Datasets such as QMUL FG-SBIR (``ChairV2_Coordinate``) and sketch-rnn's ``.npz`` object arrays
ship as pickles. A plain ``pickle.load`` runs whatever callable the file names (``os.system``,
``builtins.eval``...), so it must never see a downloaded file. This unpickler resolves only the
few globals numpy's own array pickling emits and refuses every other one *before* anything is
called.
"""

from __future__ import annotations

import _codecs
import io
import pickle
from typing import IO, Any

import numpy as np

try:  # numpy >= 2 moved the array internals to numpy._core
    from numpy._core.multiarray import _reconstruct, scalar
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar
    from numpy.core.numeric import _frombuffer

# (module, name) pairs numpy's pickles reference, for numpy 1.x and 2.x writers, protocols 2-5.
# Python-2-era and protocol-2 pickles of bytes go through _codecs.encode(text, "latin1").
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs.encode,
    ("codecs", "encode"): _codecs.encode,
}
for _module in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_module}.multiarray", "_reconstruct")] = _reconstruct
    _ALLOWED[(f"{_module}.multiarray", "scalar")] = scalar
    _ALLOWED[(f"{_module}.numeric", "_frombuffer")] = _frombuffer


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the numpy-array allow-list; nothing was executed."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits only numpy array reconstruction."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle {module}.{name}: only numpy arrays are allowed in sketch data files. "
                "The file may be corrupt or malicious; if it comes from a source you trust, convert it to a "
                "pickle-free .npz (retrieval.data.formats.write_qmul_npz) and read that instead."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing to unpickle a persistent id: only numpy arrays are allowed")


def safe_load(file: IO[bytes], encoding: str = "ASCII") -> Any:
    """Unpickle from a binary file object, allowing only numpy arrays (plus builtin containers).

    Args:
        file: an open binary file.
        encoding: how Python-2 ``str`` objects are decoded; use ``"latin1"`` for Python-2 numpy pickles.

    Raises:
        UnsafePickleError: the pickle references anything but numpy's array reconstruction.
    """
    return NumpyOnlyUnpickler(file, encoding=encoding).load()


def safe_loads(data: bytes, encoding: str = "ASCII") -> Any:
    """:func:`safe_load` from bytes."""
    return safe_load(io.BytesIO(data), encoding=encoding)
