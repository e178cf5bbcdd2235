"""The one per-stroke call: validate -> render -> embed -> search (+ exact rank of a target).

The app, the API, benchmarks and evaluation all rank partial sketches through :class:`Retriever`,
so what the study measures is what the app does.

Example:
    >>> retriever = Retriever.from_paths("assets/model", "../shared/data/chairv2-train@val")
    >>> result = retriever.rank({"canvas": {"width": 400, "height": 400}, "strokes": [[[10, 20, 0], ...]]},
    ...                         k=10, target_id="2c0f7c9c")
    >>> result.ids[:3], result.target_rank, result.timings_ms["total"]
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.data.formats.stroke_json import StrokeLimits, StrokePayloadError, parse_stroke_json
from retrieval.data.sketch import Sketch
from retrieval.model.encoder import Encoder
from retrieval.serving.exact_rank import DEFAULT_RANK_CAP, TargetRank
from retrieval.serving.gallery import Gallery, open_gallery
from retrieval.serving.index import PhotoIndex
from retrieval.serving.rank_result import RankResult
from retrieval.serving.shards import ShardedIndex

SketchInput = Sketch | Mapping[str, Any] | str | bytes | bytearray  # a Sketch or a stroke-JSON payload
TIMING_KEYS = ("validate", "render", "encode", "search", "total")


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


@dataclass
class EmbeddedBatch:
    """What :meth:`SketchEmbedder.embed_batch` gives: one forward's embeddings and who failed."""

    queries: np.ndarray | None  # (len(todo), D) L2-normalised rows, None when nothing was drawn
    todo: list[int]  # positions of the input sketches that were embedded (valid and not empty)
    failures: dict[int, str]  # position -> why that payload was refused
    timings_ms: dict[str, float]  # validate, render, encode
    started: float  # perf_counter at the start, for the caller's "total"


class SketchEmbedder:
    """The encoder seam: validate -> render -> embed a batch of partial sketches in one forward.

    :class:`Retriever` adds the index; the Ray Serve encoder deployment (retrieval/serving/serve_ray.py)
    uses this alone, so both embed a payload through exactly the same code.
    """

    def __init__(self, encoder: Encoder, limits: StrokeLimits = StrokeLimits()) -> None:
        self.encoder = encoder
        self.limits = limits

    def validate(self, sketch: SketchInput) -> Sketch:
        """A :class:`Sketch` as is, or a stroke-JSON payload parsed under ``limits``.

        Raises:
            StrokePayloadError: the payload is malformed or over the limits (message says what to fix).
        """
        if isinstance(sketch, Sketch):
            return sketch
        return parse_stroke_json(sketch, self.limits)

    def render(self, sketch: Sketch) -> np.ndarray:
        """The sketch as the model sees it: ``(raster_size, raster_size)`` uint8 (:meth:`Encoder.render`)."""
        return self.encoder.render(sketch)

    def embed_batch(self, sketches: Sequence[SketchInput], errors: str = "raise") -> EmbeddedBatch:
        """Embed every valid, non-empty sketch of ``sketches`` with one encoder forward.

        Args:
            errors: ``"raise"`` the first invalid payload's error, or ``"return"`` it in ``failures``.
        """
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
        start = time.perf_counter()
        parsed: list[Sketch | None] = []
        failures: dict[int, str] = {}
        for i, item in enumerate(sketches):
            try:
                parsed.append(self.validate(item))
            except StrokePayloadError as err:
                if errors == "raise":
                    raise
                parsed.append(None)
                failures[i] = str(err)
        timings = {"validate": _ms(start)}

        t = time.perf_counter()
        todo = [i for i, s in enumerate(parsed) if s is not None and s.num_points > 0]
        rasters = np.stack([self.render(parsed[i]) for i in todo]) if todo else None
        timings["render"] = _ms(t)

        t = time.perf_counter()
        queries = self.encoder.embed_sketches(rasters) if rasters is not None else None
        timings["encode"] = _ms(t)
        return EmbeddedBatch(queries, todo, failures, timings, start)


