"""Which code produced a result, where it lives and how long it took: the git commit recorded in model
cards and study logs, the project root (app.py, assets/) that defaults are found under, and the
phase timings a pipeline run writes.

A foundation module (imports nothing of the project), so training, RL export and the app share it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the folder holding app.py, assets/ and retrieval/
DEFAULT_MODEL_DIR = PROJECT_ROOT / "assets" / "model"  # the shipped encoder the app and the cluster serve


def git_output(*args: str) -> str | None:
    """Stripped stdout of ``git <args>`` in this checkout; None without git, outside a repository or on error."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=PROJECT_ROOT)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def git_commit() -> str | None:
    """The checked-out commit's full hash (model cards)."""
    return git_output("rev-parse", "HEAD")


def code_version() -> str:
    """``git describe`` of the checkout, ``-dirty`` when it has uncommitted changes; "unknown" without git."""
    return git_output("describe", "--always", "--dirty", "--tags") or "unknown"


class Stopwatch:
    """Wall-clock seconds per named phase of a run (its ``timings.json``): ``lap(name)`` charges the time
    since the last lap to ``name`` (repeated names add up)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.clock = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.timings[name] = round(self.timings.get(name, 0.0) + now - self.clock, 1)
        self.clock = now

    def total(self) -> dict[str, float]:
        return {**self.timings, "total": round(sum(self.timings.values()), 1)}
