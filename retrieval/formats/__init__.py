"""Sketch file formats: every reader returns :class:`retrieval.sketch.Sketch` (strokes of x, y, t_ms).

- :mod:`.quickdraw`: Google Quick, Draw! raw / simplified ndjson, plus human timing statistics.
"""

from retrieval.formats.quickdraw import (
    drawing_to_sketch,
    read_ndjson,
    sketch_to_drawing,
    timing_stats,
    write_ndjson,
)

__all__ = [
    "drawing_to_sketch",
    "read_ndjson",
    "sketch_to_drawing",
    "timing_stats",
    "write_ndjson",
]
