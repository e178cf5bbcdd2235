"""EarlySketch web app: draw, and after every stroke the gallery is re-ranked.

Modes (``--mode`` or ``EARLYSKETCH_MODE``): ``free`` (default: free drawing on the default
gallery), ``study`` (user study from a JSON config, every stroke logged to disk) and ``demo``
(kiosk: big canvas, target challenge, reset after idle). Every flag also reads an environment
variable ``EARLYSKETCH_<FLAG>``. The named API endpoint ``rank`` takes a sketch in the stroke
JSON format; see docs/app.md. This file only wires the UI to ``retrieval/``: the views are
``retrieval.ui.views.py``, the per-stroke work ``Retriever.rank``, the trial logic ``retrieval.study.session`` and
the log ``retrieval.study.log``.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no version check
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import html  # noqa: E402
import secrets  # noqa: E402
import threading  # noqa: E402
from dataclasses import dataclass, field, fields  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from retrieval.data.formats.stroke_json import StrokePayloadError, parse_stroke_json  # noqa: E402
from retrieval.serving.request_limits import (  # noqa: E402
    RATE_BURST,
    RATE_PER_S,
    BlockedPaths,
    BodySizeLimit,
    RateLimit,
    StructuredInputLimit,
)
from retrieval.study.log import SessionExistsError, StudyLog  # noqa: E402
from retrieval.study.session import DrawingSession, StudyConfig  # noqa: E402
from retrieval.ui.backend import Backend, load_backend  # noqa: E402
from retrieval.ui.views import canvas_value, panel_view, results_view  # noqa: E402

ROOT = Path(__file__).resolve().parent
UI = ROOT / "assets" / "ui"
SYSTEM_FONTS = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
THUMB_SIZE = 224


@dataclass
class AppConfig:
    """Command-line / environment configuration of the app (flag ``--x-y`` = env ``EARLYSKETCH_X_Y``)."""

    mode: str = "free"  # free | study | demo
    model: Path = ROOT / "assets" / "model"  # checkpoint folder; random-init model (with a warning) if missing
    gallery: str = ""  # gallery spec (dataset spec, QMUL folder, photo folder); default procedural
    gallery_size: int = 1000  # photos of the default procedural gallery
    photos: str = ""  # any folder of photos (indexed with the model's photo branch, cached)
    study: str = ""  # study config JSON (study mode)
    log_dir: Path = Path("study_logs")  # one JSONL file per study session
    k: int = 12  # photos shown after each stroke
    idle_reset_s: float = 90.0  # demo mode: clear the canvas after this many idle seconds
    challenge: bool = True  # demo/free: start with a random target to find
    host: str = "127.0.0.1"  # bind address; 0.0.0.0 exposes the app on the network
    port: int = 7860
    share: bool = False  # public gradio.live link (opt-in)
    auth: str = ""  # "user:pass" required to open the app
    max_file_size: str = "10mb"
    cache_dir: str = ""  # gallery/index/thumbnail cache (default ~/.cache/earlysketch)
    threads: int = 1  # torch + faiss threads per ranking job (measured: 1 beats 2 under concurrent sessions)
    concurrency: int = 2  # ranking jobs run at once (across sessions)
    batch: int = 8  # most concurrent strokes encoded in one forward (1 = no cross-session batching)
    api: str = "auto"  # the public `rank` endpoint: auto (on in free mode, off in study/demo) | on | off
    api_diagnostics: bool = False  # add `batch_size` (how many sessions shared the forward) to API answers
    max_queue: int = 128  # events waiting in the server's queue, all sessions together; more are refused
    max_body_bytes: int = 4_000_000  # HTTP request body cap (a 50k-point canvas journal is ~2 MB)
    rate_limit: str = "auto"  # per-tab event rate limit: auto (on in study/demo, off in free) | on | off
    rate_limit_burst: int = RATE_BURST  # events a tab may send in a row (retrieval/serving/request_limits.py: why 40)
    rate_limit_per_s: float = RATE_PER_S  # events a second a tab may keep sending after its burst
    serve_url: str = ""  # rank on a Ray Serve app (make serve-cluster), e.g. http://127.0.0.1:8000; "" = in process
    warnings: list[str] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> AppConfig:
    """Flags override ``EARLYSKETCH_*`` environment variables, which override the defaults."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(AppConfig):
        if f.name == "warnings":
            continue
        flag, env = "--" + f.name.replace("_", "-"), os.environ.get("EARLYSKETCH_" + f.name.upper())
        default = f.default if env is None else env
        if f.type == "bool":
            default = default if isinstance(default, bool) else default.lower() in ("1", "true", "yes")
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = {"int": int, "float": float, "Path": Path}.get(f.type, str)
            parser.add_argument(flag, type=kind, default=kind(default), choices=_CHOICES.get(f.name))
    args = parser.parse_args(argv)
    config = AppConfig(**vars(args))
    if config.mode == "study" and not config.study:
        parser.error("--mode study needs --study CONFIG.json (e.g. assets/study_example.json)")
    if config.auth and ":" not in config.auth:
        parser.error("--auth must be user:pass")
    if not config.rate_limit_per_s > 0 or config.rate_limit_burst < 1:
        parser.error("--rate-limit-per-s must be > 0 and --rate-limit-burst >= 1 (turn it off with --rate-limit off)")
    return config


