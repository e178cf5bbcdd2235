"""The processes of the Ray Serve app (retrieval/serving/serve_ray.py builds and starts them).

* :class:`SketchEncoder`: validate -> render -> embed, batched across sessions by ``@serve.batch``.
* :class:`IndexShardDeployment`: one shard folder of the gallery snapshot (``LocalShard``).
* :class:`Ingress`: ``POST /rank`` (and the handle method ``rank``) fans out to the shards within a
  deadline and merges their answers; ``GET /info`` tells front ends the snapshot and photo ids.

Their options (replicas, CPUs, memory, queue bounds, autoscaling) come from
retrieval/serving/ray_setup.py, not from these decorators.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before ray starts: Ray reports usage online unless told not to
from ray import serve  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402

from retrieval.data.formats.stroke_json import StrokePayloadError  # noqa: E402
from retrieval.runtime import set_threads  # noqa: E402
from retrieval.serving.body_cap import BodyOverCap, capped_json  # noqa: E402
from retrieval.serving.exact_rank import DEFAULT_RANK_CAP  # noqa: E402
from retrieval.serving.index import PhotoIndex  # noqa: E402
from retrieval.serving.rank_result import RankResult, check_k  # noqa: E402
from retrieval.serving.shards import ShardAnswer, TargetVectors, merge_answers, owner_vector, thresholds_for  # noqa: E402
from retrieval.serving.versions import SnapshotMismatch, encoder_hash_of, read_snapshot  # noqa: E402


@serve.deployment(name="SketchEncoder", ray_actor_options={"num_cpus": 0})
class SketchEncoder:
    """Validate -> render -> embed, batched across sessions by ``@serve.batch``."""

    def __init__(self, model_dir: str, threads: int, max_batch: int, batch_wait_ms: float) -> None:

        from retrieval.model.encoder import Encoder
        from retrieval.serving.gallery import model_hash
        from retrieval.serving.retriever import SketchEmbedder  # torch: only the encoder replicas import it

        set_threads(threads)
        # channels_last, as app.py serves it (bench/results/encoder_options.md).
        self.embedder = SketchEmbedder(Encoder.load(model_dir, channels_last=True))
        self.encoder_hash = model_hash(self.embedder.encoder)  # the ingress refuses embeddings of another model
        self.embed.set_max_batch_size(max_batch)
        self.embed.set_batch_wait_timeout_s(batch_wait_ms / 1e3)
        self.embedder.embed_batch([_WARM_UP_SKETCH] * max_batch)  # first strokes fast: shapes warmed
        for size in range(1, max_batch):
            self.embedder.embed_batch([_WARM_UP_SKETCH] * size)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def embed(self, sketches: list[Any]) -> list[dict[str, Any]]:
        batch = await asyncio.to_thread(self.embedder.embed_batch, sketches, "return")
        rows = {i: batch.queries[row] for row, i in enumerate(batch.todo)}
        return [
            {
                "query": rows.get(i),
                "error": batch.failures.get(i),
                "timings_ms": batch.timings_ms,
                "batch_size": len(sketches),
                "encoder_hash": self.encoder_hash,
            }
            for i in range(len(sketches))
        ]


@serve.deployment
class IndexShardDeployment:
    """One :class:`PhotoIndex` folder as a shard (retrieval/serving/shards.py ``LocalShard``)."""

    def __init__(self, folder: str, threads: int, snapshot: str) -> None:
        from retrieval.serving.shards import LocalShard

        self.shard = LocalShard(PhotoIndex.load(folder), read_snapshot(Path(folder)))
        self.expected = snapshot
        self.snapshot = self.shard.snapshot
        set_threads(threads, torch_threads=False)  # shard replicas never load torch

    def check_health(self) -> None:
        """Serve calls this periodically: a replica holding another snapshot is replaced."""
        if self.snapshot != self.expected:
            raise SnapshotMismatch(f"shard holds snapshot {self.snapshot}, deployed {self.expected}")

    def __len__(self) -> int:
        return len(self.shard)

    def size(self) -> int:
        return len(self.shard)

    def target_vector(self, photo_id: str) -> np.ndarray | None:
        return self.shard.target_vector(photo_id)

    def search(self, queries: np.ndarray, k: int, thresholds: np.ndarray, cap: int | None) -> ShardAnswer:
        return self.shard.search(queries, k, thresholds, cap)


@serve.deployment(max_ongoing_requests=1000)
class Ingress:
    """HTTP ``POST /rank`` and handle method ``rank``: the app's ``rank`` API over the cluster."""

    def __init__(self, encoder: Any, shards: list[Any], sizes: list[int], snapshot: str, cfg: dict) -> None:
        self.encoder, self.shards, self.sizes, self.snapshot = encoder, list(shards), list(sizes), snapshot
        self.deadline_s, self.max_body = cfg["deadline_ms"] / 1e3, int(cfg["max_body_bytes"])
        # GET /info: what a front end logs, and checks its own listing of the photos against
        self.info = {"snapshot": snapshot, "gallery_size": sum(self.sizes), "ids_digest": cfg["ids_digest"]}
        self.targets = TargetVectors()

    async def _fan_out(self, call: str, *args: Any) -> tuple[list[Any], list[int]]:
        """``shard.<call>(*args)`` on every shard, waiting at most the deadline: answers (None where
        missing) and the shards that raised or were late."""
        calls = [getattr(s, call).remote(*args) for s in self.shards]
        tasks = [asyncio.ensure_future(_awaited(c)) for c in calls]
        await asyncio.wait(tasks, timeout=self.deadline_s)
        out, missing = [], []
        for i, (task, c) in enumerate(zip(tasks, calls)):
            if task.done() and task.exception() is None:
                out.append(task.result())
            else:
                task.cancel()
                c.cancel()
                out.append(None)
                missing.append(i)
        return out, missing

    async def _target_vector(self, target_id: str) -> np.ndarray | None:
        vector = self.targets.get(target_id)
        if vector is None:
            found, missing = await self._fan_out("target_vector", target_id)
            vector = owner_vector(found, target_id, complete=not missing)
            if vector is not None:
                self.targets.put(target_id, vector)
        return vector

    async def rank(self, sketch: Any, k: int = 10, target_id: str | None = None) -> dict[str, Any]:
        """Rank for one stroke-JSON payload. Raises StrokePayloadError / KeyError like Retriever.rank."""
        start = time.perf_counter()
        embedded = await self.encoder.embed.remote(sketch)
        if embedded["error"] is not None:
            raise StrokePayloadError(embedded["error"])
        if encoder_hash_of(self.snapshot) != embedded["encoder_hash"]:
            raise SnapshotMismatch(f"encoder {embedded['encoder_hash']} did not embed gallery snapshot {self.snapshot}")
        timings = dict(embedded["timings_ms"])
        ids: list[str] = []
        scores: list[float] = []
        rank = None
        partial, missing = False, []
        if embedded["query"] is not None:  # None: nothing drawn yet
            t = time.perf_counter()
            queries = embedded["query"][None, :]
            vector = None if target_id is None else await self._target_vector(target_id)
            thresholds = thresholds_for(queries, [vector])
            answers, _ = await self._fan_out("search", queries, k, thresholds, DEFAULT_RANK_CAP)
            answers = [a if a is not None and a.snapshot == self.snapshot else None for a in answers]
            merged = merge_answers(answers, self.sizes, k, [target_id], thresholds, self.snapshot)
            ids, scores, rank = merged.ids[0], merged.scores[0, : len(merged.ids[0])].tolist(), merged.ranks[0]
            partial, missing = merged.partial, merged.missing
            timings["search"] = (time.perf_counter() - t) * 1e3
        timings["total"] = (time.perf_counter() - start) * 1e3
        result = RankResult(
            ids,
            scores,
            None if rank is None else rank.rank,
            timings,
            n_gallery=sum(self.sizes),
            batch_size=embedded["batch_size"],
            # no rank while a target was asked for: its owner missed the deadline and its vector is not cached
            rank_exact=rank.exact if rank is not None else target_id is None or embedded["query"] is None,
            rank_bounds=None if rank is None else (rank.lower, rank.upper),
            snapshot=self.snapshot,
        )
        return result.to_json() | {"partial": partial, "missing_shards": missing}

    async def __call__(self, request: Request) -> JSONResponse:
        if request.url.path.rstrip("/").endswith("/info"):
            return JSONResponse(self.info)
        try:
            body = await capped_json(request, self.max_body)
            if not isinstance(body, dict) or "sketch" not in body:
                raise StrokePayloadError('send {"sketch": <stroke JSON>, "k": 10, "target_id": null}')
            k = check_k(body.get("k", 10))
            return JSONResponse(await self.rank(body["sketch"], k, body.get("target_id")))
        except BodyOverCap as exc:
            return JSONResponse({"error": str(exc), "kind": "size"}, status_code=413)
        except SnapshotMismatch as exc:  # mid rolling update: the client may retry
            return JSONResponse({"error": str(exc), "kind": "version"}, status_code=503)
        except (StrokePayloadError, ValueError, TypeError) as exc:
            return JSONResponse({"error": f"invalid request: {exc}", "kind": "payload"}, status_code=400)
        except KeyError as exc:
            return JSONResponse({"error": str(exc).strip("\"'"), "kind": "target"}, status_code=404)


async def _awaited(response: Any) -> Any:
    return await response


_WARM_UP_SKETCH = {"canvas": {"width": 256, "height": 256}, "strokes": [[[10, 10, 0], [200, 180, 50]]]}
