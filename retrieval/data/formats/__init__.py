"""Sketch file formats: every reader returns :class:`retrieval.data.sketch.Sketch` (strokes of x, y, t_ms).

- :mod:`.quickdraw`: Google Quick, Draw! raw / simplified ndjson, plus human timing statistics.
- :mod:`.qmul`: QMUL FG-SBIR ``<Name>_Coordinate`` pickles (read safely) and the pickle-free ``.npz``.
- :mod:`.svg`: SVG (TU-Berlin) via svgpathtools, one stroke per path, fixed arc-length sampling.
- :mod:`.stroke3`: stroke-3 / stroke-5 offsets and sketch-rnn ``.npz`` files (no blind unpickling).
- :mod:`.stroke_json`: the app's stroke JSON, strictly validated within :class:`StrokeLimits`.
- :mod:`.safe_pickle`: the numpy-only unpickler every pickle-based reader goes through.
"""

from retrieval.data.formats.qmul import (
    qmul_array_to_sketch,
    read_qmul,
    read_qmul_npz,
    read_qmul_pickle,
    sketch_to_qmul_array,
    split_key,
    write_qmul_npz,
)
from retrieval.data.formats.quickdraw import (
    drawing_to_sketch,
    read_ndjson,
    sketch_to_drawing,
    timing_stats,
    write_ndjson,
)
from retrieval.data.formats.safe_pickle import UnsafePickleError, safe_load, safe_loads
from retrieval.data.formats.stroke3 import (
    iter_sketchrnn,
    read_sketchrnn_npz,
    sketch_to_stroke3,
    stroke3_to_sketch,
    stroke3_to_stroke5,
    stroke5_to_stroke3,
    write_sketchrnn_npz,
)
from retrieval.data.formats.stroke_json import StrokeLimits, StrokePayloadError, parse_stroke_json, to_stroke_json
from retrieval.data.formats.svg import parse_svg, read_svg, resample_polyline, sketch_to_svg, write_svg

__all__ = [
    "UnsafePickleError",
    "qmul_array_to_sketch",
    "read_qmul",
    "read_qmul_npz",
    "read_qmul_pickle",
    "safe_load",
    "safe_loads",
    "sketch_to_qmul_array",
    "split_key",
    "write_qmul_npz",
    "parse_svg",
    "read_svg",
    "resample_polyline",
    "sketch_to_svg",
    "write_svg",
    "iter_sketchrnn",
    "read_sketchrnn_npz",
    "sketch_to_stroke3",
    "stroke3_to_sketch",
    "stroke3_to_stroke5",
    "stroke5_to_stroke3",
    "write_sketchrnn_npz",
    "StrokeLimits",
    "StrokePayloadError",
    "parse_stroke_json",
    "to_stroke_json",
    "drawing_to_sketch",
    "read_ndjson",
    "sketch_to_drawing",
    "timing_stats",
    "write_ndjson",
]
