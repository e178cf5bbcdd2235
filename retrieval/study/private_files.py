"""Private, link-safe files for the study log: 0700 folder, 0600 files, no writing through links.

Study logs hold participants' data, so only the account running the app may list the folder or
read a file. Every file is opened relative to a descriptor of the folder with ``O_NOFOLLOW``: the
folder checked is the folder written, and a symbolic link planted at a log path (live or dangling,
pointing at any file this account may write) is refused with :class:`UnsafeLogPathError` instead
of being followed. A folder or file left looser by an older version is tightened with a warning,
rather than refused: the folder is the app's by configuration, and refusing would stop every
existing deployment until someone ran ``chmod``.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DIR_MODE = 0o700  # only the account running the app may list the folder...
FILE_MODE = 0o600  # ... or read a file in it
OPEN_TO_OTHERS = 0o077  # any permission for the group or others


class UnsafeLogPathError(OSError):
    """A log path is a symbolic link or not a regular file or folder: nothing is written through it.

    An ``OSError``, so the app reports it to the operator's console, not to the participant.
    """


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries (a file just created in it) durable, not only the file's bytes."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private(fd: int, path: Path, mode: int) -> None:
    """Tighten an open folder or file that the group or others may access to ``mode``, with a warning
    (it changes what the researcher may have set up).

    Raises:
        PermissionError: this account cannot chmod it (another owner); the message says what to run.
    """
    old = stat.S_IMODE(os.fstat(fd).st_mode)
    if not old & OPEN_TO_OTHERS:
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
        stacklevel=3,
    )


@contextmanager
def open_private_dir(folder: Path) -> Iterator[tuple[int, bool]]:
    """The folder as a descriptor, and whether it was just created (then mode 0700; tightened if looser).

    Raises:
        UnsafeLogPathError: the path is a file, or a symbolic link made after it was resolved.
    """
    try:
        folder.mkdir(mode=DIR_MODE, parents=True)
        created = True
    except FileExistsError:
        created = False
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeLogPathError(
                f"the log folder {folder} is not a folder (a file, or a symbolic link made after the app "
                "started): remove it, or choose another --log-dir"
            ) from exc
        raise
    try:
        make_private(fd, folder, DIR_MODE)
        yield fd, created
    finally:
        os.close(fd)


def open_private_file(dir_fd: int, path: Path, flags: int) -> int:
    """Open ``path.name`` inside the folder descriptor, never through a link; created 0600.

    Raises:
        UnsafeLogPathError: the path is a symbolic link or not a regular file.
        FileExistsError: ``flags`` holds ``O_EXCL`` and a regular file is there.
    """
    try:
        fd = os.open(path.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE, dir_fd=dir_fd)
    except OSError as exc:
        # O_NOFOLLOW fails with ELOOP (EMLINK on FreeBSD); O_EXCL fails with EEXIST before looking.
        if exc.errno in (errno.ELOOP, errno.EMLINK) or (
            exc.errno == errno.EEXIST and stat.S_ISLNK(os.lstat(path.name, dir_fd=dir_fd).st_mode)
        ):
            raise UnsafeLogPathError(
                f"{path} is a symbolic link: study logs are never written through links. "
                "Remove the link (and check who planted it), or move the real log file there"
            ) from exc
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeLogPathError(f"{path} is not a regular file: remove it, or choose another --log-dir")
        make_private(fd, path, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd
