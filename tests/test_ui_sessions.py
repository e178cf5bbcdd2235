"""The app's identity and session table (issue 22), and its stroke route over HTTP.

Strangers cannot evict participants (Gradio's LRU of 10,000 sessions let 10,000 POSTs do it), a
client cannot choose an identity, and strokes reach the session through ``POST /es/stroke`` with
the server-issued cookie: a real Starlette app around the real handlers and a small real ranker.
"""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from retrieval.study.log import read_log
from retrieval.study.payload import JournalWriter
from retrieval.study.plan import StudyConfig
from retrieval.ui import sessions
from retrieval.ui.config import AppConfig
from retrieval.ui.handlers import Handlers
from retrieval.ui.sessions import (
    COOKIE,
    IDLE_S,
    MAX_IDENTITIES_PER_ADDRESS,
    IssueSessionCookie,
    SessionLimitError,
    SessionTable,
    SessionTokens,
    request_identity,
)
from retrieval.ui.stroke_route import MAX_STROKE_BODY_BYTES, stroke_routes

GALLERY = [f"photo_{i:02d}" for i in range(30)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- tokens ---------------------------------------------------------------------------------------------
def test_only_tokens_this_server_signed_are_identities():
    tokens = SessionTokens(b"s" * 32)
    token = tokens.issue()
    session_id = tokens.verify(token)
    assert session_id and token.startswith(session_id + ".")
    forged = [None, "", session_id, f"{session_id}.AAAA", token + "A", SessionTokens(b"t" * 32).issue(), "a.b.c"]
    assert [tokens.verify(t) for t in forged] == [None] * len(forged)
    scope = {"headers": [(b"cookie", f"theme=dark; {COOKIE}={token}".encode())]}
    assert request_identity(scope, tokens) == session_id
    assert request_identity({"headers": [(b"cookie", f"{COOKIE}={session_id}".encode())]}, tokens) is None


# --- the table's bounds -----------------------------------------------------------------------------------
def _participant(table: SessionTable, tmp_path, address="192.0.2.1"):
    """A study participant's session, started, as the app makes it."""
    session = table.tab("participant", address, "tab")
    config = StudyConfig(num_trials=2, random_targets=2, time_limit_s=0)
    from retrieval.study.log import StudyLog

    session.begin_study(config, StudyLog.create(tmp_path, "P1", "S1"), GALLERY, {}, "CODE")
    return session


def test_a_stranger_flooding_sessions_cannot_evict_a_participant(tmp_path):
    clock = Clock()
    table = SessionTable("study", clock)
    session = _participant(table, tmp_path)
    clock.now += 3 * IDLE_S  # the participant is thinking; the stranger starts
    for i in range(MAX_IDENTITIES_PER_ADDRESS):
        table.tab(f"stranger-{i}", "198.51.100.9", "tab")
    with pytest.raises(SessionLimitError, match="from this address"):
        table.tab("stranger-x", "198.51.100.9", "tab")  # past its cap, and nothing of its own is idle
    clock.now += IDLE_S
    for i in range(10):  # idle strangers make room for the stranger's new ones, never anyone else's
        table.tab(f"stranger-more-{i}", "198.51.100.9", "tab")
    assert table.tab("participant", "192.0.2.1", "tab") is session and session.status == "running"


def test_a_full_table_drops_only_idle_empty_sessions_and_never_a_running_study(tmp_path, monkeypatch):
    monkeypatch.setattr(sessions, "MAX_IDENTITIES", 5)
    clock = Clock()
    table = SessionTable("study", clock)
    session = _participant(table, tmp_path)
    for i in range(4):
        table.tab(f"visitor-{i}", f"203.0.113.{i}", "tab")
    with pytest.raises(SessionLimitError, match="holds 5 sessions"):
        table.tab("late", "203.0.113.99", "tab")  # nobody idle yet: refused, nobody dropped
    clock.now += 10 * IDLE_S
    table.tab("late", "203.0.113.99", "tab")  # an idle visitor that held nothing made room
    assert len(table) == 5 and table.by_token("participant", session.token) is session


def test_a_lab_behind_one_address_keeps_its_participants_and_tabs_make_room_for_each_other(tmp_path, monkeypatch):
    monkeypatch.setattr(sessions, "MAX_TABS_PER_IDENTITY", 3)
    table = SessionTable("study", Clock())
    session = _participant(table, tmp_path)
    for i in range(5):  # the same browser reloads: old tabs without a study make room
        table.tab("participant", "192.0.2.1", f"reload-{i}")
    assert table.tab("participant", "192.0.2.1", "tab") is session


# --- the cookie and the stroke route --------------------------------------------------------------------
@pytest.fixture(scope="module")
def backend(ui_backend):
    return ui_backend


@pytest.fixture
def app(backend, tmp_path):
    """The app's routes and cookie middleware around a stand-in page at ``/``; the study mode handlers."""
    study = StudyConfig(num_trials=2, random_targets=2, time_limit_s=0)
    handlers = Handlers(AppConfig(mode="study", study="s.json", log_dir=tmp_path), backend, study)
    table = SessionTable("study")
    page = Route("/", lambda request: PlainTextResponse("page"))
    starlette = Starlette(routes=[*stroke_routes(handlers, table), page], middleware=[Middleware(IssueSessionCookie)])
    return TestClient(starlette, base_url="http://127.0.0.1"), handlers, table


def _start(client, handlers, table):
    """Load the page (the cookie), press Start (what the Gradio event does), return the canvas token."""
    response = client.get("/")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/" in cookie
    identity = sessions.TOKENS.verify(client.cookies[COOKIE])
    session = table.tab(identity, "testclient", "tab")
    return handlers.start("P1", "S1", "", session).canvas["trial"], session


def _stroke(i):
    return {"type": "stroke", "pointer": "mouse", "t_up": 40.0 * i, "points": [[10 + i, 20, 0], [90, 80 + i, 30]]}


def test_strokes_go_through_the_route_with_the_cookie_and_are_logged_before_ranking(app, tmp_path):
    client, handlers, table = app
    token, session = _start(client, handlers, table)
    assert "set-cookie" not in client.get("/").headers, "a page load with a valid token keeps it"
    writer = JournalWriter(token)
    writer.add(_stroke(1))
    answer = client.post("/es/stroke", json=writer.batch())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["trial"], body["applied"], body["chain"]) == (token, 1, writer.chains[1])
    assert body["results"]["items"] and body["panel"]["resume_code"] == session.resume_code
    kinds = [r["type"] for r in read_log(tmp_path / "P1__S1.jsonl")]
    assert kinds == ["session_start", "trial_start", "stroke", "rank"]


