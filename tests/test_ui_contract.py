"""The Python -> JavaScript contract: the views' real payloads, the TypedDicts of retrieval/ui/contract.py
and the JSDoc typedefs at the top of assets/ui/*.js all name the same fields with the same types.

The payloads come from the real event handlers driving a real DrawingSession over a real
Retriever (small untrained encoder, 30-photo index), in free drawing and in a timed study: the
Gradio events' updates and the stroke route's answers (StrokeAnswer) alike.
"""

from __future__ import annotations

import json
import re
import types
import typing
from pathlib import Path

import pytest

from retrieval.provenance import PROJECT_ROOT as ROOT
from retrieval.study.payload import JournalWriter, parse_stroke_batch
from retrieval.study.plan import StudyConfig
from retrieval.ui import contract
from retrieval.ui.backend import Backend
from retrieval.ui.config import AppConfig
from retrieval.ui.drawing_session import DrawingSession
from retrieval.ui.handlers import Handlers, Update, UserError
from retrieval.ui.sessions import COOKIE, STARTS_PER_IDENTITY, SessionTable, SessionTokens
from retrieval.ui.views import found_banner

GALLERY = [f"photo_{i:02d}" for i in range(30)]
TYPEDEFS = {  # the script that renders each value -> the typedefs it declares
    "results.js": {"ResultsValue", "ResultItem", "CurvePoint"},
    "panel.js": {"PanelValue"},
    "canvas.js": {"CanvasValue", "StrokeAnswer"},
}


@pytest.fixture(scope="module")
def backend(ui_backend):
    return ui_backend


def stroke_event(s: int) -> dict:
    return {
        "type": "stroke",
        "pointer": "mouse",
        "t_down": 100.0 * s,
        "t_up": 100.0 * s + 40,
        "points": [[10.0 + 9 * i + s, 20.0 + 6 * i, 100.0 * s + 10 * i, 0.5] for i in range(5)],
    }


def draw(handlers: Handlers, session: DrawingSession, strokes: int = 1) -> contract.StrokeAnswer:
    """Draw ``strokes`` more strokes on the session's canvas and send them as canvas.js does."""
    writer = _writers.setdefault(session.token, JournalWriter(session.token))
    for _ in range(strokes):
        writer.add(stroke_event(writer.seq + 1))
    status, answer = handlers.stroke(parse_stroke_batch(writer.batch()), session)
    assert status == 200, answer
    writer.acknowledge(answer["applied"])
    return answer


_writers: dict[str, JournalWriter] = {}


def shown(token: str) -> dict:
    """The canvas's value naming trial ``token`` (what Give up and Next send)."""
    return {"trial": token, "locked": False, "message": "", "deadline_s": None}


def as_update(answer: contract.StrokeAnswer) -> Update:
    return Update(answer["results"], answer["panel"], answer["canvas"], answer["trial_ended"])


def free_drawing_updates(backend: Backend, answers: list) -> list[Update]:
    handlers = Handlers(AppConfig(mode="free", k=5), backend)
    session = DrawingSession(mode="free")
    updates = [handlers.load(session)]
    answers.append(draw(handlers, session))
    updates.append(handlers.new_target(False, session))  # no target: the free-drawing panel
    answers += [draw(handlers, session), draw(handlers, session)]
    return updates


def study_updates(backend: Backend, log_dir: Path, answers: list) -> list[Update]:
    study = StudyConfig(random_targets=2, num_trials=2, time_limit_s=60, show_k=4)
    handlers = Handlers(AppConfig(mode="study", study="study.json", log_dir=log_dir), backend, study)
    session = DrawingSession(mode="study")
    updates = [handlers.start("P1", "S1", "", session)]  # a study page has no load event
    answers.append(draw(handlers, session))
    updates.append(handlers.give_up(shown(session.token), session))  # the canvas locks, the banner says so
    updates.append(handlers.next_trial(shown(session.token), session))
    session.sketch.start_mono -= 61  # the time is up when the next stroke arrives: the answer ends the trial
    answers.append(draw(handlers, session))
    return updates


@pytest.fixture(scope="module")
def payloads(backend, tmp_path_factory) -> dict[str, list[dict]]:
    """Every results, panel and canvas value the handlers produced, by TypedDict name."""
    answers: list[contract.StrokeAnswer] = []
    updates = free_drawing_updates(backend, answers) + study_updates(backend, tmp_path_factory.mktemp("logs"), answers)
    updates += [as_update(answer) for answer in answers]
    return {
        "ResultsValue": [u.results for u in updates if u.results is not None],
        "PanelValue": [u.panel for u in updates if u.panel is not None],
        "CanvasValue": [u.canvas for u in updates if u.canvas is not None],
        "StrokeAnswer": answers,
    }


