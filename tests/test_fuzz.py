"""Fuzz the stroke API (parser, Retriever, the running app) and photo-folder galleries with hostile input.

Every case must end in either a valid result or a clear error (``StrokePayloadError`` from the
library, an error event saying "Invalid sketch" from the app), never another exception, a hang
or a dead server. Each test reports how many cases it tried.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tracemalloc

import httpx
import numpy as np
import pytest
from PIL import Image

from harness.api_client import ApiError, call_rank
from harness.stroke_payloads import VALID, hostile_payloads, largest_allowed_payload
from retrieval.data.formats.stroke_json import StrokeLimits, StrokePayloadError, parse_stroke_json
from retrieval.model.encoder import create_encoder
from retrieval.serving.gallery import build_folder_gallery
from retrieval.serving.index import PhotoIndex
from retrieval.serving.retriever import Retriever
from tests.app_server import running_app


def _report(request, what: str, count: int) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    line = f"fuzz: {count} {what} cases tried"
    if reporter is not None:
        reporter.write_line(line)


def _check_sketch(sketch, limits: StrokeLimits) -> None:
    assert 1 <= sketch.num_strokes <= limits.max_strokes and sketch.num_points <= limits.max_points
    assert sketch.canvas_width > 0 and sketch.canvas_height > 0
    for stroke in sketch.strokes:
        assert stroke.shape[1] == 3 and np.isfinite(stroke).all()
        assert np.abs(stroke[:, :2]).max() <= limits.max_abs_coordinate


@pytest.fixture(scope="module")
def retriever():
    encoder = create_encoder(seed=0)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((40, encoder.meta["embed_dim"])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return Retriever(encoder, PhotoIndex.build(vectors, [f"p{i}" for i in range(40)]))


def _parse_peak_bytes(payload, limits: StrokeLimits) -> int:
    """Peak Python memory of parsing ``payload`` (valid or refused)."""
    tracemalloc.start()
    try:
        with contextlib.suppress(StrokePayloadError):
            parse_stroke_json(payload, limits)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_parser_and_retriever_refuse_hostile_payloads_clearly(request, retriever):
    limits = StrokeLimits()
    cases = hostile_payloads()
    outcomes = {"ranked": 0, "refused": 0}
    allowed_peak = _parse_peak_bytes(
        largest_allowed_payload(limits), limits
    )  # what the largest allowed payload costs to parse
    for name, payload in cases:
        assert _parse_peak_bytes(payload, limits) <= allowed_peak, f"{name} costs more to parse than any valid sketch"
        try:
            sketch = parse_stroke_json(payload, limits)
        except StrokePayloadError as err:
            assert len(str(err)) > 15, f"{name}: unclear error {err!r}"
            with pytest.raises(StrokePayloadError):
                retriever.rank(payload, k=5)
            outcomes["refused"] += 1
        else:
            _check_sketch(sketch, limits)
            result = retriever.rank(payload, k=5, target_id="p3")
            assert len(result.ids) == 5 and 1 <= result.target_rank <= 40, name
            assert all(math.isfinite(s) for s in result.scores), name
            outcomes["ranked"] += 1
    assert outcomes["refused"] > 50 and outcomes["ranked"] > 0, outcomes
    assert len(retriever.rank(VALID, k=3).ids) == 3  # still serving
    _report(request, f"stroke-payload ({outcomes})", len(cases))


def test_rank_batch_isolates_bad_payloads(retriever):
    payloads = [VALID, "{broken", {**VALID, "strokes": [[[math.nan, 0, 0]]]}, json.dumps(VALID)]
    results = retriever.rank_batch(payloads, k=4, errors="return")
    assert [r.error is None for r in results] == [True, False, False, True]
    assert results[0].ids == results[3].ids and "NaN" in results[2].error


# --- the running app -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("fuzz_app")) as url:
        yield url


def _as_text(payload: object) -> str | None:
    """What a client can put in the endpoint's string argument (None: not expressible as text)."""
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="surrogateescape").encode("utf-8", "replace").decode("utf-8")
    if isinstance(payload, str):
        return payload.encode("utf-8", "replace").decode("utf-8")
    if payload is None:
        return None
    return json.dumps(payload, allow_nan=True)


