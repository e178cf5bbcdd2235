"""The page: Gradio components laid out, and the events of retrieval/ui/handlers.py bound to them.

Per-user state is the app's, not Gradio's: each event finds its tab's DrawingSession in the
:class:`~retrieval.ui.sessions.SessionTable` by the server-issued ``es_session`` cookie and the
tab (Gradio's ``session_hash``, meaningful only inside that identity). The handlers return an
:class:`~retrieval.ui.handlers.Update`; :meth:`Page.show` turns it into component updates.
Strokes do not come through Gradio: the canvas posts them to the app's route
(retrieval/ui/stroke_route.py) and calls the ``trial_check`` event only when a trial ends or its time is up.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from retrieval.provenance import PROJECT_ROOT
from retrieval.study.plan import StudyConfig
from retrieval.ui.backend import Backend
from retrieval.ui.config import AppConfig
from retrieval.ui.drawing_session import DrawingSession
from retrieval.ui.guards import api_enabled, rank_slots
from retrieval.ui.handlers import Handlers, Update, UserError, default_session_id
from retrieval.ui.sessions import TOKENS, SessionLimitError, SessionTable, SessionTokens, cookie_value

UI = PROJECT_ROOT / "assets" / "ui"
PRIVATE = {"api_visibility": "private"}  # UI events are not part of the public API
OUTPUTS = ("canvas", "results", "panel", "give_up", "search", "submit", "next_btn", "consent", "workspace", "done")


def ui_asset(name: str) -> str:
    return (UI / name).read_text(encoding="utf-8")


def header_html(notices: tuple[str, ...]) -> str:
    # Notices quote file names from the photo folder: escaped, they can never become markup.
    notes = "".join(f"<div class='es-notice'>{html.escape(n)}</div>" for n in notices)
    tagline = "Sketch less, find more: the photo you mean rises after every stroke."
    return f"<div class='es-header'><h1>EarlySketch</h1><p>{tagline}</p>{notes}</div>"


def custom_html(name: str, value: dict, **props: Any) -> gr.HTML:
    """One of the page's own components: assets/ui/<name>.html, .css and .js."""
    templates = {"html_template": ui_asset(f"{name}.html"), "css_template": ui_asset(f"{name}.css")}
    return gr.HTML(value=value, js_on_load=ui_asset(f"{name}.js"), elem_id=f"es-{name}", **templates, **props)


