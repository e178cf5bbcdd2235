"""The Python -> JavaScript contract: the views' real payloads, the TypedDicts of retrieval/ui/contract.py
and the JSDoc typedefs at the top of assets/ui/*.js all name the same fields with the same types.

The payloads come from the real event handlers driving a real DrawingSession over a real
Retriever (small untrained encoder, 30-photo index), in free drawing and in a timed study.
"""

from __future__ import annotations

import json
import re
import types
import typing
from pathlib import Path

import numpy as np
import pytest

from retrieval.serving.gallery import Gallery
from retrieval.serving.index import PhotoIndex
from retrieval.serving.retriever import Retriever
from retrieval.serving.thumbnails import ThumbnailCache
from retrieval.study.session import DrawingSession, StudyConfig
from retrieval.ui import contract
from retrieval.ui.backend import Backend
from retrieval.ui.config import AppConfig
from retrieval.ui.handlers import Handlers, Update

ROOT = Path(__file__).resolve().parents[1]
GALLERY = [f"photo_{i:02d}" for i in range(30)]
TYPEDEFS = {  # the script that renders each value -> the typedefs it declares
    "results.js": {"ResultsValue", "ResultItem", "CurvePoint"},
    "panel.js": {"PanelValue"},
    "canvas.js": {"CanvasValue"},
}


@pytest.fixture(scope="module")
def backend(encoder, tmp_path_factory):
    vectors = np.random.default_rng(0).standard_normal((len(GALLERY), encoder.meta["embed_dim"])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = PhotoIndex.build(vectors, GALLERY)
    gallery = Gallery(index, "test", loader=lambda photo_id: np.full((48, 32, 3), 200, np.uint8))
    thumbs = ThumbnailCache(tmp_path_factory.mktemp("thumbs"), gallery.load_photo, 32)
    retriever = Retriever(encoder, index)
    return Backend(retriever, retriever, gallery, tuple(GALLERY), thumbs, "model-hash", "code-version", ())


def journal(session: DrawingSession, strokes: int) -> str:
    """The canvas's journal text after ``strokes`` strokes (what canvas.js sends)."""
    events = [
        {
            "seq": s,
            "type": "stroke",
            "pointer": "mouse",
            "t_down": 100.0 * s,
            "t_up": 100.0 * s + 40,
            "points": [[10.0 + 9 * i + s, 20.0 + 6 * i, 100.0 * s + 10 * i, 0.5] for i in range(5)],
        }
        for s in range(1, strokes + 1)
    ]
    return json.dumps(
        {"trial": session.token, "width": 256, "height": 256, "dpr": 1, "t0_utc_ms": 1.7e12, "events": events}
    )


def free_drawing_updates(backend: Backend) -> list[Update]:
    handlers = Handlers(AppConfig(mode="free", k=5), backend)
    session = DrawingSession(mode="free")
    updates = [handlers.load(session), handlers.stroke(journal(session, 1), session)]
    updates.append(handlers.new_target(False, session))  # no target: the free-drawing panel
    updates.append(handlers.stroke(journal(session, 2), session))
    return updates


def study_updates(backend: Backend, log_dir: Path) -> list[Update]:
    study = StudyConfig(random_targets=2, num_trials=2, time_limit_s=60, show_k=4)
    handlers = Handlers(AppConfig(mode="study", study="study.json", log_dir=log_dir), backend, study)
    session = DrawingSession(mode="study")
    updates = [handlers.load(session), handlers.start("P1", "S1", False, session)]
    updates.append(handlers.stroke(journal(session, 1), session))
    updates.append(handlers.give_up(session))  # the canvas locks, the banner says so
    updates.append(handlers.next_trial(session))
    return updates


@pytest.fixture(scope="module")
def payloads(backend, tmp_path_factory) -> dict[str, list[dict]]:
    """Every results, panel and canvas value the handlers produced, by TypedDict name."""
    updates = free_drawing_updates(backend) + study_updates(backend, tmp_path_factory.mktemp("logs"))
    return {
        "ResultsValue": [u.results for u in updates if u.results is not None],
        "PanelValue": [u.panel for u in updates if u.panel is not None],
        "CanvasValue": [u.canvas for u in updates if u.canvas is not None],
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


@pytest.mark.parametrize("name", ["ResultsValue", "PanelValue", "CanvasValue"])
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
