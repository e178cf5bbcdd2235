"""Who is drawing: the server-issued session token and the app's own table of drawing sessions.

Identity. The page's first load gets a cookie ``es_session`` (``HttpOnly; SameSite=Strict;
Path=/``) holding a random session id and its HMAC-SHA256 under a secret made at server start.
Every request after that names its browser by it; nothing a client chooses (Gradio's
``session_hash``, a body field) is an identity. :func:`request_identity` is the one check, used
by the app's routes, its Gradio events and the rate limits in front of them. Tokens die with the
server (the secret is not stored); a reloaded page gets a new one, and a study goes on with its
resume code (retrieval/study/resume.py).

Sessions. One browser (one identity) may have several tabs, each a :class:`DrawingSession`,
keyed by the identity and the tab's key (Gradio's per-page-load ``session_hash``, meaningful only
inside its identity). The table is the app's, not Gradio's: nothing a stranger sends can evict a
participant. Its bounds:

- an identity holds at most :data:`MAX_TABS_PER_IDENTITY` tabs; a new one replaces that
  identity's least recently used tab that is not a running study;
- an address holds at most :data:`MAX_IDENTITIES_PER_ADDRESS` identities; a new one replaces
  that address's least recently used identity idle for :data:`IDLE_S`, none of whose tabs is a
  study that ran in the last :data:`STUDY_IDLE_S`;
- the table holds at most :data:`MAX_IDENTITIES`; past that, identities that never started a
  study or drew and have been idle for :data:`IDLE_S` (of any address: they hold nothing) make
  room, else a new identity is refused (:class:`SessionLimitError`, 503).

Start is throttled per address and per identity (:meth:`SessionTable.allow_start`), so guessing
resume codes or creating session logs in a loop is slow.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from retrieval.ui.drawing_session import DrawingSession

COOKIE = "es_session"
COOKIE_ATTRIBUTES = "HttpOnly; SameSite=Strict; Path=/"
MAX_TABS_PER_IDENTITY = 16
MAX_IDENTITIES_PER_ADDRESS = 256  # a lab behind one address: dozens of browsers, each reloaded a few times
MAX_IDENTITIES = 8_192
IDLE_S = 120.0  # an identity unused this long may make room for another of its address
STUDY_IDLE_S = 1_800.0  # a running study untouched this long counts as abandoned (resumable by its code)
START_WINDOW_S = 60.0
STARTS_PER_IDENTITY = 6  # Start presses per identity per window (typos in an id happen)
STARTS_PER_ADDRESS = 60  # per address per window: a lab of 30 starting at once passes


class SessionLimitError(RuntimeError):
    """No room for a new session (the message says which bound); nothing of anyone else was dropped."""


class SessionTokens:
    """Signs and checks session tokens ``<id>.<mac>`` (HMAC-SHA256 of the id, truncated to 128 bits)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def _mac(self, session_id: str) -> str:
        digest = hmac.new(self._secret, session_id.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self) -> str:
        session_id = secrets.token_urlsafe(16)
        return f"{session_id}.{self._mac(session_id)}"

    def verify(self, token: str | None) -> str | None:
        """The session id of a token this server issued; None for anything else."""
        if not token or len(token) > 100 or token.count(".") != 1:
            return None
        session_id, mac = token.split(".")
        return session_id if hmac.compare_digest(mac, self._mac(session_id)) else None


TOKENS = SessionTokens()  # this server process's signer


def cookie_value(headers: list[tuple[bytes, bytes]] | dict, name: str = COOKIE) -> str | None:
    """The value of cookie ``name`` in ASGI ``headers`` (a list of byte pairs) or a dict of cookies."""
    if isinstance(headers, dict):
        return headers.get(name)
    for key, value in headers:
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key_text, _, text = part.strip().partition("=")
                if key_text == name:
                    return text
    return None


def request_identity(scope: dict, tokens: SessionTokens = TOKENS) -> str | None:
    """The verified session id of an ASGI request (its ``es_session`` cookie), or None.

    None means the request carries no token this server issued: the page was not loaded from this
    server process (or the cookie was made up). Rate limits key on this id and the address; the
    app's routes and events refuse requests without one.
    """
    return tokens.verify(cookie_value(scope.get("headers", [])))


def set_cookie_header(token: str) -> tuple[bytes, bytes]:
    return b"set-cookie", f"{COOKIE}={token}; {COOKIE_ATTRIBUTES}".encode()


