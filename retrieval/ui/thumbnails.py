"""JPEG thumbnails of gallery photos, cached on disk and safe to make from many threads at once.

Each thumbnail is written to its own temporary file (``tempfile.mkstemp`` in the same folder:
unique per call, so two threads or processes never write into one file) and renamed into place
atomically, so a reader never sees half a file. A cached file is checked once per process (JPEG
start and end markers, which every complete file has): one left corrupt by an older version or
a disk fault is made again instead of being served for good.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from retrieval.types import RGBImage

JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


def is_complete_jpeg(path: Path) -> bool:
    """True when the file starts and ends like a whole JPEG (a torn or garbled one does not)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(-2, os.SEEK_END)
            return head == JPEG_START and f.read(2) == JPEG_END
    except OSError:
        return False


class ThumbnailCache:
    """Thumbnails of ``load_photo(photo_id)`` in ``folder``, at most ``size`` pixels a side.

    Args:
        folder: where the JPEGs live (created if missing); the only folder the app serves.
        load_photo: photo id -> RGB array.
        size: longest side in pixels.
    """

    def __init__(self, folder: Path, load_photo: Callable[[str], RGBImage], size: int = 224) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.load_photo = load_photo
        self.size = size
        self._checked: set[str] = set()
        self._lock = threading.Lock()

    def path(self, photo_id: str) -> Path:
        """Where the thumbnail of ``photo_id`` lives (a hash: photo ids never reach the file system)."""
        return self.folder / (hashlib.sha1(photo_id.encode()).hexdigest()[:24] + ".jpg")

    def get(self, photo_id: str) -> Path:
        """The thumbnail's path, made (or remade, if the cached file is not a whole JPEG) on first use."""
        path = self.path(photo_id)
        with self._lock:
            checked = path.name in self._checked
        if not checked:
            if not is_complete_jpeg(path):
                self._make(photo_id, path)
            with self._lock:
                self._checked.add(path.name)
        return path

    def _make(self, photo_id: str, path: Path) -> None:
        img = Image.fromarray(self.load_photo(photo_id)).convert("RGB")
        img.thumbnail((self.size, self.size))
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=path.stem + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                img.save(f, "JPEG", quality=88)
            os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
