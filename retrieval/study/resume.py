"""Resuming a study session: the code shown at Start, and where an interrupted session goes on.

Start shows the participant a random resume code; the log keeps only a salted SHA-256 of it
(``session_start`` field ``resume_code``). Resuming needs the participant id, the session id and
that code, and goes on at the first planned trial without a ``trial_end`` record: a trial that
was cut off mid-way starts again (its new ``trial_start`` says ``resumed: true``), finished ones
are never repeated. A 10-character code from a 31-letter alphabet holds about 49 bits; the app
throttles Start (retrieval/ui/sessions.py), so guessing one online is hopeless.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read aloud or copied by hand
CODE_LENGTH = 10


class ResumeRefusedError(ValueError):
    """This session cannot be resumed with what was given; the message says why."""


def new_resume_code() -> str:
    """A fresh code such as ``K7QFM-2XAB9`` (two groups of five, easier to copy)."""
    letters = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return f"{letters[:5]}-{letters[5:]}"


def _normalised(code: str) -> str:
    return "".join(c for c in str(code).upper() if c.isalnum())


def code_record(code: str) -> dict:
    """What the log keeps of a code: a random salt and the SHA-256 of salt and code."""
    salt = secrets.token_hex(16)
    return {"salt": salt, "sha256": hashlib.sha256((salt + _normalised(code)).encode()).hexdigest()}


def code_matches(code: str, record: object) -> bool:
    """Whether ``code`` is the one ``record`` (from :func:`code_record`) was made from; case, spaces
    and hyphens do not matter."""
    if not isinstance(record, dict) or not isinstance(record.get("salt"), str):
        return False
    digest = hashlib.sha256((record["salt"] + _normalised(code)).encode()).hexdigest()
    return hmac.compare_digest(digest, str(record.get("sha256", "")))


@dataclass(frozen=True)
class ResumePoint:
    """Where a session goes on: the trials that ended, and whether the session already ended."""

    ended_trials: frozenset[int]
    session_ended: bool


def resume_point(records: list[dict], code: str) -> ResumePoint:
    """Check ``code`` against the session's log and say where it goes on.

    Raises:
        ResumeRefusedError: no ``session_start`` (an empty or foreign file), a log written before
            resume codes existed, or a wrong code.
    """
    starts = [r for r in records if r.get("type") == "session_start"]
    if not starts:
        raise ResumeRefusedError("this session's log has no session_start record: start a new session")
    stored = starts[0].get("resume_code")
    if stored is None:
        raise ResumeRefusedError("this session was started without a resume code and cannot be resumed")
    if not code_matches(code, stored):
        raise ResumeRefusedError("the resume code does not match this session")
    ended = frozenset(r["trial"] for r in records if r.get("type") == "trial_end" and type(r.get("trial")) is int)
    return ResumePoint(ended, any(r.get("type") == "session_end" for r in records))
