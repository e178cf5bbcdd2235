"""What the app lets in: the public API switch, the per-tab rate limit, the ranking slots and the
request guards that run in front of Gradio (retrieval/serving/request_limits.py)."""

from __future__ import annotations

from starlette.middleware import Middleware

from retrieval.serving.request_limits import BlockedPaths, BodySizeLimit, RateLimit, StructuredInputLimit
from retrieval.ui.config import AppConfig

# Routes that call named endpoints; the page itself only uses the queue routes.
API_ROUTES = ("/gradio_api/call/", "/gradio_api/run/", "/gradio_api/api/")
EVENT_ROUTES = ("/gradio_api/queue/join",)  # where the page sends UI events
MAX_STRUCTURED_INPUT_BYTES = 64_000  # the page sends only scalars and text: nested inputs are never large


def api_enabled(config: AppConfig) -> bool:
    """The public ``rank`` endpoint: on in free mode, off in study and demo unless ``--api on``."""
    return config.api == "on" or (config.api == "auto" and config.mode == "free")


def rate_limited(config: AppConfig) -> bool:
    """The per-tab rate limit: on in study and demo, off in free mode unless ``--rate-limit on``."""
    return config.rate_limit == "on" or (config.rate_limit == "auto" and config.mode != "free")


def rank_slots(config: AppConfig) -> int:
    """Ranking events Gradio runs at once. With batching, enough callers must be inside the batcher
    for its ``concurrency`` workers to fill batches; they wait there, not in Gradio's queue."""
    return config.concurrency * max(1, config.batch)


def middleware(config: AppConfig) -> list[Middleware]:
    """Request guards in front of Gradio, outermost first, cheapest refusals first: the body cap, with
    the API off a plain 404 for its routes, the per-tab rate limit, the nested-input cap."""
    guards = [Middleware(BodySizeLimit, max_bytes=config.max_body_bytes)]
    if not api_enabled(config):
        message = f"the API is off in {config.mode} mode (start the app with --api on)"
        guards.append(Middleware(BlockedPaths, prefixes=API_ROUTES, message=message))
    if rate_limited(config):
        limit = {"per_s": config.rate_limit_per_s, "burst": config.rate_limit_burst}
        guards.append(Middleware(RateLimit, paths=EVENT_ROUTES + API_ROUTES, **limit))
    guards.append(Middleware(StructuredInputLimit, paths=EVENT_ROUTES, max_bytes=MAX_STRUCTURED_INPUT_BYTES))
    return guards
