"""Participant and session ids as study-log file names: ``<participant>__<session>.jsonl``.

Each id is encoded by :func:`encode_id`: letters, digits, ``.`` and ``-`` stay, every other byte
becomes ``_XX`` (hex), so the name is reversible (:func:`decode_id`), ``__`` can only be the
separator, two different (participant, session) pairs never share a file, and no id can point
outside the log folder. An id is capped on its UTF-8 bytes and on its encoded length, because the
file system counts bytes: any two accepted ids fit one 255-byte file name.

Ids that differ only in case (``P07``, ``p07``) are distinct names here but one file on a
case-insensitive file system (macOS, Windows shares); :func:`check_case_collision` refuses them.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable

LOG_SUFFIX = ".jsonl"
ID_SEPARATOR = "__"
MAX_ID_BYTES = 64  # UTF-8 bytes of one id (64 ASCII letters): the file system counts bytes, not characters
NAME_MAX = 255  # bytes in one file name on ext4, XFS, btrfs, APFS; StudyLog.create also asks the file system
# Encoded characters of one id: two at this cap plus the separator and suffix make a 254-byte name.
MAX_ENCODED_ID_LENGTH = (NAME_MAX - len(ID_SEPARATOR) - len(LOG_SUFFIX)) // 2


class IdCaseCollisionError(ValueError):
    """An id differs from an existing log's only in case (``p07`` next to ``P07``).

    Refused rather than given a distinct name: on a case-insensitive file system the two would be
    one file, and to a researcher they are most likely one participant typed twice; analysis
    grouping by id would otherwise split that person in two.
    """


def encode_id(raw: str) -> str:
    """A participant/session id as a file-name part, reversibly (``decode_id`` gives it back).

    The id is stripped; ``[A-Za-z0-9.-]`` stay, any other UTF-8 byte (and a leading ``.``)
    becomes ``_XX``. Raises ``ValueError`` for an empty id, control characters, more than
    ``MAX_ID_BYTES`` bytes of UTF-8 or more than ``MAX_ENCODED_ID_LENGTH`` encoded characters
    (refused rather than cut, so two ids never collide). Both caps count what the file system
    counts: a 30-character CJK id is 90 bytes, 270 characters once encoded.
    """
    text = str(raw).strip()
    if not text:
        raise ValueError("the id is empty: enter letters or digits, e.g. P07")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("the id contains control characters")
    data = text.encode("utf-8", errors="surrogatepass")
    if len(data) > MAX_ID_BYTES:
        raise ValueError(
            f"the id is {len(data)} bytes in UTF-8 ({len(text)} characters), at most {MAX_ID_BYTES} bytes "
            "are allowed: use a shorter id (letters and digits take one byte each, most other characters 2-4)"
        )
    out = []
    for i, byte in enumerate(data):
        char = chr(byte)
        keep = byte < 128 and (char.isalnum() or char == "-" or (char == "." and i > 0))
        out.append(char if keep else f"_{byte:02X}")
    encoded = "".join(out)
    if len(encoded) > MAX_ENCODED_ID_LENGTH:
        raise ValueError(
            f"the id takes {len(encoded)} characters in the log's file name, at most {MAX_ENCODED_ID_LENGTH} fit "
            "(letters, digits, '.' and '-' take one; every other byte of UTF-8 takes three): use a shorter id"
        )
    return encoded


def decode_id(encoded: str) -> str:
    """The id :func:`encode_id` encoded (``_`` only ever starts an ``_XX`` escape there)."""
    return urllib.parse.unquote(encoded.replace("_", "%"), errors="strict")


def log_file_name(participant: str, session: str) -> str:
    """``<participant>__<session>.jsonl`` with both ids encoded by :func:`encode_id`."""
    return f"{encode_id(participant)}{ID_SEPARATOR}{encode_id(session)}{LOG_SUFFIX}"


def parse_log_name(name: str) -> tuple[str, str] | None:
    """(participant, session) of a session file name; ``None`` for any other name.

    An encoded id never ends in ``_`` (an escape ends in a hex digit), so the first ``__`` is the
    separator even when the session id starts with an escape.
    """
    stem = name.removesuffix(LOG_SUFFIX)
    participant, separator, session = stem.partition(ID_SEPARATOR)
    if stem == name or not separator:
        return None
    try:
        return decode_id(participant), decode_id(session)
    except UnicodeDecodeError:
        return None


def check_case_collision(participant: str, session: str, names: Iterable[str]) -> None:
    """Refuse ids for a new log that differ from an existing log's (among ``names``) only in case.

    Raises:
        IdCaseCollisionError: participant ``p07`` next to ``P07``, or the same participant's
            session ``s1`` next to ``S1``; the message names the existing id to type instead.
    """
    for name in names:
        ids = parse_log_name(name)
        if ids is None:
            continue
        other, other_session = ids
        if other != participant and other.casefold() == participant.casefold():
            raise IdCaseCollisionError(
                f"participant {participant!r} differs only in case from participant {other!r}, who already "
                f"has a log: enter {other!r} exactly if that is the same person, or choose an id that differs "
                "in more than case"
            )
        if other == participant and other_session != session and other_session.casefold() == session.casefold():
            raise IdCaseCollisionError(
                f"session {session!r} differs only in case from session {other_session!r} of participant "
                f"{other!r}: enter {other_session!r} exactly to resume it, or choose another session id"
            )
