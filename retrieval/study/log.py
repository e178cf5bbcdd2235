"""Append-only, crash-safe user-study log: one JSONL file per session.

Every record is one JSON object on one line, written with a single ``os.write`` on an
``O_APPEND`` descriptor followed by ``os.fsync``, so a record is on disk before ``append``
returns: a ``kill -9`` (or a power cut after the fsync) loses no acknowledged record. Opening
an existing session file appends to it; if the previous writer died mid-line, a newline is
written first so the torn fragment stays on its own line, which :func:`read_log` skips.

File name: ``<participant>__<session>.jsonl`` inside the log folder, each id encoded by
:func:`encode_id`: letters, digits, ``.`` and ``-`` stay, every other byte becomes ``_XX`` (hex),
so the name is reversible (:func:`decode_id`), ``__`` can only be the separator, and two
different (participant, session) pairs never share a file; no id can point outside the folder.
An id is capped on its UTF-8 bytes and on its encoded length, so any two ids fit one file name.
:meth:`StudyLog.create` claims a new session file atomically (``O_EXCL``) and refuses an existing
one unless resuming is asked for, and refuses ids that differ from an existing log's only in case
(``P07`` and ``p07`` would share one file on a case-insensitive file system, and are most likely
one person typed twice). Both the JSONL files and the CSV export load in pandas as-is
(``pd.read_json(path, lines=True)``, ``pd.read_csv(path)``); the CSV escapes cells a spreadsheet
would run as formulas (:func:`csv_cell`).

Participants' data stays private to the account running the app: the folder is 0700 and the files
0600 (looser ones left by older versions are tightened, with a warning), and every file is opened
through a descriptor of the folder with ``O_NOFOLLOW``, so a symbolic link planted at a log path
is refused (:class:`UnsafeLogPathError`) instead of being written through.

Record types (field ``type``): ``session_start``, ``trial_start``, ``stroke``, ``undo``,
``clear``, ``trial_end``, ``session_end``; the full schema is in docs/app.md.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import stat
import urllib.parse
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

SCHEMA_VERSION = 1
LOG_SUFFIX = ".jsonl"
ID_SEPARATOR = "__"
MAX_ID_BYTES = 64  # UTF-8 bytes of one id (64 ASCII letters): the file system counts bytes, not characters
NAME_MAX = 255  # bytes in one file name on ext4, XFS, btrfs, APFS; create() also asks the actual file system
# Encoded characters of one id: two at this cap plus the separator and suffix make a 254-byte name.
MAX_ENCODED_ID_LENGTH = (NAME_MAX - len(ID_SEPARATOR) - len(LOG_SUFFIX)) // 2
LOG_DIR_MODE = 0o700  # participants' data: only the account running the app may list the folder...
LOG_FILE_MODE = 0o600  # ... or read a log
PRIVATE_BITS = 0o077  # any permission for the group or others
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


class IdCaseCollisionError(ValueError):
    """An id differs from an existing log's only in case (``p07`` next to ``P07``).

    Refused rather than given a distinct name: on a case-insensitive file system (macOS, Windows
    shares) the two would be one file, and to a researcher they are most likely one participant
    typed twice; analysis grouping by id would otherwise split that person in two.
    """


class UnsafeLogPathError(OSError):
    """A log path is a symbolic link or not a regular file: nothing is written through it."""


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries (a file just created in it) durable, not only the file's bytes."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_private(fd: int, path: Path, mode: int) -> None:
    """Tighten a log folder or file that the group or others may access (left by an older version)
    to ``mode``; warns, since it changes a folder the researcher may have set up."""
    old = stat.S_IMODE(os.fstat(fd).st_mode)
    if not old & PRIVATE_BITS:
        return
    try:
        os.fchmod(fd, mode)
    except PermissionError as exc:
        raise PermissionError(
            f"{path} is open to other users (mode {old:o}) and this account cannot change that: "
            f"run `chmod {mode:o} {path}` as its owner, or choose a log folder of your own (--log-dir)"
        ) from exc
    warnings.warn(
        f"{path} was open to other users (mode {old:o}); made it private (mode {mode:o}): "
        "study logs hold participants' data",
        UserWarning,
        stacklevel=4,
    )


@contextmanager
def _open_log_dir(log_dir: Path) -> Iterator[tuple[int, bool]]:
    """The log folder as a descriptor, and whether it was just created (mode 0700; tightened if looser).

    Files are then opened relative to this descriptor, so the folder checked is the folder written.
    """
    try:
        log_dir.mkdir(mode=LOG_DIR_MODE, parents=True)
        created = True
    except FileExistsError:
        created = False
    try:
        fd = os.open(log_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeLogPathError(
                f"the log folder {log_dir} is not a folder (a file, or a symbolic link made after the app "
                "started): remove it, or choose another --log-dir"
            ) from exc
        raise
    try:
        _make_private(fd, log_dir, LOG_DIR_MODE)
        yield fd, created
    finally:
        os.close(fd)


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
        participant: Participant id (stripped; file name part by :func:`encode_id`).
        session: Session id (stripped; file name part by :func:`encode_id`).
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

    def _open(self, dir_fd: int, flags: int) -> int:
        """Open the session file inside the folder descriptor, never through a link; 0600.

        Raises:
            UnsafeLogPathError: the path is a symbolic link (followed, it could point at any file
                this account may write) or not a regular file.
        """
        try:
            fd = os.open(self.path.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, LOG_FILE_MODE, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK) or (
                exc.errno == errno.EEXIST and stat.S_ISLNK(os.lstat(self.path.name, dir_fd=dir_fd).st_mode)
            ):
                raise UnsafeLogPathError(
                    f"{self.path} is a symbolic link: study logs are never written through links. "
                    "Remove the link (and check who planted it), or move the real log file there"
                ) from exc
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafeLogPathError(f"{self.path} is not a regular file: remove it, or choose another --log-dir")
            _make_private(fd, self.path, LOG_FILE_MODE)
        except BaseException:
            os.close(fd)
            raise
        return fd

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
        if self.path.name in names:
            return  # this session's own file: resumed, or refused by the O_EXCL claim
        for name in names:
            ids = parse_log_name(name)
            if ids is None:
                continue
            participant, session = ids
            if participant != self.participant and participant.casefold() == self.participant.casefold():
                raise IdCaseCollisionError(
                    f"participant {self.participant!r} differs only in case from participant {participant!r}, "
                    f"who already has a log: enter {participant!r} exactly if that is the same person, "
                    "or choose an id that differs in more than case"
                )
            if (
                participant == self.participant
                and session != self.session
                and session.casefold() == self.session.casefold()
            ):
                raise IdCaseCollisionError(
                    f"session {self.session!r} differs only in case from session {session!r} of participant "
                    f"{participant!r}: enter {session!r} exactly to resume it, or choose another session id"
                )

    @classmethod
    def create(
        cls, log_dir: str | Path, participant: str, session: str, common: dict | None = None, *, resume: bool = False
    ) -> StudyLog:
        """Claim the session's file: a new one, or with ``resume=True`` also an existing one.

        The claim is ``O_CREAT | O_EXCL``: of two participants starting the same session at the
        same moment exactly one wins; the folder is fsync'd so the new name survives a power cut.
        A new file is first checked against the folder's logs for ids differing only in case.

        Raises:
            SessionExistsError: the file exists and ``resume`` is False.
            IdCaseCollisionError: a new file's ids differ from an existing log's only in case.
            UnsafeLogPathError: the log path is a symbolic link or not a regular file.
        """
        log = cls(log_dir, participant, session, common)
        with _open_log_dir(log.log_dir) as (dir_fd, created):
            if created:
                fsync_dir(log.log_dir.parent)
            log._check_new_name(dir_fd)
            try:
                fd = log._open(dir_fd, os.O_WRONLY | os.O_CREAT | (0 if resume else os.O_EXCL))
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
        with _open_log_dir(self.log_dir) as (dir_fd, _created):
            fd = self._open(dir_fd, os.O_RDWR | os.O_APPEND | os.O_CREAT)
            try:
                self._end_torn_line(fd)  # checked on every append: one pread, cheap next to the fsync
                # One write call on O_APPEND (normally): the lines land whole and contiguous.
                _write_all(fd, lines, self.path)
                os.fsync(fd)
            finally:
                os.close(fd)
            if not self._dir_synced:
                os.fsync(dir_fd)
                self._dir_synced = True
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