@dataclass
class Page:
    """The components the events read or change, and the session table the events look up."""

    table: SessionTable
    consent: gr.Column
    participant: gr.Textbox
    session_id: gr.Textbox
    resume_code: gr.Textbox
    start: gr.Button
    workspace: gr.Row
    panel: gr.HTML
    give_up: gr.Button
    search: gr.Button  # on_request trials: show the results so far
    submit: gr.Button  # after_trial trials: the drawing is finished
    next_btn: gr.Button
    new_target: gr.Button
    canvas: gr.HTML
    target_toggle: gr.Checkbox | None  # free and demo modes only
    results: gr.HTML
    done: gr.Column
    tokens: SessionTokens = TOKENS

    @property
    def outputs(self) -> list[Any]:
        """Every component an event may change (each event lists them all, and changes some)."""
        return [getattr(self, name) for name in OUTPUTS]

    def show(self, update: Update) -> dict:
        """Component updates for ``update`` (never empty: an empty dict would read as ONE output value)."""
        if update.warning:
            gr.Warning(update.warning)
        views = {self.results: update.results, self.panel: update.panel, self.canvas: update.canvas}
        out: dict[Any, Any] = {component: value for component, value in views.items() if value is not None}
        if update.trial_ended is not None:
            out[self.give_up] = gr.Button(visible=not update.trial_ended)
            out[self.next_btn] = gr.Button(visible=update.trial_ended)
            if update.trial_ended:
                out.update({self.search: gr.Button(visible=False), self.submit: gr.Button(visible=False)})
        if update.feedback is not None:  # a trial started: offer what its condition needs
            out[self.search] = gr.Button(visible=update.feedback == "on_request")
            out[self.submit] = gr.Button(visible=update.feedback == "after_trial")
        if update.section == "workspace":
            out.update({self.consent: gr.Column(visible=False), self.workspace: gr.Row(visible=True)})
        elif update.section == "done":
            out.update({self.workspace: gr.Row(visible=False), self.done: gr.Column(visible=True)})
        return out or {self.done: gr.skip()}

    def session_of(self, request: gr.Request, *, starting: bool = False) -> DrawingSession:
        """The tab's session in the app's table (created on its first event).

        Raises:
            gr.Error: no valid ``es_session`` cookie (reload the page), no room in the table, or
                (``starting``) Start pressed too often from this browser or address.
        """
        identity = self.tokens.verify(cookie_value(dict(request.cookies)))
        if identity is None:
            raise gr.Error("This page's session is not known to the server (did it restart?): reload the page.")
        address = request.client.host if request.client else ""
        try:
            session = self.table.tab(identity, address, request.session_hash or "")
        except SessionLimitError as exc:
            raise gr.Error(str(exc)) from exc
        if starting and not self.table.allow_start(identity, address):
            raise gr.Error("Start was pressed too often from this browser: wait a minute and try again.")
        return session

    def bind(self, handler: Callable[..., Update], *, starting: bool = False) -> Callable[..., dict]:
        """A Gradio event function for ``handler`` (whose last argument is the tab's session)."""

        def event(request: gr.Request, *inputs: Any) -> dict:
            session = self.session_of(request, starting=starting)
            try:
                update = handler(*inputs, session)
            except UserError as exc:
                raise gr.Error(str(exc)) from exc
            return self.show(update)

        return event


def consent_section(study: StudyConfig | None) -> dict[str, Any]:
    """Study mode's first screen: what is recorded, the participant and session ids, Start."""
    with gr.Column(visible=study is not None, elem_classes="es-consent") as consent:
        if study is not None:
            limit = max(c.time_limit_s for c in study.conditions)
            each = f", up to {limit:g} s each" if all(c.time_limit_s for c in study.conditions) else ""
            what = (
                f"{study.num_trials} trials{each}. Your strokes and their timing "
                "are recorded for research; no photo or video of you is taken."
            )
            gr.Markdown(f"### {study.name}\n\n{study.instructions}\n\n{what}")
        participant = gr.Textbox(label="Participant id", placeholder="e.g. P07", max_length=64)
        session_id = gr.Textbox(label="Session id", value=default_session_id, max_length=64)
        resume_code = gr.Textbox(
            label="Resume code (only to continue an earlier session: its ids and the code shown then)",
            placeholder="e.g. K7QFM-2XAB9",
            max_length=32,
        )
        start = gr.Button("Start", variant="primary")
    return {
        "consent": consent,
        "participant": participant,
        "session_id": session_id,
        "resume_code": resume_code,
        "start": start,
    }


def workspace_section(config: AppConfig, k: int) -> dict[str, Any]:
    """Target panel and buttons, the canvas, the results (hidden in a study until Start)."""
    study_mode, demo_mode = config.mode == "study", config.mode == "demo"
    with gr.Row(visible=not study_mode, equal_height=False, elem_classes="es-workspace") as workspace:
        with gr.Column(scale=3, min_width=220):
            panel = custom_html("panel", {})
            with gr.Row():
                search = gr.Button("Search", visible=False, variant="primary")
                submit = gr.Button("Done", visible=False, variant="primary")
                give_up = gr.Button("Give up", visible=study_mode, variant="secondary")
                next_btn = gr.Button("Next trial", visible=False, variant="primary")
                new_target = gr.Button("New challenge", visible=not study_mode, variant="secondary")
        with gr.Column(scale=6 if demo_mode else 4, min_width=320):
            idle_reset_s = config.idle_reset_s if demo_mode else 0
            canvas = custom_html("canvas", {}, idle_reset_s=idle_reset_s, compact_on_clear=not study_mode)
            target_toggle = None
            if not study_mode:
                target_toggle = gr.Checkbox(label="Challenge: find a random target", value=config.challenge)
        with gr.Column(scale=5, min_width=320):
            results = custom_html("results", {"k": k})
    return {
        "workspace": workspace,
        "panel": panel,
        "give_up": give_up,
        "search": search,
        "submit": submit,
        "next_btn": next_btn,
        "new_target": new_target,
        "canvas": canvas,
        "target_toggle": target_toggle,
        "results": results,
    }


