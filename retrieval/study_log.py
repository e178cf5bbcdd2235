"""Append-only, crash-safe user-study log: one JSONL file per session.

Every record is one JSON object on one line, written with a single ``os.write`` on an
``O_APPEND`` descriptor followed by ``os.fsync``, so a record is on disk before ``append``
returns: a ``kill -9`` (or a power cut after the fsync) loses no acknowledged record. Opening
an existing session file appends to it; if the previous writer died mid-line, a newline is
written first so the torn fragment stays on its own line, which :func:`read_log` skips.

File name: ``<participant>__<session>.jsonl`` inside the log folder, both ids sanitised by
:func:`safe_id` so no id can point outside the folder. Both the JSONL files and the CSV export
load in pandas as-is (``pd.read_json(path, lines=True)``, ``pd.read_csv(path)``).

Record types (field ``type``): ``session_start``, ``trial_start``, ``stroke``, ``undo``,
``clear``, ``trial_end``, ``session_end``; the full schema is in docs/app.md.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

SCHEMA_VERSION = 1
LOG_SUFFIX = ".jsonl"
MAX_ID_LENGTH = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

# Columns first in the CSV export, in this order; any other key follows alphabetically.
CSV_LEAD_COLUMNS = (
    "schema_version",
    "type",
    "written_utc",
    "participant",
    "session",
    "trial",
    "condition",
    "target_id",
    "stroke_index",
    "target_rank",
    "server_ms",
)


def utc_now() -> str:
    """ISO-8601 UTC wall clock with milliseconds, e.g. ``2024-05-01T12:00:00.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def safe_id(raw: str) -> str:
    """A participant/session id usable as a file-name part: ``[A-Za-z0-9._-]``, at most 64 chars.

    Runs of other characters become ``-``; leading dots/dashes are dropped so the result is
    never ``..`` or a hidden file. Raises ``ValueError`` when nothing usable is left.
    """
    cleaned = _UNSAFE.sub("-", str(raw).strip()).lstrip(".-")[:MAX_ID_LENGTH].rstrip(".-")
    if not cleaned:
        raise ValueError(f"id {raw!r} has no usable characters: use letters, digits, '.', '_' or '-'")
    return cleaned


def _json_safe(value):
    """Replace NaN/inf (not valid JSON) by ``None`` so every line parses everywhere."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return _json_safe(value.tolist())
    return value


class StudyLog:
    """Append-only JSONL log of one study session (one participant, one session id).

    Holds no open file between writes, so the object is cheap to copy into per-session UI state
    and two sessions never share a descriptor.

    Args:
        log_dir: Folder for all session files (created if missing).
        participant: Participant id (sanitised with :func:`safe_id`).
        session: Session id (sanitised with :func:`safe_id`).
        common: Fields written into every record (e.g. code version, model hash, mode).
    """

    def __init__(self, log_dir: str | Path, participant: str, session: str, common: dict | None = None) -> None:
        self.log_dir = Path(log_dir).resolve()
        self.participant = safe_id(participant)
        self.session = safe_id(session)
        self.common = dict(common or {})
        self.path = self.log_dir / f"{self.participant}__{self.session}{LOG_SUFFIX}"
        if self.path.parent != self.log_dir:  # defence in depth: safe_id already forbids separators
            raise ValueError(f"log path {self.path} escapes the log folder {self.log_dir}")
        self._checked_tail = False

    def _repair_torn_tail(self, fd: int) -> None:
        """If the file ends mid-line (a writer died there), end that line so the next record is whole."""
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")

    def append(self, record: dict) -> dict:
        """Write one record durably (write + fsync) and return it as written.

        ``schema_version``, ``written_utc``, ``participant``, ``session`` and the ``common``
        fields are added; explicit keys in ``record`` win over ``common``.
        """
        full = {
            "schema_version": SCHEMA_VERSION,
            "written_utc": utc_now(),
            "participant": self.participant,
            "session": self.session,
            **self.common,
            **record,
        }
        full = _json_safe(full)
        line = (json.dumps(full, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n").encode()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if not self._checked_tail:
                self._repair_torn_tail(fd)
                self._checked_tail = True
            # One write call on O_APPEND: the line lands contiguously even if another writer appends.
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes (disk full?)")
            os.fsync(fd)
        finally:
            os.close(fd)
        return full


def read_log(path: str | Path) -> list[dict]:
    """All complete records of one JSONL log, skipping a torn last line.

    A line that does not parse anywhere else is skipped with a warning (it can only come from
    a crash during a previous session's last write, repaired by :meth:`StudyLog.append`).
    """
    records = []
    lines = Path(path).read_bytes().split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if number != len(lines):  # the unterminated final fragment is the expected torn case
                warnings.warn(f"{path}:{number}: skipping a torn record (a writer was killed mid-write)", stacklevel=2)
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def log_files(log_dir: str | Path) -> list[Path]:
    """Session files in a log folder, sorted by name."""
    return sorted(Path(log_dir).glob(f"*{LOG_SUFFIX}"))


def iter_records(log_dir: str | Path) -> Iterator[dict]:
    """Records of every session file in a folder (each file in order)."""
    for path in log_files(log_dir):
        yield from read_log(path)


def _cell(value) -> str | int | float | bool | None:
    """A CSV cell: scalars as they are, lists/dicts as compact JSON (``json.loads`` gives them back)."""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return value


def export_csv(records: Iterable[dict], out_path: str | Path) -> Path:
    """Write records as one CSV row each (lead columns first, nested values as JSON strings)."""
    records = list(records)
    keys = {k for r in records for k in r}
    columns = [c for c in CSV_LEAD_COLUMNS if c in keys] + sorted(keys - set(CSV_LEAD_COLUMNS))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow({k: _cell(record.get(k)) for k in columns})
    return out_path
