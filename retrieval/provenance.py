"""Which code produced a result, and where it lives: the git commit recorded in model cards and study
logs, and the project root (app.py, assets/) that defaults are found under.

A foundation module (imports nothing of the project), so training, RL export and the app share it.
"""

from __future__ import annotations

import subprocess
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
