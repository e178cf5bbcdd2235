"""Procedural fine-grained chair dataset: shaded photos plus human-like timed sketches, no download.

>>> from retrieval.data.procedural import ProceduralDataset
>>> ds = ProceduralDataset(num_photos=100, sketches_per_photo=2, seed=0)
>>> photo = ds.load_photo(ds.photo_ids("train")[0])   # (256, 256, 3) uint8
>>> record = ds.sketches("val")[0]                     # SketchRecord with a timed Sketch
"""

from retrieval.data.procedural.dataset import ProceduralDataset, export, generate_photo, generate_sketch, photo_id_of
from retrieval.data.procedural.params import VERSION, ChairParams, sample_params

__all__ = [
    "VERSION",
    "ChairParams",
    "ProceduralDataset",
    "export",
    "generate_photo",
    "generate_sketch",
    "photo_id_of",
    "sample_params",
]