def conforms(value, hint) -> bool:
    """``value`` (as it goes to the page) has type ``hint`` (a contract annotation)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(conforms(v, args[0]) for v in value)
    if typing.is_typeddict(hint):
        hints = typing.get_type_hints(hint)
        return isinstance(value, dict) and set(value) == set(hints) and all(conforms(value[k], hints[k]) for k in hints)
    if hint is type(None):
        return value is None
    if hint is int:
        return type(value) is int
    return type(value) is hint  # str, float, bool: exactly, as JSON will carry them


@pytest.mark.parametrize("name", ["ResultsValue", "PanelValue", "CanvasValue", "StrokeAnswer"])
def test_the_views_send_exactly_the_typed_fields(payloads, name):
    typed = getattr(contract, name)
    hints = typing.get_type_hints(typed)
    values = payloads[name]
    assert len(values) >= 3, f"the scenario must produce several {name}s"
    for value in values:
        assert set(value) == set(hints), f"{name} keys {sorted(value)} != contract {sorted(hints)}"
        wrong = {k: value[k] for k in hints if not conforms(value[k], hints[k])}
        assert not wrong, f"{name} fields not of their contract type: {wrong}"
    never_set = [k for k in hints if all(v[k] is None for v in values)]
    assert not never_set, f"the scenario never fills {never_set}: their types go untested"


def test_the_scenario_reaches_every_item_and_curve_field(payloads):
    """Nested values are checked by ``conforms`` only where they occur: make sure they do."""
    results = payloads["ResultsValue"]
    assert any(value["items"] for value in results) and any(value["curve"] for value in results)
    assert any(point["rank"] is not None for value in results for point in value["curve"])
    assert {p["banner_kind"] for p in payloads["PanelValue"]} - {""}, "a trial end shows a banner"


# --- the JavaScript side -----------------------------------------------------------------------------
TYPEDEF = re.compile(r"@typedef\s+\{Object\}\s+(\w+)(.*?)\*/", re.S)
PROPERTY = re.compile(r"@property\s+\{([^}]*)\}\s+(\w+)")


def js_typedefs(script: Path) -> dict[str, dict[str, str]]:
    """``{typedef name: {property: JSDoc type}}`` of the ``@typedef {Object}`` blocks in ``script``."""
    text = script.read_text(encoding="utf-8")
    return {name: dict((prop, kind) for kind, prop in PROPERTY.findall(body)) for name, body in TYPEDEF.findall(text)}


def jsdoc_type(hint) -> set[str]:
    """The JSDoc spelling of a contract annotation, as the set of its union members."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return {json.dumps(a) for a in args}
    if origin in (typing.Union, types.UnionType):
        return set().union(*(jsdoc_type(a) for a in args))
    if origin is list:
        (member,) = jsdoc_type(args[0])
        return {member + "[]"}
    if typing.is_typeddict(hint):
        return {hint.__name__}
    return {{str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}[hint]}


@pytest.mark.parametrize("script", sorted(TYPEDEFS))
def test_the_jsdoc_typedefs_match_the_typed_dicts(script):
    found = js_typedefs(ROOT / "assets" / "ui" / script)
    assert set(found) == TYPEDEFS[script], f"{script} declares {sorted(found)}, expected {sorted(TYPEDEFS[script])}"
    for name, properties in found.items():
        hints = typing.get_type_hints(getattr(contract, name))
        assert list(properties) == list(hints), f"{script} {name}: JSDoc {list(properties)} != Python {list(hints)}"
        for field, hint in hints.items():
            js = set(properties[field].replace(" ", "").split("|"))
            assert js == jsdoc_type(hint), f"{script} {name}.{field}: JSDoc {properties[field]} != Python {hint}"


def test_the_typedef_reader_sees_a_drifted_field(tmp_path):
    """The JS check must be able to fail: a typedef that documents a field never sent is read as such."""
    script = tmp_path / "x.js"
    script.write_text(
        "/**\n * @typedef {Object} PanelValue\n * @property {string} title\n * @property {number} found_k\n */\n"
    )
    assert js_typedefs(script) == {"PanelValue": {"title": "string", "found_k": "number"}}


