"""Cross-session micro-batching: concurrent ``rank`` calls share one encoder forward.

Every stroke of every session is a small forward pass. When several sessions lift their pens at
about the same time, a worker takes every request already waiting (up to ``max_batch``) and
ranks them with one :meth:`Retriever.rank_batch` call: on CPU a batch of 8 costs far less than 8
single forwards (bench/results/concurrency*.md). A lone request never waits for company unless
``max_wait_ms`` asks it to, so an idle server answers as fast as without batching.

    batcher = RankBatcher(retriever, max_batch=8, workers=2)
    result = batcher.rank(payload, k=12, target_id="proc-v1-s0-17")   # from any thread

Gradio's own ``batch=True`` is not used: it batches one event type only (the app has two, the
canvas's stroke event and the ``rank`` API), and one bad item fails its whole batch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

from retrieval.data.formats.stroke_json import StrokePayloadError
from retrieval.serving.rank_result import RankResult
from retrieval.serving.retriever import Retriever, SketchInput


@dataclass
class _Request:
    sketch: SketchInput
    k: int
    target_id: str | None
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


class RankBatcher:
    """Thread-safe front of a :class:`Retriever` that batches concurrent ``rank`` calls.

    Args:
        retriever: does the work; its ``rank_batch`` gets up to ``max_batch`` sketches at once.
        max_batch: most sketches per encoder forward (1 turns batching off but keeps the workers).
        max_wait_ms: how long a worker holding fewer than ``max_batch`` requests waits for more.
            0 (default) takes only what is already queued: no added latency when idle.
        workers: batches run at once (each uses the encoder's torch threads).
    """

    def __init__(self, retriever: Retriever, max_batch: int = 8, max_wait_ms: float = 0.0, workers: int = 1) -> None:
        if max_batch < 1 or workers < 1 or max_wait_ms < 0:
            raise ValueError(
                f"need max_batch >= 1, workers >= 1, max_wait_ms >= 0; got {max_batch}, {workers}, {max_wait_ms}"
            )
        self.retriever = retriever
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1e3
        self.batch_counts: Counter[int] = Counter()  # batch size -> forwards run at that size
        self._lock = threading.Lock()
        self._idle = 0  # workers waiting for a request
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._closed = False
        self._workers = [
            threading.Thread(target=self._work, name=f"rank-batcher-{i}", daemon=True) for i in range(workers)
        ]
        for worker in self._workers:
            worker.start()

    def rank(self, sketch: SketchInput, k: int = 20, target_id: str | None = None) -> RankResult:
        """Same contract as :meth:`Retriever.rank`: blocks until this sketch is ranked.

        Raises:
            StrokePayloadError: the payload is malformed (only this caller's request fails).
            RuntimeError: the batcher was closed.
        """
        if self._closed:
            raise RuntimeError("RankBatcher is closed")
        request = _Request(sketch, int(k), target_id)
        self._queue.put(request)
        return request.future.result()

    def close(self) -> None:
        """Stop the workers after the requests already queued; a request that raced past the
        closed check and was queued behind the stop signals gets a RuntimeError, not a hang."""
        self._closed = True
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout=5)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item.future.set_exception(RuntimeError("RankBatcher is closed"))

    # --- worker side -----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            first = self._queue.get()
            with self._lock:
                self._idle -= 1
            if first is None:
                return
            batch, stop = self._collect(first)
            self._run(batch)
            if stop:
                return

    def _collect(self, first: _Request) -> tuple[list[_Request], bool]:
        """``first`` plus what is queued (waiting up to ``max_wait_s``); True if told to stop.

        Requests that idle workers can take are left to them: on a lightly loaded machine two
        single forwards on two cores finish sooner than one batch of two on one core. Batches form
        only when every worker is busy, which is when they pay (bench/results/concurrency*.md).
        """
        batch = [first]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch:
            with self._lock:
                idle = self._idle
            if idle and self._queue.qsize() <= idle:
                break
            remaining = deadline - time.perf_counter()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self, batch: list[_Request]) -> None:
        with self._lock:
            self.batch_counts[len(batch)] += 1
        started = time.perf_counter()
        try:
            results = self.retriever.rank_batch(
                [r.sketch for r in batch], max(r.k for r in batch), [r.target_id for r in batch], errors="return"
            )
        except Exception as exc:  # noqa: BLE001 - e.g. an unknown target id: rank alone so only its caller fails
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
            else:
                for request in batch:
                    self._run([request])
            return
        for request, result in zip(batch, results):
            if result.error is not None:
                request.future.set_exception(StrokePayloadError(result.error))
            else:  # the batch ran at the largest k asked; each caller gets its own top k
                timings = {**result.timings_ms, "queue": (started - request.queued_at) * 1e3}
                top = replace(
                    result, ids=result.ids[: request.k], scores=result.scores[: request.k], timings_ms=timings
                )
                request.future.set_result(top)