@pytest.mark.slow
def test_app_endpoint_survives_hostile_payloads(request, app_url):
    cases = [(n, _as_text(p)) for n, p in hostile_payloads(seed=1, mutations=60)]
    cases = [(n, t) for n, t in cases if t is not None and len(t) < 12_000_000]
    valid = json.dumps(VALID)
    refused = ranked = 0
    with httpx.Client(trust_env=False) as client:
        for i, (name, text) in enumerate(cases):
            try:
                result = call_rank(client, app_url, text, 5, None, timeout_s=60)
                assert len(result["ids"]) == 5, name
                ranked += 1
            except ApiError as err:
                assert "Invalid sketch" in str(err) or "invalid" in str(err).lower(), f"{name}: {err}"
                refused += 1
            except httpx.HTTPStatusError as err:  # over --max-body-bytes: refused before it is read
                assert err.response.status_code == 413 and len(text) > 1_000_000, f"{name}: {err}"
                refused += 1
            if i % 20 == 0:
                assert len(call_rank(client, app_url, valid, 3)["ids"]) == 3, f"server stopped serving after {name}"
        # Hostile k / target values and a malformed request body.
        for k in (0, -5, 10**9):
            with pytest.raises(ApiError):
                call_rank(client, app_url, valid, k, None)
        for target in ("../../etc/passwd", "x" * 10_000, "\x00"):
            with pytest.raises(ApiError):
                call_rank(client, app_url, valid, 5, target)
        # A body that is not UTF-8 JSON: FastAPI's validation-error handler itself fails on it (it
        # decodes the bytes to echo them) and drops the connection; either way the request is refused
        # and the server must keep serving.
        for body in (b"{not json", b"\xff{not json", b'{"data": "not a list"}'):
            try:
                assert client.post(f"{app_url}/gradio_api/call/rank", content=body, timeout=30).status_code >= 400
            except httpx.TransportError:
                pass
        assert len(call_rank(client, app_url, valid, 3)["ids"]) == 3
    assert refused > 30 and ranked > 0
    _report(request, f"app endpoint (refused {refused}, ranked {ranked}) + 9 bad-argument/body", len(cases) + 9)


# --- photo folders -------------------------------------------------------------------------------
@pytest.mark.slow
def test_photo_folder_with_hostile_files(request, tmp_path):
    root = tmp_path / "photos"
    (root / "nested").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (40, 30), "red").save(outside / "secret.png")
    Image.new("RGB", (64, 48), "blue").save(root / "good.png")
    Image.new("RGB", (64, 64), "green").save(root / "nested" / "good2.jpg")
    Image.new("RGB", (3000, 2000), "gray").save(root / "large_but_allowed.jpg")
    Image.new("1", (8000, 8000)).save(root / "bomb.png")  # 64 Mpx: a tiny file over the 50 Mpx guard
    (root / "text.png").write_text("this is not an image")
    (root / "empty.jpg").write_bytes(b"")
    (root / "truncated.png").write_bytes((root / "good.png").read_bytes()[:60])
    (root / "random.webp").write_bytes(np.random.default_rng(0).bytes(5000))
    (root / "..hidden..png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    (root / "notes.txt").write_text("ignored: not an image suffix")
    os.symlink(outside / "secret.png", root / "escape.png")
    os.symlink(outside, root / "escape_dir")
    os.symlink("/etc/passwd", root / "passwd.png")
    os.symlink(root / "good.png", root / "inside_link.png")  # stays inside: allowed
    with pytest.warns(UserWarning):
        gallery = build_folder_gallery(create_encoder(seed=0), root, cache_dir=None, progress=False)
    assert sorted(gallery.index.ids) == ["good.png", "inside_link.png", "large_but_allowed.jpg", "nested/good2.jpg"]
    skipped = "\n".join(gallery.skipped)
    for name in (
        "bomb.png",
        "text.png",
        "empty.jpg",
        "truncated.png",
        "random.webp",
        "..hidden..png",
        "escape.png",
        "passwd.png",
    ):
        assert name in skipped, f"{name} should be reported as skipped:\n{skipped}"
    assert "decompression-bomb" in skipped and "symlink leaving" in skipped
    assert all(p.resolve().is_relative_to(root.resolve()) for p in gallery.paths.values())
    _report(request, "photo-folder", 13)
