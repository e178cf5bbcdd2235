"""A request body read up to a cap: nothing bigger is buffered or parsed.

Shared by the app's own stroke route (retrieval/ui/stroke_route.py) and the Ray Serve ingress
(retrieval/serving/serve_ray.py); the app's Gradio routes are capped earlier, by the ASGI
middlewares of retrieval/ui/request_limits.py, with the same message.
"""

from __future__ import annotations

import json
from typing import Any


class BodyOverCap(ValueError):
    """A request body over its route's cap."""


def over_the_limit(max_bytes: int) -> str:
    return f"request body over the limit of {max_bytes} bytes"


async def capped_body(request: Any, max_bytes: int) -> bytes:
    """The body of a Starlette ``request``, refused (:class:`BodyOverCap`) once its declared or
    received size passes ``max_bytes``: reading stops there."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise BodyOverCap(over_the_limit(max_bytes))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BodyOverCap(over_the_limit(max_bytes))
    return bytes(body)


async def capped_json(request: Any, max_bytes: int) -> Any:
    """:func:`capped_body`, decoded as JSON (``ValueError`` when it is not)."""
    return json.loads(await capped_body(request, max_bytes))