_CHOICES = {"mode": ["free", "study", "demo"], "api": ["auto", "on", "off"], "rate_limit": ["auto", "on", "off"]}


def _ui(name: str) -> str:
    return (UI / name).read_text(encoding="utf-8")


def build_app(config: AppConfig, backend: Backend) -> gr.Blocks:
    """The Blocks app; all per-user state lives in one ``gr.State`` (a DrawingSession)."""
    study = StudyConfig.load(config.study) if config.mode == "study" else None
    k = study.show_k if study else config.k
    demo_mode, study_mode = config.mode == "demo", config.mode == "study"
    found_k = study.found_k if study else 1

    def tab_session(session: DrawingSession | None) -> DrawingSession:
        """The tab's session, created by the first event that needs one (see ``state``)."""
        return session if session is not None else DrawingSession(mode=config.mode)

    def random_target() -> str:
        return backend.ids[int.from_bytes(os.urandom(4), "little") % len(backend.ids)]

    with gr.Blocks(title="EarlySketch", fill_width=True) as app:
        # No callable default: it would get its own load event, which races app.load and can replace
        # the session on_load set up (every stroke of the tab then ignored). Handlers call tab_session.
        state = gr.State(None)
        # Notices quote file names from the photo folder: escaped, they can never become markup.
        notes = "".join(f"<div class='es-notice'>{html.escape(n)}</div>" for n in backend.notices)
        gr.HTML(f"<div class='es-header'><h1>EarlySketch</h1><p>Sketch less, find more: the photo you mean rises "
                f"after every stroke.</p>{notes}</div>")  # fmt: skip
        with gr.Column(visible=study_mode, elem_classes="es-consent") as consent:
            if study_mode:
                gr.Markdown(f"### {study.name}\n\n{study.instructions}\n\n"
                            f"{study.num_trials} trials, up to {study.time_limit_s:g} s each. Your strokes and "
                            "their timing are recorded for research; no photo or video of you is taken.")  # fmt: skip
            participant = gr.Textbox(label="Participant id", placeholder="e.g. P07", max_length=64)
            session_id = gr.Textbox(label="Session id", value=default_session_id, max_length=64)
            resume = gr.Checkbox(label="Continue this session (append to its existing log)", value=False)
            start = gr.Button("Start", variant="primary")
        with gr.Row(visible=not study_mode, equal_height=False, elem_classes="es-workspace") as workspace:
            with gr.Column(scale=3, min_width=220):
                panel = gr.HTML(value={}, html_template=_ui("panel.html"), css_template=_ui("panel.css"),
                                js_on_load=_ui("panel.js"), elem_id="es-panel")  # fmt: skip
                with gr.Row():
                    give_up = gr.Button("Give up", visible=study_mode, variant="secondary")
                    next_btn = gr.Button("Next trial", visible=False, variant="primary")
                    new_target = gr.Button("New challenge", visible=not study_mode, variant="secondary")
            with gr.Column(scale=6 if demo_mode else 4, min_width=320):
                canvas = gr.HTML(value={}, html_template=_ui("canvas.html"), css_template=_ui("canvas.css"),
                                 js_on_load=_ui("canvas.js"), elem_id="es-canvas",
                                 idle_reset_s=config.idle_reset_s if demo_mode else 0,
                                 compact_on_clear=not study_mode)  # fmt: skip
                if not study_mode:
                    target_toggle = gr.Checkbox(label="Challenge: find a random target", value=config.challenge)
            with gr.Column(scale=5, min_width=320):
                results = gr.HTML(value={"k": k}, html_template=_ui("results.html"), css_template=_ui("results.css"),
                                  js_on_load=_ui("results.js"), elem_id="es-results")  # fmt: skip
        with gr.Column(visible=False) as done:
            gr.Markdown("## Thank you!\n\nThe session is complete and saved. You can close this tab.")

        def view(session, banner="", kind="", locked=False, message="", fresh_canvas=False):
            out = {
                state: session,
                results: results_view(backend, session, k),
                panel: panel_view(backend, session, banner, kind),
            }
            if fresh_canvas or locked:
                out[canvas] = canvas_value(session, locked, message)
            return out

        def on_load(session: DrawingSession | None):
            session = tab_session(session)
            if study_mode:  # Start creates the study's session and canvas: nothing written here can race it
                return {out: value for out, value in view(session).items() if out is not state}
            session.new_sketch(random_target() if config.challenge else None)
            return view(session, fresh_canvas=True)

        def end_updates(session: DrawingSession) -> dict:
            """UI after a trial ended: banner, lock the canvas, offer the next trial."""
            seconds = session.elapsed_s()
            if session.phase == "found":
                text = (
                    f"Found it in {session.strokes_drawn} stroke{'s' * (session.strokes_drawn != 1)} ({seconds:.1f} s)!"
                )
                out = view(session, text, "found", locked=True, message="Found! Press Next trial")
            else:
                text = "Time is up." if session.phase == "timed_out" else "Trial skipped."
                out = view(session, text, "miss", locked=True, message=text + " Press Next trial")
            return {**out, give_up: gr.Button(visible=False), next_btn: gr.Button(visible=True)}

        def on_stroke(value, session: DrawingSession | None):
            if session is None:  # ink before the page loaded: the canvas sends it again with its trial token
                return {state: session}
            with session.lock:  # one ordered event stream per session, whatever the concurrency groups
                return stroke_updates(value, session)

        def stroke_updates(value, session: DrawingSession):
            phase = session.phase
            try:
                changed = session.update(value, lambda sketch, target: backend.rank(sketch, target, max(k, found_k)))
            except ValueError as exc:  # a malformed or oversized canvas payload: report it, keep serving
                gr.Warning(f"Could not read the drawing: {exc}")
                return {state: session}  # an empty dict would read as ONE output value and fail the event
            except OSError as exc:  # the study log refused a write (disk full): say so, keep the session
                print(f"error: study log write failed: {exc}", flush=True)
                gr.Warning("Could not save this stroke to the study log: please tell the experimenter.")
                return {state: session}
            if study_mode and session.phase != phase:
                return end_updates(session)
            if not changed:
                return {state: session}
            out = view(session)
            last = session.last
            if not study_mode and session.target_id and last is not None and last.target_rank == 1:
                n = session.strokes_drawn
                out[panel] = panel_view(backend, session, f"Found it in {n} stroke{'s' * (n != 1)}!", "found")
            return out

        def on_start(pid: str, sid: str, resume_log: bool, session: DrawingSession | None):
            session = tab_session(session)
            common = {"mode": "study", "code_version": backend.code_version, "model_hash": backend.model_hash}
            try:
                log = StudyLog.create(config.log_dir, pid, sid, common, resume=bool(resume_log))
            except SessionExistsError as exc:
                raise gr.Error(f"{exc} (tick 'Continue this session' to append to it).") from exc
            except ValueError as exc:
                raise gr.Error(f"Please check the participant id and the session id: {exc}.") from exc
            except OSError as exc:  # the path is for the operator's console, not the participant's page
                print(f"error: cannot create the study log in {config.log_dir}: {exc}", flush=True)
                raise gr.Error("The study log cannot be written on the server: please tell the experimenter.") from exc
            session.begin_study(study, log, list(backend.ids), {"gallery": backend.gallery.source,
                                                                 "gallery_size": len(backend.ids)})  # fmt: skip
            return {**view(session, fresh_canvas=True), consent: gr.Column(visible=False),
                    workspace: gr.Row(visible=True)}  # fmt: skip

        def on_give_up(session: DrawingSession):
            with session.lock:
                session.end_trial("gave_up")
                return end_updates(session)

        def on_next(session: DrawingSession):
            with session.lock:  # a stroke being ranked finishes (and is logged) under its own trial first
                if session.next_trial() is None:
                    return {state: session, workspace: gr.Row(visible=False), done: gr.Column(visible=True)}
                return {**view(session, fresh_canvas=True), give_up: gr.Button(visible=True),
                        next_btn: gr.Button(visible=False)}  # fmt: skip

        def on_new_target(enabled: bool, session: DrawingSession | None):
            session = tab_session(session)
            session.new_sketch(random_target() if enabled else None)
            return view(session, fresh_canvas=True)

        all_out = [state, canvas, results, panel, give_up, next_btn, consent, workspace, done]
        app.load(on_load, [state], all_out, show_progress="hidden", api_visibility="private")
        canvas.stroke_end(on_stroke, [canvas, state], all_out, trigger_mode="always_last", show_progress="hidden",
                          concurrency_limit=rank_slots(config), concurrency_id="rank", api_visibility="private")  # fmt: skip
        if study_mode:
            start.click(on_start, [participant, session_id, resume, state], all_out, api_visibility="private")
            give_up.click(on_give_up, [state], all_out, api_visibility="private")
            next_btn.click(on_next, [state], all_out, api_visibility="private")
        else:
            reset_inputs = [target_toggle, state]
            new_target.click(lambda s: on_new_target(True, s), [state], all_out, api_visibility="private")
            target_toggle.change(on_new_target, reset_inputs, all_out, api_visibility="private")
            canvas.idle(lambda s: on_new_target(config.challenge, s), [state], all_out, api_visibility="private")

        def rank(sketch: str, k: int = 10, target_id: str | None = None) -> dict:
            """Rank the gallery for a sketch in the stroke JSON format (see docs/app.md).

            Returns ``{"ids", "scores", "target_rank", "timings_ms", "gallery_size"}``.
            """
            try:
                parsed = parse_stroke_json(sketch)
            except (StrokePayloadError, ValueError, TypeError) as exc:
                raise gr.Error(f"Invalid sketch: {exc}") from exc
            if type(k) is not int or not 1 <= k <= 1000:
                raise gr.Error(f"k must be an integer between 1 and 1000, got {str(k)[:20]!r}")
            if target_id is not None and (type(target_id) is not str or target_id not in backend.gallery.index):
                raise gr.Error(f"target_id {str(target_id)[:80]!r} is not a photo id of the gallery")
            result = backend.rank(parsed, target_id, k)
            answer = {"ids": list(result.ids), "scores": [float(s) for s in result.scores],
                      "target_rank": result.target_rank, "gallery_size": len(backend.ids),
                      "timings_ms": {n: v for n, v in result.timings_ms.items() if n != "queue"}}  # fmt: skip
            if config.api_diagnostics:  # other sessions' activity: only when the operator asks for it
                answer.update(batch_size=result.batch_size, timings_ms=dict(result.timings_ms))
            return answer

        if api_enabled(config):
            # Outside free mode the API gets its own single slot, so scripted calls cannot crowd out
            # the strokes of people drawing.
            limit, group = (rank_slots(config), "rank") if config.mode == "free" else (1, "api")
            gr.api(rank, api_name="rank", concurrency_limit=limit, concurrency_id=group)
    return app