class Retriever(SketchEmbedder):
    """Ranks gallery photos for partial sketches with one encoder and one photo index.

    Thread-safe for concurrent sessions: per-call state lives on the stack; the encoder runs in
    ``torch.inference_mode`` and is only read; the index serialises its own searches.

    Args:
        encoder: the model; rasters are rendered at ``meta["raster_size"]`` / ``meta["line_width"]``.
        index: photo embeddings made by the same encoder: one :class:`PhotoIndex`, or a
            :class:`~retrieval.serving.shards.ShardedIndex` of several (same answers, see retrieval/serving/shards.py).
        limits: bounds applied to stroke-JSON payloads (untrusted input).
    """

    def __init__(
        self,
        encoder: Encoder,
        index: PhotoIndex | ShardedIndex,
        limits: StrokeLimits = StrokeLimits(),
    ) -> None:
        if index.dim != encoder.meta["embed_dim"]:
            raise ValueError(
                f"index holds {index.dim}-d embeddings but the encoder makes {encoder.meta['embed_dim']}-d "
                "ones: rebuild the gallery with this model"
            )
        super().__init__(encoder, limits)
        self.index = index
        self.gallery: Gallery | None = None  # set by from_paths: photos (load_photo), paths, cache folder
        self.rank_cap: int | None = DEFAULT_RANK_CAP  # ranks above it are certified intervals (IVF / shards)
        self.snapshot = getattr(index, "snapshot", "")  # ShardedIndex knows its own; from_paths sets the gallery's

    @classmethod
    def from_paths(
        cls,
        model_dir: str | Path,
        gallery_spec: str | Path,
        cache_dir: str | Path | None = None,
        *,
        progress: bool = False,
        **gallery_kwargs: Any,
    ) -> Retriever:
        """Load a checkpoint folder and build (or load from cache) a gallery spec (see retrieval.serving.gallery)."""
        encoder = Encoder.load(model_dir)
        gallery = open_gallery(encoder, gallery_spec, cache_dir, progress=progress, **gallery_kwargs)
        retriever = cls(encoder, gallery.index)
        retriever.gallery = gallery
        retriever.snapshot = gallery.snapshot
        return retriever

    def __len__(self) -> int:
        return len(self.index)

    # --- the per-stroke call -------------------------------------------------------------------
    def rank(self, sketch: SketchInput, k: int = 20, target_id: str | None = None) -> RankResult:
        """Top-``k`` photos for a (partial) sketch, and the exact rank of ``target_id`` if given.

        An empty sketch (no strokes yet) ranks nothing: empty ids, ``target_rank`` None.
        """
        return self.rank_batch([sketch], k, None if target_id is None else [target_id])[0]

    def rank_batch(
        self,
        sketches: Sequence[SketchInput],
        k: int = 20,
        target_ids: Sequence[str | None] | None = None,
        errors: str = "raise",
    ) -> list[RankResult]:
        """:meth:`rank` for several sketches with one encoder forward (batching across sessions).

        Args:
            sketches: sketches or stroke-JSON payloads.
            k: photos returned per sketch.
            target_ids: one target (or None) per sketch.
            errors: ``"raise"`` the first invalid payload's error, or ``"return"`` it in that
                item's ``RankResult.error`` so one bad session does not fail the others.
        """
        targets = list(target_ids) if target_ids is not None else [None] * len(sketches)
        if len(targets) != len(sketches):
            raise ValueError(f"got {len(sketches)} sketches but {len(targets)} target ids")
        embedded = self.embed_batch(sketches, errors)
        queries, todo, failures, timings = embedded.queries, embedded.todo, embedded.failures, embedded.timings_ms

        t = time.perf_counter()
        ranked: dict[int, tuple[list[str], list[float], TargetRank | None]] = {}
        if queries is not None:
            scores, ids, ranks = self.index.search_and_rank(queries, k, [targets[i] for i in todo], self.rank_cap)
            for row, i in enumerate(todo):
                ranked[i] = (ids[row], scores[row, : len(ids[row])].astype(float).tolist(), ranks[row])
        timings["search"] = _ms(t)
        timings["total"] = _ms(embedded.started)

        n = len(self.index)
        results = []
        for i in range(len(sketches)):
            ids, scores, rank = ranked.get(i, ([], [], None))
            results.append(
                RankResult(
                    ids,
                    scores,
                    None if rank is None else rank.rank,
                    timings_ms=dict(timings),
                    n_gallery=n,
                    error=failures.get(i),
                    batch_size=len(todo),
                    rank_exact=rank is None or rank.exact,
                    rank_bounds=None if rank is None else (rank.lower, rank.upper),
                    snapshot=self.snapshot,
                )
            )
        return results
