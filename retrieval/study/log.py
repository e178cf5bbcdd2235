"""Append-only, crash-safe user-study log: one JSONL file per session.

Every record is one JSON object on one line, written with a single ``os.write`` on an
``O_APPEND`` descriptor followed by ``os.fsync``, so a record is on disk before ``append``
returns: a ``kill -9`` (or a power cut after the fsync) loses no acknowledged record. Opening
an existing session file appends to it; if the previous writer died mid-line, a newline is
written first so the torn fragment stays on its own line, which :func:`read_log` skips.

File name: ``<participant>__<session>.jsonl`` inside the log folder, reversible and capped to fit
the file system (:mod:`retrieval.study.log_names`). :meth:`StudyLog.create` claims a new session
file atomically (``O_EXCL``) and refuses an existing one unless resuming is asked for, and refuses
ids that differ from an existing log's only in case (``P07`` and ``p07`` would share one file on a
case-insensitive file system, and are most likely one person typed twice). The folder is 0700, the
files 0600, and no file is written through a symbolic link (:mod:`retrieval.study.private_files`).
Both the JSONL files and the CSV export load in pandas as-is (``pd.read_json(path, lines=True)``,
``pd.read_csv(path)``); the CSV escapes cells a spreadsheet would run as formulas (:func:`csv_cell`).

A batch that fails part-way (disk full, an ``fsync`` error) is cut back to the file's size
before the write, so a retry never leaves the same records twice.

Record types (field ``type``): ``session_start``, ``session_resume``, ``trial_start``, ``stroke``,
``undo``, ``clear``, ``rank``, ``trial_end``, ``session_end``; the full schema is in docs/app.md.
Since schema 2 the ranking after a request's events is its own ``rank`` record, written after
them (the events are durable before the ranker runs);
:func:`retrieval.study.log_rankings.with_rankings` folds it back into the event it ranked.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from retrieval.study.log_names import LOG_SUFFIX, check_case_collision, log_file_name
from retrieval.study.private_files import fsync_dir, open_private_dir, open_private_file

SCHEMA_VERSION = 2  # 2: rankings in their own ``rank`` records (retrieval/study/log_rankings.py)
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

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


class SessionExistsError(FileExistsError):
    """This participant already has a log for this session id: choose another id, or resume it."""


class NoSessionLogError(FileNotFoundError):
    """There is no log to resume for this participant and session id."""


def _write_all(fd: int, data: bytes, path: Path) -> None:
    """Write every byte (``os.write`` may write fewer, e.g. at a size limit); OSError if the disk refuses."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(f"short write to {path}: {len(data) - len(view)} of {len(data)} bytes (disk full?)")
        view = view[written:]


