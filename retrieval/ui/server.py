"""Serve the app: load the backend, build the page, start Gradio behind the request guards."""

from __future__ import annotations

import threading
import time

import gradio as gr
import gradio.http_server
from starlette.middleware import Middleware

from retrieval.study.plan import StudyConfig
from retrieval.ui.backend import Backend, load_backend
from retrieval.ui.blocks import build_app, ui_asset
from retrieval.ui.config import AppConfig
from retrieval.ui.guards import api_enabled, middleware
from retrieval.ui.sessions import IssueSessionCookie, SessionTable, request_identity
from retrieval.ui.stroke_route import stroke_routes

THUMBNAILS_BEFORE_SERVING = 20_000  # ~10 ms each on 2 cores: at most a few minutes of start-up, once per gallery
SYSTEM_FONTS = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
SERVER_START_WAIT_S = 120.0


class PatientServer(gradio.http_server.Server):
    """Gradio's uvicorn server, given ``start_wait_s`` to start instead of Gradio 6's hard-coded 5 s.

    Past those 5 s Gradio gives up with "Cannot find empty port" whatever the port, and the server
    thread it started keeps running: on a busy 2-core machine (a study laptop that is also embedding,
    CI) ``make run`` then failed although nothing was wrong. A server that has not started within
    ``start_wait_s`` is told to exit and reported with its real cause.
    """

    start_wait_s: float = SERVER_START_WAIT_S

    def run_in_thread(self) -> None:
        if self.reloader:  # `gradio app.py` reload mode: Gradio's own start (and its watcher thread)
            return super().run_in_thread()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + self.start_wait_s
        while not self.started:
            if not self.thread.is_alive():  # uvicorn exits when it cannot bind: the port is taken
                raise gradio.http_server.ServerFailedToStartError("the server stopped while starting (port taken?)")
            if time.monotonic() > deadline:
                self.should_exit = True
                raise gradio.http_server.ServerFailedToStartError(
                    f"the server did not start within {self.start_wait_s:.0f} s (machine overloaded?)"
                )
            time.sleep(0.01)


def launch(config: AppConfig, backend: Backend | None = None) -> None:
    """Serve until interrupted. Offline and private: system fonts, no run history, monitoring or MCP."""
    study = StudyConfig.load(config.study) if config.mode == "study" else None  # a bad config fails before loading
    backend = backend or load_backend(config, study.models_used() if study else None)
    table = SessionTable(config.mode)
    app, handlers = build_app(config, backend, table, study)
    # Thumbnails before serving: made while people draw, the first results of a fresh install cost
    # 3x the CPU per stroke and a p95 of ~2 s at 50 sessions (bench/results/stroke_route.md, run 0
    # before this). A gallery too large to wait for gets its first photos now, the rest in the background.
    backend.warm_thumbnails(backend.ids[:THUMBNAILS_BEFORE_SERVING], progress=True)
    if len(backend.ids) > THUMBNAILS_BEFORE_SERVING:
        rest = backend.ids[THUMBNAILS_BEFORE_SERVING:]
        threading.Thread(
            target=backend.warm_thumbnails, args=(rest,), kwargs={"pause_s": 0.005}, name="thumbnails", daemon=True
        ).start()
    gradio.http_server.Server = PatientServer  # start_server looks the class up in its module at call time
    theme = gr.themes.Soft(primary_hue="blue", font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    auth = tuple(config.auth.split(":", 1)) if config.auth else None
    app.queue(default_concurrency_limit=config.concurrency, max_size=config.max_queue).launch(
        server_name=config.host,
        server_port=config.port,
        share=config.share,
        auth=auth,
        max_file_size=config.max_file_size,
        allowed_paths=[str(backend.thumbs.folder)],  # thumbnails only: the photo folder is never served
        theme=theme,
        css=ui_asset("app.css"),
        footer_links=["api"] if api_enabled(config) else [],
        run_history=False,
        enable_monitoring=False,
        show_error=False,  # no tracebacks or server paths on the page; gr.Error texts still show
        ssr_mode=False,
        mcp_server=False,
        favicon_path=None,
        # The app's routes come first in the router; the page load issues the session cookie, which
        # the rate limit charges (with the address) through request_identity.
        app_kwargs={
            "middleware": [
                *middleware(config, backend.thumbs.folder, identity=request_identity),
                Middleware(IssueSessionCookie),
            ],
            "routes": stroke_routes(handlers, table),
        },
    )