class IssueSessionCookie:
    """ASGI middleware: a page load (``GET /``) without a valid token gets a new one as a cookie.

    Only the page: other routes never mint identities (they refuse requests without one).
    """

    def __init__(self, app, tokens: SessionTokens = TOKENS, page_paths: tuple[str, ...] = ("/",)) -> None:
        self.app, self.tokens, self.page_paths = app, tokens, page_paths

    async def __call__(self, scope, receive, send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "GET"
            or scope.get("path") not in self.page_paths
            or request_identity(scope, self.tokens) is not None
        ):
            await self.app(scope, receive, send)
            return
        header = set_cookie_header(self.tokens.issue())

        async def send_with_cookie(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


@dataclass
class Identity:
    """One browser's sessions (its tabs), least recently used first."""

    address: str
    tabs: OrderedDict[str, DrawingSession] = field(default_factory=OrderedDict)
    last_used: float = field(default_factory=time.monotonic)
    starts: deque[float] = field(default_factory=deque)

    def holds_data(self) -> bool:
        """Whether any tab started a study or drew (dropping it would lose something)."""
        return any(tab.status != "consent" or tab.sketch.seen_seq or tab.ended for tab in self.tabs.values())

    def running_study(self, now: float) -> bool:
        return any(tab.status == "running" for tab in self.tabs.values()) and now - self.last_used < STUDY_IDLE_S


class SessionTable:
    """The app's drawing sessions, keyed by server-issued identity and tab; bounded (module docs).

    Thread-safe: the app's routes run in worker threads, Gradio's events in others.
    """

    def __init__(self, mode: str, clock=time.monotonic) -> None:
        self.mode, self.clock = mode, clock
        self._identities: OrderedDict[str, Identity] = OrderedDict()
        self._starts_by_address: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._identities)

    def tab(self, identity: str, address: str, tab_key: str) -> DrawingSession:
        """The tab's session, created on first use.

        Raises:
            SessionLimitError: the identity's address, or the table, has no room (module docs).
        """
        with self._lock:
            entry = self._identity(identity, address)
            session = entry.tabs.get(tab_key)
            if session is None:
                self._make_tab_room(entry)
                session = entry.tabs[tab_key] = DrawingSession(mode=self.mode)
            entry.tabs.move_to_end(tab_key)
            return session

    def by_token(self, identity: str, token: str) -> DrawingSession | None:
        """The session of ``identity`` whose current or recently ended canvas token is ``token``."""
        with self._lock:
            entry = self._identities.get(identity)
            if entry is None:
                return None
            entry.last_used = self.clock()
            self._identities.move_to_end(identity)
            return next((s for s in reversed(entry.tabs.values()) if s.owns(token)), None)

    def allow_start(self, identity: str, address: str) -> bool:
        """Count one Start press; False when its identity or address pressed too often lately."""
        with self._lock:
            now = self.clock()
            entry = self._identity(identity, address)
            by_address = self._starts_by_address.setdefault(address, deque())
            for times in (entry.starts, by_address):
                while times and now - times[0] > START_WINDOW_S:
                    times.popleft()
            if len(entry.starts) >= STARTS_PER_IDENTITY or len(by_address) >= STARTS_PER_ADDRESS:
                return False
            entry.starts.append(now)
            by_address.append(now)
            return True

    # --- bounds ---------------------------------------------------------------------------------
    def _identity(self, identity: str, address: str) -> Identity:
        now = self.clock()
        entry = self._identities.get(identity)
        if entry is None:
            self._make_identity_room(address, now)
            entry = self._identities[identity] = Identity(address)
        entry.last_used = now
        self._identities.move_to_end(identity)
        return entry

    def _of_address(self, address: str) -> Iterator[tuple[str, Identity]]:
        return ((key, e) for key, e in self._identities.items() if e.address == address)

    def _make_identity_room(self, address: str, now: float) -> None:
        mine = list(self._of_address(address))
        if len(mine) >= MAX_IDENTITIES_PER_ADDRESS:
            idle = [k for k, e in mine if now - e.last_used >= IDLE_S and not e.running_study(now)]
            if not idle:
                raise SessionLimitError(
                    f"{MAX_IDENTITIES_PER_ADDRESS} browsers from this address are in use: close a tab and try later"
                )
            del self._identities[idle[0]]  # least recently used first
        if len(self._identities) >= MAX_IDENTITIES:
            empty = [k for k, e in self._identities.items() if now - e.last_used >= IDLE_S and not e.holds_data()]
            if not empty:
                raise SessionLimitError(f"the server holds {MAX_IDENTITIES} sessions: try again in a few minutes")
            del self._identities[empty[0]]

    def _make_tab_room(self, entry: Identity) -> None:
        if len(entry.tabs) < MAX_TABS_PER_IDENTITY:
            return
        spare = next((k for k, s in entry.tabs.items() if s.status != "running"), None)
        if spare is None:
            raise SessionLimitError(f"this browser has {MAX_TABS_PER_IDENTITY} studies open: finish one first")
        del entry.tabs[spare]