def bind_events(app: gr.Blocks, page: Page, handlers: Handlers, config: AppConfig) -> None:
    outputs = page.outputs
    if config.mode != "study":  # a study page starts on its consent screen: Start renders everything, and
        # a load event finishing after a quick Start would paint a session-less panel over the trial
        app.load(page.bind(handlers.load), None, outputs, show_progress="hidden", **PRIVATE)
    # Strokes go to the app's route; the canvas asks here when a trial ended or its time ran out.
    page.canvas.trial_check(page.bind(handlers.sync), None, outputs, show_progress="hidden", **PRIVATE)
    if config.mode == "study":
        inputs = [page.participant, page.session_id, page.resume_code]
        page.start.click(page.bind(handlers.start, starting=True), inputs, outputs, **PRIVATE)
        page.give_up.click(page.bind(handlers.give_up), [page.canvas], outputs, **PRIVATE)
        # Search and Done name the trial the canvas shows, as Give up does (a repeat changes nothing)
        page.search.click(page.bind(handlers.search), [page.canvas], outputs, **PRIVATE)
        page.submit.click(page.bind(handlers.submit), [page.canvas], outputs, **PRIVATE)
        page.next_btn.click(page.bind(handlers.next_trial), [page.canvas], outputs, **PRIVATE)
    else:
        challenge = page.bind(lambda session: handlers.new_target(True, session))
        idle = page.bind(lambda session: handlers.new_target(config.challenge, session))
        page.new_target.click(challenge, None, outputs, **PRIVATE)
        page.target_toggle.change(page.bind(handlers.new_target), [page.target_toggle], outputs, **PRIVATE)
        page.canvas.idle(idle, None, outputs, **PRIVATE)


def add_rank_api(handlers: Handlers, config: AppConfig) -> None:
    def rank(sketch: str, k: int = 10, target_id: str | None = None) -> dict:
        """Rank the gallery for a sketch in the stroke JSON format (see docs/app.md).

        Returns ``{"ids", "scores", "target_rank", "timings_ms", "gallery_size"}``.
        """
        try:
            return handlers.rank(sketch, k, target_id)
        except UserError as exc:
            raise gr.Error(str(exc)) from exc

    # Outside free mode the API gets its own single slot, so scripted calls cannot crowd out the
    # strokes of people drawing.
    limit, group = (rank_slots(config), "rank") if config.mode == "free" else (1, "api")
    gr.api(rank, api_name="rank", concurrency_limit=limit, concurrency_id=group)


def build_app(
    config: AppConfig, backend: Backend, table: SessionTable, study: StudyConfig | None = None
) -> tuple[gr.Blocks, Handlers]:
    """The Blocks app for ``config``, ranking with ``backend``, its sessions in ``table``; and the
    handlers, which the app's stroke route shares (``study``: loaded from ``config.study`` if not given)."""
    if study is None and config.mode == "study":
        study = StudyConfig.load(config.study)
    handlers = Handlers(config, backend, study)
    with gr.Blocks(title="EarlySketch", fill_width=True) as app:
        gr.HTML(header_html(backend.notices))
        consent = consent_section(study)
        workspace = workspace_section(config, handlers.k)
        with gr.Column(visible=False) as done:
            gr.Markdown("## Thank you!\n\nThe session is complete and saved. You can close this tab.")
        page = Page(table=table, done=done, **consent, **workspace)
        bind_events(app, page, handlers, config)
        if api_enabled(config):
            add_rank_api(handlers, config)
    return app, handlers
