"""Shared fixtures: the development data under ../shared/data is optional; tests using it skip cleanly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from retrieval.provenance import PROJECT_ROOT as REPO_ROOT
from retrieval.runtime import set_threads

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED_DATA = Path(os.environ.get("EARLYSKETCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data, or skip the calling test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"development data not present: {path}")
    return path


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # Two cores on CI: keep torch from oversubscribing while other processes (the app) run.
    set_threads(2)
    yield


@pytest.fixture(scope="module")
def encoder():
    """A small untrained encoder (64 px input, 32-d embeddings, seed 0), one per test module.

    Modules that need another model define their own ``encoder`` fixture, which takes precedence.
    """
    from retrieval.model.encoder import Encoder  # here, not at the top: most test modules never need torch

    return Encoder.create(input_size=64, embed_dim=32, seed=0)
