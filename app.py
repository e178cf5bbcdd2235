"""EarlySketch web app: draw, and after every stroke the gallery is re-ranked.

Modes (``--mode`` or ``EARLYSKETCH_MODE``): ``free`` (default: free drawing on the default
gallery), ``study`` (user study from a JSON config, every stroke logged to disk) and ``demo``
(kiosk: big canvas, target challenge, reset after idle). Every flag also reads an environment
variable ``EARLYSKETCH_<FLAG>``. The named API endpoint ``rank`` takes a sketch in the stroke
JSON format; see docs/app.md. This file only wires the UI to ``retrieval/``: the per-stroke work
is ``Retriever.rank``, the trial logic ``retrieval.study`` and the log ``retrieval.study_log``.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no version check
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field, fields  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from retrieval.batching import RankBatcher  # noqa: E402
from retrieval.encoder import Encoder  # noqa: E402
from retrieval.formats.stroke_json import StrokePayloadError, parse_stroke_json  # noqa: E402
from retrieval.gallery import Gallery, default_cache_dir, model_hash, open_gallery  # noqa: E402
from retrieval.index import set_faiss_threads  # noqa: E402
from retrieval.retriever import Retriever  # noqa: E402
from retrieval.serve_client import ServeRanker  # noqa: E402
from retrieval.sketch import Sketch  # noqa: E402
from retrieval.study import DrawingSession, StudyConfig  # noqa: E402
from retrieval.study_log import StudyLog  # noqa: E402

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
    return config


_CHOICES = {"mode": ["free", "study", "demo"]}


# --- backend: loaded once, read-only afterwards (no per-user state) ------------------------------
@dataclass(frozen=True)
class Backend:
    retriever: Retriever
    ranker: Retriever | RankBatcher | ServeRanker  # the per-stroke call (RankBatcher: shared forwards)
    gallery: Gallery
    ids: tuple[str, ...]
    thumbs: Path
    model_hash: str
    code_version: str
    notices: tuple[str, ...]

    def thumb_url(self, photo_id: str) -> str:
        """URL of a cached JPEG thumbnail (made on first use; only this folder is served)."""
        path = self.thumbs / (hashlib.sha1(photo_id.encode()).hexdigest()[:24] + ".jpg")
        if not path.exists():
            img = Image.fromarray(self.gallery.load_photo(photo_id)).convert("RGB")
            img.thumbnail((THUMB_SIZE, THUMB_SIZE))
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            img.save(tmp, "JPEG", quality=88)
            tmp.replace(path)  # atomic: a concurrent reader never sees half a file
        return f"gradio_api/file={path}"

    def warm_thumbnails(self) -> None:
        """Make every thumbnail ahead of time (background thread), so first results show at once."""
        for photo_id in self.ids:
            try:
                self.thumb_url(photo_id)
            except (OSError, ValueError) as exc:
                print(f"warning: no thumbnail for {photo_id}: {exc}", flush=True)
            time.sleep(0.005)  # leave the cores to the people drawing

    def rank(self, sketch, target_id: str | None, k: int):
        return self.ranker.rank(sketch, k=k, target_id=target_id)


def code_version() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=ROOT, capture_output=True,
                             text=True, timeout=5)  # fmt: skip
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_backend(config: AppConfig) -> Backend:
    """Load the model and open (or build and cache) the gallery index."""
    torch.set_num_threads(max(1, config.threads))
    notices = []
    if (config.model / "model.safetensors").exists():
        # channels_last: x0.94 per stroke at the same m@B (bench/results/encoder_options.md).
        encoder = Encoder.load(config.model, channels_last=True)
    else:
        encoder = Encoder.create(seed=0)
        notices.append(f"No trained model at {config.model}: using an untrained network, so rankings are "
                       "close to random. Train one (see README) or pass --model.")  # fmt: skip
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    spec = config.photos or config.gallery or f"procedural:photos={config.gallery_size}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gallery = open_gallery(encoder, spec, cache_dir)
    # faiss and torch share one OpenMP pool: set the serving threads once the gallery is built.
    set_faiss_threads(config.threads)
    torch.set_num_threads(max(1, config.threads))
    if gallery.skipped:
        notices.append(f"{len(gallery.skipped)} photo(s) skipped: " + "; ".join(gallery.skipped[:3]))
        print("skipped photos:\n  " + "\n  ".join(gallery.skipped), flush=True)
    for w in caught:
        print(f"warning: {w.message}", flush=True)
    thumbs = cache_dir / "thumbs" / hashlib.sha1(gallery.source.encode()).hexdigest()[:16]
    thumbs.mkdir(parents=True, exist_ok=True)
    retriever = Retriever(encoder, gallery.index)
    retriever.rank(Sketch((np.array([[10.0, 10.0, 0.0], [200.0, 180.0, 50.0]]),)), k=1)  # warm-up: first stroke fast
    if config.serve_url:  # the cluster batches (@serve.batch) and searches its shards: docs/scaling.md
        ranker = ServeRanker(config.serve_url)
    else:
        ranker = RankBatcher(retriever, config.batch, workers=config.concurrency) if config.batch > 1 else retriever
    return Backend(retriever, ranker, gallery, tuple(gallery.index.ids), thumbs.resolve(), model_hash(encoder),
                   code_version(), tuple(notices))  # fmt: skip


# --- views: plain dicts rendered by assets/ui/*.js -----------------------------------------------
def results_view(backend: Backend, session: DrawingSession, k: int, message: str = "") -> dict:
    last = session.last
    items = []
    if last is not None:
        items = [{"src": backend.thumb_url(pid), "id": pid, "rank": i + 1, "score": round(float(s), 4),
                  "target": pid == session.target_id} for i, (pid, s) in enumerate(zip(last.ids[:k], last.scores))]  # fmt: skip
    curve = [{"strokes": p.strokes, "rank": p.target_rank, "top1": round(p.top1_score, 4)} for p in session.curve]
    return {
        "items": items, "k": k, "curve": curve, "has_target": session.target_id is not None,
        "target_rank": last.target_rank if last is not None else None, "gallery_size": len(backend.ids),
        "server_ms": round(session.last_server_ms, 1) if last is not None else None,
        "message": message or f"Draw on the canvas: after every stroke the {len(backend.ids)} photos are re-ranked.",
    }  # fmt: skip


def panel_view(backend: Backend, session: DrawingSession, banner: str = "", kind: str = "") -> dict:
    if session.target_id is None:
        return {"title": "Free drawing", "subtitle": "Draw anything: the closest photos appear after every stroke. "
                "Tick the challenge box to get a photo to find.", "banner": banner, "banner_kind": kind}  # fmt: skip
    view = {"target_src": backend.thumb_url(session.target_id), "target_id": session.target_id,
            "banner": banner, "banner_kind": kind}  # fmt: skip
    if session.mode == "study":
        view["title"] = f"Trial {session.trial + 1} of {len(session.plan)}: find this photo"
        limit = session.config.time_limit_s
        view["subtitle"] = session.config.instructions if session.trial == 0 else ""
        if limit and session.phase == "drawing":
            view["remaining_s"] = max(0.0, limit - session.elapsed_s())
    else:
        view["title"] = "Can you find this one?"
        view["subtitle"] = "Draw it: the fewer strokes, the better."
    return view


def canvas_value(session: DrawingSession, locked: bool = False, message: str = "") -> dict:
    remaining = None
    if session.config is not None and session.config.time_limit_s and session.phase == "drawing":
        remaining = max(0.0, session.config.time_limit_s - session.elapsed_s())
    return {"trial": session.token, "locked": locked, "message": message, "deadline_s": remaining}


def _ui(name: str) -> str:
    return (UI / name).read_text(encoding="utf-8")


def build_app(config: AppConfig, backend: Backend) -> gr.Blocks:
    """The Blocks app; all per-user state lives in one ``gr.State`` (a DrawingSession)."""
    study = StudyConfig.load(config.study) if config.mode == "study" else None
    k = study.show_k if study else config.k
    demo_mode, study_mode = config.mode == "demo", config.mode == "study"
    found_k = study.found_k if study else 1

    def new_session() -> DrawingSession:
        return DrawingSession(mode=config.mode)

    def random_target() -> str:
        return backend.ids[int.from_bytes(os.urandom(4), "little") % len(backend.ids)]

    with gr.Blocks(title="EarlySketch", fill_width=True) as app:
        state = gr.State(new_session)
        notes = "".join(f"<div class='es-notice'>{n}</div>" for n in backend.notices)
        gr.HTML(f"<div class='es-header'><h1>EarlySketch</h1><p>Sketch less, find more: the photo you mean rises "
                f"after every stroke.</p>{notes}</div>")  # fmt: skip
        with gr.Column(visible=study_mode, elem_classes="es-consent") as consent:
            if study_mode:
                gr.Markdown(f"### {study.name}\n\n{study.instructions}\n\n"
                            f"{study.num_trials} trials, up to {study.time_limit_s:g} s each. Your strokes and "
                            "their timing are recorded for research; no photo or video of you is taken.")  # fmt: skip
            participant = gr.Textbox(label="Participant id", placeholder="e.g. P07", max_length=64)
            session_id = gr.Textbox(label="Session id", value=lambda: datetime.now().strftime("S%Y%m%d-%H%M%S"),
                                    max_length=64)  # fmt: skip
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

        def on_load(session: DrawingSession):
            if study_mode:
                return view(session, fresh_canvas=True)
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

        def on_stroke(value, session: DrawingSession):
            phase = session.phase
            try:
                changed = session.update(value, lambda sketch, target: backend.rank(sketch, target, max(k, found_k)))
            except ValueError as exc:  # a malformed canvas payload: report it, keep serving
                gr.Warning(f"Could not read the drawing: {exc}")
                return {state: session}  # an empty dict would read as ONE output value and fail the event
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

        def on_start(pid: str, sid: str, session: DrawingSession):
            try:
                log = StudyLog(config.log_dir, pid, sid, {"mode": "study", "code_version": backend.code_version,
                                                          "model_hash": backend.model_hash})  # fmt: skip
            except ValueError as exc:
                raise gr.Error(f"Please enter a participant id and a session id ({exc}).") from exc
            if log.path.exists():
                gr.Warning(f"Session {log.participant}/{log.session} already has a log: appending to it.")
            session.begin_study(study, log, list(backend.ids), {"gallery": backend.gallery.source,
                                                                 "gallery_size": len(backend.ids)})  # fmt: skip
            return {**view(session, fresh_canvas=True), consent: gr.Column(visible=False),
                    workspace: gr.Row(visible=True)}  # fmt: skip

        def on_give_up(session: DrawingSession):
            session.end_trial("gave_up")
            return end_updates(session)

        def on_next(session: DrawingSession):
            if session.next_trial() is None:
                return {state: session, workspace: gr.Row(visible=False), done: gr.Column(visible=True)}
            return {**view(session, fresh_canvas=True), give_up: gr.Button(visible=True),
                    next_btn: gr.Button(visible=False)}  # fmt: skip

        def on_new_target(enabled: bool, session: DrawingSession):
            session.new_sketch(random_target() if enabled else None)
            return view(session, fresh_canvas=True)

        all_out = [state, canvas, results, panel, give_up, next_btn, consent, workspace, done]
        app.load(on_load, [state], all_out, show_progress="hidden", api_visibility="private")
        canvas.stroke_end(on_stroke, [canvas, state], all_out, trigger_mode="always_last", show_progress="hidden",
                          concurrency_limit=rank_slots(config), concurrency_id="rank", api_visibility="private")  # fmt: skip
        if study_mode:
            start.click(on_start, [participant, session_id, state], all_out, api_visibility="private")
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
            if not isinstance(k, int) or not 1 <= k <= 1000:
                raise gr.Error(f"k must be an integer between 1 and 1000, got {k!r}")
            if target_id is not None and target_id not in backend.gallery.index:
                raise gr.Error(f"target_id {target_id!r} is not in the gallery")
            result = backend.rank(parsed, target_id, k)
            return {"ids": list(result.ids), "scores": [float(s) for s in result.scores],
                    "target_rank": result.target_rank, "timings_ms": dict(result.timings_ms),
                    "gallery_size": len(backend.ids), "batch_size": result.batch_size}  # fmt: skip

        gr.api(rank, api_name="rank", concurrency_limit=rank_slots(config), concurrency_id="rank")
    return app


def rank_slots(config: AppConfig) -> int:
    """Ranking events Gradio runs at once. With batching, enough callers must be inside the batcher
    for its ``concurrency`` workers to fill batches; they wait there, not in Gradio's queue."""
    return config.concurrency * max(1, config.batch)


def launch(config: AppConfig, backend: Backend | None = None) -> None:
    backend = backend or load_backend(config)
    app = build_app(config, backend)
    threading.Thread(target=backend.warm_thumbnails, name="thumbnails", daemon=True).start()
    theme = gr.themes.Soft(primary_hue="blue", font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    auth = tuple(config.auth.split(":", 1)) if config.auth else None
    app.queue(default_concurrency_limit=config.concurrency).launch(
        server_name=config.host, server_port=config.port, share=config.share, auth=auth,
        max_file_size=config.max_file_size, allowed_paths=[str(backend.thumbs)], theme=theme, css=_ui("app.css"),
        footer_links=["api"] if config.mode == "free" else [], run_history=False, enable_monitoring=False,
        show_error=True, ssr_mode=False, mcp_server=False, favicon_path=None,
    )  # fmt: skip


if __name__ == "__main__":
    launch(parse_args())