def test_the_route_refuses_strangers_forged_identities_and_oversized_bodies(app):
    client, handlers, table = app
    token, _ = _start(client, handlers, table)
    writer = JournalWriter(token)
    writer.add(_stroke(1))
    stranger = TestClient(client.app, base_url="http://127.0.0.1")
    assert stranger.post("/es/stroke", json=writer.batch()).status_code == 401, "no cookie: no identity"
    stranger.cookies.set(COOKIE, "my-own-choice.AAAAAAAAAAAAAAAAAAAAAA")
    assert stranger.post("/es/stroke", json=writer.batch()).status_code == 401, "a client-chosen identity"
    stranger.cookies.clear()
    stranger.get("/")  # a real identity, but not the participant's: the token leads nowhere
    assert stranger.post("/es/stroke", json=writer.batch()).status_code == 410
    big = client.post("/es/stroke", content=b"x" * (MAX_STROKE_BODY_BYTES + 1))
    assert big.status_code == 413
    assert client.post("/es/stroke", content=b"{").status_code == 400


def test_a_replayed_journal_gets_409_with_where_the_server_is(app, tmp_path):
    client, handlers, table = app
    token, _ = _start(client, handlers, table)
    writer = JournalWriter(token)
    for i in range(3):
        writer.add(_stroke(i))
        writer.acknowledge(client.post("/es/stroke", json=writer.batch()).json()["applied"])
    forged = JournalWriter(token)
    for _ in range(3):
        forged.add({"type": "clear", "t": 1.0})
    refused = client.post("/es/stroke", json=forged.batch())
    assert refused.status_code == 409 and refused.json()["applied"] == 3
    assert refused.json()["chain"] == writer.chains[3]
    strokes = [r for r in read_log(tmp_path / "P1__S1.jsonl") if r["type"] in ("stroke", "clear")]
    assert [r["type"] for r in strokes] == ["stroke"] * 3
    assert json.loads(json.dumps(refused.json()))["warning"]


def test_a_replayed_journal_is_refused_before_any_of_its_events_is_parsed(app):
    """A replay costs the server a CRC per event, not the parsing of its points: the history check
    runs first, so events that are not even valid JSON get 409 (where the server is), not the 400
    that parsing them would give."""
    client, handlers, table = app
    token, _ = _start(client, handlers, table)
    writer = JournalWriter(token)
    writer.add(_stroke(0))
    writer.acknowledge(client.post("/es/stroke", json=writer.batch()).json()["applied"])
    replay = {**JournalWriter(token).batch(), "events": ["not json at all", "{"]}
    refused = client.post("/es/stroke", json=replay)
    assert refused.status_code == 409 and refused.json()["applied"] == 1
    assert refused.json()["chain"] == writer.chains[1]
    fresh = {**writer.batch(), "events": ["not json at all"]}  # continues the history: parsed, and refused as such
    assert client.post("/es/stroke", json=fresh).status_code == 400