class StudyLog:
    """Append-only JSONL log of one study session (one participant, one session id).

    Holds no open file between writes, so the object is cheap to copy into per-session UI state
    and two sessions never share a descriptor. The app claims a session with :meth:`create`.

    Args:
        log_dir: Folder for all session files (created if missing).
        participant: Participant id (stripped; a file name part by ``log_names.encode_id``).
        session: Session id (stripped; a file name part by ``log_names.encode_id``).
        common: Fields written into every record (e.g. code version, model hash, mode).

    Raises:
        ValueError: an id is empty, too long or holds control characters (the message says which).
    """

    def __init__(self, log_dir: str | Path, participant: str, session: str, common: dict | None = None) -> None:
        self.log_dir = Path(log_dir).resolve()
        self.participant = str(participant).strip()
        self.session = str(session).strip()
        self.common = dict(common or {})
        self.path = self.log_dir / log_file_name(participant, session)
        if self.path.parent != self.log_dir:  # defence in depth: encode_id already escapes separators
            raise ValueError(f"log path {self.path} escapes the log folder {self.log_dir}")
        self._dir_synced = False

    def _check_new_name(self, dir_fd: int) -> None:
        """Refuse a file name longer than this file system allows, and a new file whose ids differ
        from an existing log's only in case.

        "New" compares the folder's names exactly: on a case-insensitive file system ``p07__S1``
        would open ``P07__S1``'s file, so a lookup by name cannot tell them apart.

        Raises:
            ValueError: the file name is over the file system's limit (e.g. 143 bytes on eCryptfs).
            IdCaseCollisionError: ``p07`` next to ``P07``, or session ``s1`` next to ``S1``.
        """
        limit = os.fpathconf(dir_fd, "PC_NAME_MAX")
        size = len(self.path.name.encode())
        if size > limit:
            raise ValueError(
                f"the log file name {self.path.name!r} is {size} bytes and the file system of {self.log_dir} "
                f"allows at most {limit} bytes: use shorter participant and session ids"
            )
        names = os.listdir(dir_fd)
        if self.path.name not in names:  # not this session's own file (resumed, or refused by O_EXCL)
            check_case_collision(self.participant, self.session, names)

    @classmethod
    def create(
        cls, log_dir: str | Path, participant: str, session: str, common: dict | None = None, *, resume: bool = False
    ) -> StudyLog:
        """Claim the session's file: a new one, or with ``resume=True`` an existing one (only).

        The claim is ``O_CREAT | O_EXCL``: of two participants starting the same session at the
        same moment exactly one wins; the folder is fsync'd so the new name survives a power cut.
        A new file is first checked against the folder's logs for ids differing only in case.

        Raises:
            SessionExistsError: the file exists and ``resume`` is False.
            NoSessionLogError: ``resume`` is True and there is no such file (none is made).
            IdCaseCollisionError: a new file's ids differ from an existing log's only in case.
            UnsafeLogPathError: the log path is a symbolic link or not a regular file.
        """
        log = cls(log_dir, participant, session, common)
        with open_private_dir(log.log_dir) as (dir_fd, created):
            if created:
                fsync_dir(log.log_dir.parent)
            log._check_new_name(dir_fd)
            try:
                fd = open_private_file(dir_fd, log.path, os.O_WRONLY | (0 if resume else os.O_CREAT | os.O_EXCL))
            except FileNotFoundError as exc:
                raise NoSessionLogError(
                    f"participant {log.participant!r} has no log for session {log.session!r} to resume: "
                    "check both ids, or start a new session"
                ) from exc
            except FileExistsError as exc:
                raise SessionExistsError(
                    f"participant {log.participant!r} already has a log for session {log.session!r}: "
                    "choose another session id, or resume that session"
                ) from exc
            os.close(fd)
            os.fsync(dir_fd)
        log._dir_synced = True
        return log

    def _end_torn_line(self, fd: int) -> None:
        """If the file ends mid-line (a writer died there, or a write came up short), end that line,
        so the next record is whole and on its own line (:func:`read_log` skips the fragment)."""
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            _write_all(fd, b"\n", self.path)

    def append(self, record: dict) -> dict:
        """Write one record durably (write + fsync) and return it as written.

        ``schema_version``, ``written_utc``, ``participant``, ``session`` and the ``common``
        fields are added; explicit keys in ``record`` win over ``common``.

        Raises:
            OSError: the record could not be written whole (disk full, size limit); a later
                append still starts on a fresh line.
        """
        return self.append_many([record])[0]

    def append_many(self, records: list[dict]) -> list[dict]:
        """:meth:`append` for several records with one write and one fsync (all durable on return)."""
        full, lines = self.encode(records)
        self.write(lines)
        return full

    def encode(self, records: list[dict]) -> tuple[list[dict], bytes]:
        """The records as :meth:`append_many` writes them, and their bytes (to check a quota first)."""
        written_utc = utc_now()
        full = [
            _json_safe(
                {
                    "schema_version": SCHEMA_VERSION,
                    "written_utc": written_utc,
                    "participant": self.participant,
                    "session": self.session,
                    **self.common,
                    **record,
                }
            )
            for record in records
        ]
        lines = b"".join(
            (json.dumps(r, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n").encode() for r in full
        )
        return full, lines

    def write(self, lines: bytes) -> None:
        """Append encoded records durably (one write, one fsync), or not at all.

        Raises:
            OSError: the write or the fsync failed; the file was cut back to its size before the
                write, so nothing of this batch stays to be duplicated by a retry.
        """
        with open_private_dir(self.log_dir) as (dir_fd, _created):
            fd = open_private_file(dir_fd, self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
            try:
                self._end_torn_line(fd)  # checked on every append: one pread, cheap next to the fsync
                size = os.fstat(fd).st_size
                try:
                    # One write call on O_APPEND (normally): the lines land whole and contiguous.
                    _write_all(fd, lines, self.path)
                    os.fsync(fd)
                except BaseException:
                    _cut_back(fd, size, self.path)
                    raise
            finally:
                os.close(fd)
            if not self._dir_synced:
                os.fsync(dir_fd)
                self._dir_synced = True

    def discard_if_empty(self) -> None:
        """Remove the session's file if nothing was ever written to it (a start that failed)."""
        with open_private_dir(self.log_dir) as (dir_fd, _created):
            try:
                if os.stat(self.path.name, dir_fd=dir_fd, follow_symlinks=False).st_size == 0:
                    os.unlink(self.path.name, dir_fd=dir_fd)
                    os.fsync(dir_fd)
            except FileNotFoundError:
                pass

    def size(self) -> int:
        """Bytes in the session's file (0 when it does not exist yet)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0


def _cut_back(fd: int, size: int, path: Path) -> None:
    """Truncate a failed batch away (best effort: if even that fails, the torn-line repair of the
    next append closes the fragment off, and :func:`read_log` skips it)."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError as exc:
        warnings.warn(f"{path}: could not remove a failed write ({exc}); it stays as a torn line", stacklevel=3)


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


def csv_cell(value) -> str | int | float | bool | None:
    """A CSV cell: scalars as they are, lists/dicts as compact JSON (``json.loads`` gives them back).

    A string a spreadsheet would run as a formula (starting with ``= + - @``, tab or carriage
    return; a participant can type any of these into a free-text field or an id) gets a leading
    ``'``, which spreadsheets show as text. Only strings: ``-3.5`` stays a number. The JSONL log
    keeps every value exactly; read it, not the CSV, to get the raw text back.
    """
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def export_csv(records: Iterable[dict], out_path: str | Path) -> Path:
    """Write records as one CSV row each (lead columns first, nested values as JSON strings,
    formula-like strings escaped by :func:`csv_cell`)."""
    records = list(records)
    keys = {k for r in records for k in r}
    columns = [c for c in CSV_LEAD_COLUMNS if c in keys] + sorted(keys - set(CSV_LEAD_COLUMNS))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow({k: csv_cell(record.get(k)) for k in columns})
    return out_path
