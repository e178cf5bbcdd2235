"""Client of the Ray Serve app (retrieval/serving/serve_ray.py) over HTTP, with the contract of ``Retriever.rank``.

The Gradio front end keeps per-session state and ranks through this object when started with
``app.py --serve-url http://127.0.0.1:8000``; it needs neither ray nor the index in its process.
Thread-safe (one pooled ``httpx.Client``), so concurrent sessions share its connections.

    ranker = ServeRanker("http://127.0.0.1:8000")
    result = ranker.rank(stroke_json, k=12, target_id="proc-v1-s0-17")   # a RankResult
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from retrieval.data.formats.stroke_json import StrokePayloadError, to_stroke_json
from retrieval.data.sketch import Sketch
from retrieval.serving.rank_result import RankResult, check_k
from retrieval.serving.retriever import SketchInput
from retrieval.serving.versions import SnapshotMismatch, ids_digest


def rank_request(sketch: SketchInput, k: int, target_id: str | None) -> dict[str, Any]:
    """The JSON body of ``POST /rank``: the sketch as a stroke-JSON string."""
    if isinstance(sketch, Sketch):
        sketch = json.dumps(to_stroke_json(sketch))
    elif isinstance(sketch, Mapping):
        sketch = json.dumps(sketch)
    elif isinstance(sketch, bytes | bytearray):
        sketch = bytes(sketch).decode("utf-8", errors="replace")
    return {"sketch": sketch, "k": check_k(k), "target_id": target_id}


def rank_result(status: int, body: dict[str, Any]) -> RankResult:
    """A :class:`RankResult` from the app's answer; its errors raised as ``Retriever.rank`` raises them."""
    if status == 400:
        raise StrokePayloadError(body.get("error", "invalid request"))
    if status == 404:
        raise KeyError(body.get("error", "target not in the gallery"))
    if status == 413:
        raise StrokePayloadError(body.get("error", "request body too large"))
    if status != 200 or "ids" not in body:
        raise RuntimeError(f"the Serve app answered HTTP {status}: {str(body)[:300]}; is `make serve-cluster` up?")
    return RankResult.from_json(body)


def check_cluster_gallery(info: Mapping[str, Any], ids: Sequence[str], source: str) -> None:
    """Refuse a front end whose photos are not the cluster's (``info``: its ``GET /info``).

    The front end lists its photos itself (for targets and thumbnails) and the cluster ranks its own
    index: they must hold the same photo ids, or targets would be unknown to the cluster and
    thumbnails would name photos it never ranks. Compared by count and :func:`ids_digest`; the
    pixels are not compared (the front end embeds nothing), so keep both on one copy of the photos.

    Raises:
        SnapshotMismatch: naming both counts and what to fix.
    """
    size, digest = info.get("gallery_size"), info.get("ids_digest")
    if digest is None:
        raise SnapshotMismatch("the cluster does not report its photo ids (GET /info has no ids_digest): redeploy it")
    if size == len(ids) and digest == ids_digest(ids):
        return
    why = "holds other photo ids"
    if isinstance(size, int) and size < len(ids):
        why = f"holds {len(ids) - size} photo(s) fewer (it skips photos it cannot read: its log names them)"
    elif isinstance(size, int) and size > len(ids):
        why = f"holds {size - len(ids)} photo(s) more"
    raise SnapshotMismatch(
        f"the cluster's gallery ({size} photos, snapshot {info.get('snapshot')}) is not this front end's "
        f"{source} ({len(ids)} photos): the cluster {why}. Start the front end with the cluster's --gallery / "
        "--photos, on the same copy of the photos"
    )


class ServeRanker:
    """``rank(sketch, k, target_id) -> RankResult`` answered by the Serve app at ``url``."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._client = httpx.Client(trust_env=False, timeout=timeout_s)

    def rank(self, sketch: SketchInput, k: int = 20, target_id: str | None = None) -> RankResult:
        response = self._client.post(f"{self.url}/rank", json=rank_request(sketch, k, target_id))
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:300]}
        return rank_result(response.status_code, body)

    def info(self) -> dict[str, Any]:
        """The cluster's ``snapshot``, ``encoder_hash``, ``gallery_size`` and ``ids_digest`` (``GET /info``):
        what a front end logs and checks its photos against (:func:`check_cluster_gallery`)."""
        import httpx

        try:
            response = self._client.get(f"{self.url}/info")
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise RuntimeError(f"cannot read {self.url}/info ({exc}); is `make serve-cluster` up?") from exc

    def close(self) -> None:
        self._client.close()
