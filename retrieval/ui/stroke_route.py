"""The app's own routes, under ``/es/``: the stroke path, outside Gradio's queue.

``POST /es/stroke`` takes one stroke batch from the canvas (format: retrieval/study/payload.py),
finds the tab's session by the server-issued identity (retrieval/ui/sessions.py) and the batch's
trial token, and answers a :class:`~retrieval.ui.contract.StrokeAnswer` as JSON. The route is
glue: reading the capped body, then parsing, logging and ranking in a worker thread
(:meth:`retrieval.ui.handlers.Handlers.stroke`), so the event loop only moves bytes.

Statuses: 200 (also when the ranker failed: the strokes are logged), 400 malformed, 401 no valid
``es_session`` cookie (reload the page), 409 out of sync (the answer says what the server holds),
410 the trial or page is over, 413 body or quota over its limit, 503 the study log refused the write.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from retrieval.serving.body_cap import BodyOverCap, capped_body
from retrieval.study.payload import CanvasPayloadError, parse_stroke_batch
from retrieval.study.sketch_state import SyncError
from retrieval.ui.handlers import Handlers
from retrieval.ui.sessions import SessionTable, request_identity

PREFIX = "/es/"
MAX_STROKE_BODY_BYTES = 2_000_000
"""A batch's body: 60 events, the canvas's 9,000-point strokes at ~30 bytes a point fill ~270 kB
each; honest batches carry one or two strokes."""
NO_STORE = {"cache-control": "no-store"}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers=NO_STORE)


def stroke_routes(handlers: Handlers, table: SessionTable) -> list[Route]:
    """The ``/es/`` routes for ``handlers`` and the session ``table``."""

    def handle(identity: str, body: bytes) -> tuple[int, dict]:
        trial, session = "", None  # what the history check looked up: parsing needs no second lookup

        def check_history(token: str, base: int, chain: str, chains: tuple[str, ...]) -> None:
            nonlocal trial, session
            trial, session = token, table.by_token(identity, token)
            if session is not None:
                session.check_history(token, base, chain, chains)

        try:
            batch = parse_stroke_batch(body, check_history)
        except SyncError as exc:  # a replayed or rewritten journal: refused before its events were parsed
            return 409, handlers.out_of_sync(trial, exc)
        except CanvasPayloadError as exc:
            return 400, {"error": f"Could not read the drawing: {exc}"}
        if session is None:
            return 410, {"error": "this canvas belongs to a trial or page that is over: reload the page"}
        return handlers.stroke(batch, session)

    async def stroke(request: Request) -> JSONResponse:
        identity = request_identity(request.scope)
        if identity is None:
            return _error(401, "this page's session is not known to the server: reload the page")
        try:
            body = await capped_body(request, MAX_STROKE_BODY_BYTES)
        except BodyOverCap:
            return _error(413, f"a stroke batch is at most {MAX_STROKE_BODY_BYTES} bytes")
        status, answer = await run_in_threadpool(handle, identity, body)
        return JSONResponse(answer, status, headers=NO_STORE)

    return [Route(PREFIX + "stroke", stroke, methods=["POST"])]