def api_enabled(config: AppConfig) -> bool:
    """The public ``rank`` endpoint: on in free mode, off in study and demo unless ``--api on``."""
    return config.api == "on" or (config.api == "auto" and config.mode == "free")


def rate_limited(config: AppConfig) -> bool:
    """The per-tab rate limit: on in study and demo, off in free mode unless ``--rate-limit on``."""
    return config.rate_limit == "on" or (config.rate_limit == "auto" and config.mode != "free")


def default_session_id() -> str:
    """Date, time and 16 random bits: two participants starting in the same second still differ."""
    return datetime.now().strftime("S%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def rank_slots(config: AppConfig) -> int:
    """Ranking events Gradio runs at once. With batching, enough callers must be inside the batcher
    for its ``concurrency`` workers to fill batches; they wait there, not in Gradio's queue."""
    return config.concurrency * max(1, config.batch)


# Routes that call named endpoints; the page itself only uses the queue routes.
API_ROUTES = ("/gradio_api/call/", "/gradio_api/run/", "/gradio_api/api/")
EVENT_ROUTES = ("/gradio_api/queue/join",)  # where the page sends UI events
MAX_STRUCTURED_INPUT_BYTES = 64_000  # the page sends only scalars and text: nested inputs are never large


def middleware(config: AppConfig) -> list[Middleware]:
    """Request guards in front of Gradio, outermost first, cheapest refusals first: the body cap, with
    the API off a plain 404 for its routes, the per-tab rate limit, the nested-input cap."""
    guards = [Middleware(BodySizeLimit, max_bytes=config.max_body_bytes)]
    if not api_enabled(config):
        guards.append(Middleware(BlockedPaths, prefixes=API_ROUTES,
                                 message=f"the API is off in {config.mode} mode (start the app with --api on)"))  # fmt: skip
    if rate_limited(config):
        guards.append(Middleware(RateLimit, paths=EVENT_ROUTES + API_ROUTES, per_s=config.rate_limit_per_s,
                                 burst=config.rate_limit_burst))  # fmt: skip
    guards.append(Middleware(StructuredInputLimit, paths=EVENT_ROUTES, max_bytes=MAX_STRUCTURED_INPUT_BYTES))
    return guards


def launch(config: AppConfig, backend: Backend | None = None) -> None:
    backend = backend or load_backend(config)
    app = build_app(config, backend)
    threading.Thread(target=backend.warm_thumbnails, name="thumbnails", daemon=True).start()
    theme = gr.themes.Soft(primary_hue="blue", font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    auth = tuple(config.auth.split(":", 1)) if config.auth else None
    app.queue(default_concurrency_limit=config.concurrency, max_size=config.max_queue).launch(
        server_name=config.host, server_port=config.port, share=config.share, auth=auth,
        max_file_size=config.max_file_size, allowed_paths=[str(backend.thumbs.folder)], theme=theme, css=_ui("app.css"),
        footer_links=["api"] if api_enabled(config) else [], run_history=False, enable_monitoring=False,
        show_error=False, ssr_mode=False, mcp_server=False, favicon_path=None,  # gr.Error texts still show
        app_kwargs={"middleware": middleware(config)},
    )  # fmt: skip


if __name__ == "__main__":
    launch(parse_args())