# --- what the payloads promise ---------------------------------------------------------------------------
def test_every_thumbnail_a_payload_names_exists_in_the_thumbnail_folder(backend, payloads):
    """Views compute URLs without I/O; the handlers must have made the files before the page asks."""
    srcs = [item["src"] for value in payloads["ResultsValue"] for item in value["items"]]
    srcs += [value["target_src"] for value in payloads["PanelValue"] if value["target_src"]]
    assert len(srcs) > 10
    for src in srcs:
        path = Path(src.removeprefix("gradio_api/file="))
        assert path.parent == backend.thumbs.folder and path.is_file(), src


def test_free_drawing_says_found_when_the_target_comes_first(backend):
    handlers = Handlers(AppConfig(mode="free", challenge=False), backend)
    probe = DrawingSession(mode="free")
    handlers.load(probe)
    top = draw(handlers, probe, 2)["results"]["items"][0]["id"]
    handlers.pick_target = lambda: top  # the same drawing will rank it first
    session = DrawingSession(mode="free")
    handlers.new_target(True, session)
    draw(handlers, session)
    answer = draw(handlers, session)
    assert answer["results"]["target_rank"] == 1 and answer["applied"] == 2
    assert (answer["panel"]["banner"], answer["panel"]["banner_kind"]) == ("Found it in 2 strokes!", "found")
    assert (found_banner(1), found_banner(3, 4.26)) == ("Found it in 1 stroke!", "Found it in 3 strokes (4.3 s)!")


def test_a_study_trial_that_ends_locks_the_canvas_and_offers_next(backend, tmp_path):
    study = StudyConfig(random_targets=2, num_trials=1, time_limit_s=60)
    handlers = Handlers(AppConfig(mode="study", study="s.json", log_dir=tmp_path), backend, study)
    session = DrawingSession(mode="study")
    started = handlers.start("P1", "S1", "", session)
    assert started.section == "workspace" and 59 < started.canvas["deadline_s"] <= 60
    assert 59 < started.panel["remaining_s"] <= 60 and started.panel["title"] == "Trial 1 of 1: find this photo"
    assert started.panel["resume_code"] == session.resume_code and len(session.resume_code) == 11
    token = started.canvas["trial"]
    ended = handlers.give_up(json.dumps({"trial": token, "seq": 0}), session)  # the canvas's own value
    assert ended.trial_ended is True and ended.canvas["locked"] and ended.canvas["deadline_s"] is None
    assert (ended.panel["banner"], ended.panel["banner_kind"], ended.panel["remaining_s"]) == (
        "Trial skipped.",
        "miss",
        None,
    )
    assert handlers.give_up(shown(token), session).trial_ended is True, "a repeated Give up shows the same end"
    assert handlers.next_trial(shown(token), session).section == "done"
    assert handlers.next_trial(shown(token), session).section == "done", "a repeated Next changes nothing"


def test_start_pressed_twice_starts_one_session_and_resume_needs_the_code(backend, tmp_path):
    study = StudyConfig(random_targets=2, num_trials=2, time_limit_s=0)
    handlers = Handlers(AppConfig(mode="study", study="s.json", log_dir=tmp_path), backend, study)
    session = DrawingSession(mode="study")
    first = handlers.start("P1", "S1", "", session)
    again = handlers.start("P1", "S1", "", session)  # a double click, or a retry after a lost answer
    assert again.canvas["trial"] == first.canvas["trial"] and len(list(tmp_path.glob("*.jsonl"))) == 1
    with pytest.raises(UserError, match="already runs a study"):
        handlers.start("P2", "S1", "", session)
    code = session.resume_code
    handlers.give_up(shown(session.token), session)
    handlers.next_trial(shown(session.token), session)  # trial 1 starts; then the browser dies

    later = DrawingSession(mode="study")
    with pytest.raises(UserError, match="already has a log"):
        handlers.start("P1", "S1", "", later)  # no code: a new session with these ids is refused
    with pytest.raises(UserError, match="resume code does not match"):
        handlers.start("P1", "S1", "WRONG-CODE1", later)
    with pytest.raises(UserError, match="no log for session 'S2'"):
        handlers.start("P1", "S2", code, later)
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == ["P1__S1.jsonl"], "failed starts make no file"
    resumed = handlers.start("P1", "S1", code.lower(), later)
    assert resumed.panel["title"] == "Trial 2 of 2: find this photo" and later.trial == 1


