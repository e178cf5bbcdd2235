"""Shared fixtures, and the markers a test gets from the fixtures it uses.

A test that takes the ``browser`` fixture is marked ``browser``, one that takes ``shared_data`` is
marked ``shared_data`` (the development data under ../shared/data is optional: those tests skip
cleanly without it). ``slow`` and ``cluster`` are set in the test files. ``make test-fast`` runs
``-m "not slow and not browser and not cluster"``; the markers are declared in pyproject.toml.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from retrieval.provenance import PROJECT_ROOT as REPO_ROOT
from retrieval.runtime import set_threads

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED_DATA = Path(os.environ.get("EARLYSKETCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


MARKING_FIXTURES = ("browser", "shared_data")  # a test using one of these gets the marker of that name


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name in MARKING_FIXTURES:
            if name in getattr(item, "fixturenames", ()):
                item.add_marker(name)


def _shared_path(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"development data not present: {path}")
    return path


@pytest.fixture
def shared_data() -> Callable[..., Path]:
    """``shared_data("chairv2-train", ...)``: a path under ../shared/data, or skip the test when it is absent."""
    return _shared_path


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (Debian's, under Playwright) for the module's tests; skips them without it."""
    pytest.importorskip("playwright.sync_api")
    from harness.browser import CHROMIUM, NO_CHROMIUM, chromium_browser

    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    with chromium_browser() as browser:
        yield browser


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
    from retrieval.model.encoder import (  # here, not at the top: most test modules never need torch
        create_encoder,
    )

    return create_encoder(input_size=64, embed_dim=32, seed=0)


UI_GALLERY = [f"photo_{i:02d}" for i in range(30)]


@pytest.fixture(scope="module")
def ui_backend(encoder, tmp_path_factory):
    """The app's Backend over a real Retriever: the small encoder, a 30-photo index of random unit
    vectors (ids ``photo_00``...), flat grey photos and their thumbnails in a temporary folder."""
    import numpy as np

    from retrieval.serving.gallery import Gallery
    from retrieval.serving.index import PhotoIndex
    from retrieval.serving.retriever import Retriever
    from retrieval.ui.backend import Backend
    from retrieval.ui.thumbnails import ThumbnailCache

    vectors = np.random.default_rng(0).standard_normal((len(UI_GALLERY), encoder.meta["embed_dim"])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = PhotoIndex.build(vectors, UI_GALLERY)
    gallery = Gallery(index, "test", loader=lambda photo_id: np.full((48, 32, 3), 200, np.uint8))
    thumbs = ThumbnailCache(tmp_path_factory.mktemp("thumbs"), gallery.load_photo, 32)
    retriever = Retriever(encoder, index)
    versions = ("model-hash", "code-version", ())
    return Backend(retriever, gallery.photos, thumbs, *versions, retriever=retriever)