def test_the_api_handler_refuses_bad_requests_with_a_message(backend):
    handlers = Handlers(AppConfig(), backend)
    sketch = json.dumps({"canvas": {"width": 100, "height": 100}, "strokes": [[[1, 2, 0], [50, 60, 30]]]})
    assert len(handlers.rank(sketch, 3)["ids"]) == 3
    for args, message in (((sketch, 0), "k must be"), ((sketch, 3, "nope"), "not a photo id"), (("{", 3), "Invalid")):
        with pytest.raises(UserError, match=message):
            handlers.rank(*args)


# --- the tab's session: the app's table, found by the server-issued cookie ---------------------------
class FakeRequest:
    """What ``Page.session_of`` reads of a ``gr.Request``: cookies, the client address, the tab."""

    def __init__(self, cookie: str | None, tab: str = "tab-1", host: str = "10.0.0.7") -> None:
        self.cookies = {COOKIE: cookie} if cookie is not None else {}
        self.client = types.SimpleNamespace(host=host)
        self.session_hash = tab


def page_of(mode: str, tokens: SessionTokens):
    """A Page whose components are plain markers: ``bind``/``show`` only use them as dict keys."""
    import dataclasses

    from retrieval.ui.blocks import Page

    markers = {f.name: object() for f in dataclasses.fields(Page) if f.name not in ("table", "tokens")}
    return Page(table=SessionTable(mode), tokens=tokens, **markers)


@pytest.mark.slow
def test_events_find_their_session_by_the_server_issued_cookie_only(backend):
    import gradio as gr

    tokens = SessionTokens(b"k" * 32)
    page, handlers = page_of("free", tokens), Handlers(AppConfig(mode="free", k=5), backend)
    for cookie in (None, "made-up", tokens.issue() + "x", SessionTokens(b"other" * 8).issue()):
        with pytest.raises(gr.Error, match="reload the page"):
            page.bind(handlers.load)(FakeRequest(cookie))
    assert len(page.table) == 0, "a request without a token of this server creates nothing"
    cookie = tokens.issue()
    loaded = page.bind(handlers.load)(FakeRequest(cookie))
    (session,) = page.table._identities[tokens.verify(cookie)].tabs.values()
    assert loaded[page.canvas]["trial"] == session.token
    assert page.session_of(FakeRequest(cookie)) is session, "the same tab finds the same session"
    assert page.session_of(FakeRequest(cookie, tab="tab-2")) is not session, "another tab has its own"
    assert page.table.by_token(tokens.verify(cookie), session.token) is session
    assert page.table.by_token(tokens.verify(tokens.issue()), session.token) is None, "another browser cannot"


@pytest.mark.slow
def test_start_is_throttled_per_browser(backend, tmp_path):
    import gradio as gr

    tokens = SessionTokens(b"k" * 32)
    page = page_of("study", tokens)
    request = FakeRequest(tokens.issue())
    for _ in range(STARTS_PER_IDENTITY):
        page.session_of(request, starting=True)
    with pytest.raises(gr.Error, match="too often"):
        page.session_of(request, starting=True)
    page.session_of(FakeRequest(tokens.issue()), starting=True)  # another browser is not slowed down


def test_a_study_page_has_no_load_event_and_start_creates_the_session(backend, tmp_path):
    """A load event finishing after a quick Start would paint a session-less panel over the trial."""
    from retrieval.ui.blocks import build_app

    study_file = tmp_path / "study.json"
    study_file.write_text(json.dumps({"random_targets": 2, "num_trials": 2, "time_limit_s": 60, "show_k": 4}))
    config = AppConfig(mode="study", study=str(study_file), log_dir=tmp_path / "logs")
    app, _ = build_app(config, backend, SessionTable("study"))
    page = app.get_config_file()
    kinds = {c["id"]: c["type"] for c in page["components"]}
    loads = [d for d in page["dependencies"] if any(trigger == "load" for _, trigger in d["targets"])]
    written_on_load = {kinds[output] for d in loads for output in d["outputs"]}
    assert written_on_load <= {"textbox"}, f"only the session-id default may load; got {written_on_load}"
    free = build_app(AppConfig(mode="free"), backend, SessionTable("free"))[0].get_config_file()["dependencies"]
    assert any(t == "load" for d in free for _, t in d["targets"]), "free drawing starts its sketch on load"
    tokens = SessionTokens(b"k" * 32)
    study_page, request = page_of("study", tokens), FakeRequest(tokens.issue())
    handlers = Handlers(config, backend, StudyConfig.load(study_file))
    started = study_page.bind(handlers.start, starting=True)(request, "P01", "S01", "")
    session = study_page.session_of(request)
    assert session.status == "running" and started[study_page.canvas]["trial"] == session.token
