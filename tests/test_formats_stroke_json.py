"""The app's stroke JSON: strict validation with clear errors, limits checked before allocation, round trip."""

from __future__ import annotations

import contextlib
import json
import tracemalloc

import numpy as np
import pytest

from retrieval.data.formats import StrokeLimits, StrokePayloadError, parse_stroke_json, to_stroke_json
from retrieval.data.sketch import Sketch
from tests.sketch_compare import assert_same_sketch

VALID = {"canvas": {"width": 400, "height": 300}, "strokes": [[[10, 20, 0], [11.5, 21, 16.7]], [[50, 60, 400, 0.5]]]}


def _payload(strokes, canvas=None):
    return {"canvas": canvas or {"width": 400, "height": 300}, "strokes": strokes}


def test_parses_text_bytes_and_dict():
    for payload in (json.dumps(VALID), json.dumps(VALID).encode(), VALID):
        sketch = parse_stroke_json(payload)
        assert (sketch.canvas_width, sketch.canvas_height) == (400.0, 300.0)
        np.testing.assert_array_equal(sketch.strokes[0], [[10, 20, 0], [11.5, 21, 16.7]])
        np.testing.assert_array_equal(sketch.strokes[1], [[50, 60, 400]])  # pressure dropped
        assert sketch.meta == {"format": "stroke-json"}


def test_mixed_point_arity_and_extra_keys_are_accepted():
    payload = _payload([[[1, 2, 3], [4, 5, 6, 0.9]]]) | {"pointerType": "pen", "dpr": 2}
    np.testing.assert_array_equal(parse_stroke_json(payload).strokes[0], [[1, 2, 3], [4, 5, 6]])


def test_round_trip():
    rng = np.random.default_rng(0)
    strokes = tuple(np.column_stack([rng.uniform(0, 500, (n, 2)), np.sort(rng.uniform(0, 9e3, n))]) for n in (1, 7, 30))
    sketch = Sketch(strokes, 512.0, 384.5)
    assert_same_sketch(parse_stroke_json(to_stroke_json(sketch)), sketch)
    assert_same_sketch(parse_stroke_json(json.dumps(to_stroke_json(sketch))), sketch)  # exact through text too


@pytest.mark.parametrize(
    "payload, message",
    [
        ('{"canvas": {"width": 10, "height": 10}, "strokes": [[[1, 2, 3]', "invalid or truncated JSON"),
        ("", "invalid or truncated JSON"),
        (b'{"canvas": "\xc3\x28"}', "not UTF-8"),
        ("[1, 2]", "JSON object"),
        (42, "JSON text"),
        ('{"strokes": [[[1, 2, 3]]]}', "canvas"),
        (_payload([[[1, 2, 3]]], {"width": 0, "height": 10}), r"canvas.width must be in \(0"),
        (_payload([[[1, 2, 3]]], {"width": 10, "height": -5}), "canvas.height"),
        (_payload([[[1, 2, 3]]], {"width": "10", "height": 10}), "canvas.width must be a number"),
        (_payload([[[1, 2, 3]]], {"width": True, "height": 10}), "canvas.width must be a number"),
        (_payload([[[1, 2, 3]]], {"width": 1e300, "height": 10}), "canvas.width must be in"),
        ({"canvas": {"width": 1, "height": 1}}, '"strokes" must be a list'),
        (_payload([]), '"strokes" is empty'),
        (_payload([[[1, 2, 3]], []]), "stroke 1 is empty"),
        (_payload([{"x": 1}]), "stroke 0 must be a list"),
        (_payload([[[1, 2]]]), r"stroke 0 point 0 must be \[x, y, t\]"),
        (_payload([[[1, 2, 3], [1, 2, 3, 4, 5]]]), "stroke 0 point 1 must be"),
        (_payload([[[1, 2, 3], 7]]), "stroke 0 point 1 must be"),
        (_payload([[[1, 2, 3]], [[1, "2", 3]]]), r"stroke 1 point 0 holds '2' \(str\)"),
        (_payload([[[1, 2, "NaN"]]]), r"holds 'NaN' \(str\)"),
        (_payload([[[1, 2, "Infinity"]]]), r"holds 'Infinity' \(str\)"),
        (_payload([[[1, None, 3]]]), "holds None"),
        (_payload([[[1, True, 3]]]), r"holds True \(bool\)"),
        (_payload([[[1, 2, 3], [1, float("nan"), 3]]]), "stroke 0 point 1 is NaN or infinite"),
        (_payload([[[1, 2, 3, float("inf")]]]), "NaN or infinite"),
        (_payload([[[1, 2, 3], [1, 2, 3, float("nan")]]]), "stroke 0 point 1 is NaN"),
        (_payload([[[2e6, 2, 3]]]), r"\|x\| = 2e\+06 exceeds"),
        (_payload([[[1, -3e7, 3]]]), r"\|y\|"),
        (_payload([[[1, 2, 1e12]]]), r"\|t\|"),
        (_payload([[[10**400, 2, 3]]]), "too large"),
    ],
)
def test_rejections_say_what_is_wrong(payload, message):
    with pytest.raises(StrokePayloadError, match=message):
        parse_stroke_json(payload)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_nan_and_infinity_literals(constant):
    text = f'{{"canvas": {{"width": 10, "height": 10}}, "strokes": [[[1, {constant}, 3]]]}}'
    with pytest.raises(StrokePayloadError, match=f"{constant} is not a valid coordinate"):
        parse_stroke_json(text)
    with pytest.raises(StrokePayloadError, match="NaN is not a valid"):
        parse_stroke_json('{"canvas": {"width": NaN, "height": 10}, "strokes": [[[1, 2, 3]]]}')


def test_error_is_a_value_error():
    assert issubclass(StrokePayloadError, ValueError)


def test_deep_nesting_is_rejected():
    with pytest.raises(StrokePayloadError, match="nested too deeply|must be"):
        parse_stroke_json("[" * 100_000 + "]" * 100_000, StrokeLimits(max_bytes=10**6))


def test_count_limits():
    limits = StrokeLimits(max_strokes=2, max_points=5, max_points_per_stroke=3)
    with pytest.raises(StrokePayloadError, match="3 strokes, over the limit of 2"):
        parse_stroke_json(_payload([[[1, 2, 3]]] * 3), limits)
    with pytest.raises(StrokePayloadError, match="stroke 1 has 4 points, over the limit of 3"):
        parse_stroke_json(_payload([[[1, 2, 3]], [[1, 2, 3]] * 4]), limits)
    with pytest.raises(StrokePayloadError, match="more than 5 points"):
        parse_stroke_json(_payload([[[1, 2, 3]] * 3, [[1, 2, 3]] * 3]), limits)
    assert parse_stroke_json(_payload([[[1, 2, 3]] * 3, [[1, 2, 3]] * 2]), limits).num_points == 5
    with pytest.raises(StrokePayloadError, match="over the limit of 100"):
        parse_stroke_json(json.dumps(VALID), StrokeLimits(max_bytes=100))


def test_million_point_payloads_are_refused_before_anything_their_size_is_built():
    text = '{"canvas": {"width": 10, "height": 10}, "strokes": [[' + "[1.5, 2.5, 3]," * 10**6 + "[1, 2, 3]]]}"
    point = [1.5, 2.5, 3.0]
    one_stroke = _payload([[point] * 10**6])
    many_strokes = _payload([[point] * 1000] * 1000)
    truncated = text[:-3]
    tracemalloc.start()
    try:
        with pytest.raises(StrokePayloadError, match="bytes, over the limit"):
            parse_stroke_json(text)
        with pytest.raises(StrokePayloadError, match="bytes, over the limit"):
            parse_stroke_json(truncated)  # the size check comes before any parsing
        # Already-decoded payloads are counted before any array is built.
        with pytest.raises(StrokePayloadError, match="over the limit of 10000 per stroke"):
            parse_stroke_json(one_stroke)
        with pytest.raises(StrokePayloadError, match="more than 50000 points"):
            parse_stroke_json(many_strokes)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # A million points decoded would take 24 MB as float64, the text's parse tree far more.
    assert peak < 1_000_000, f"refusing took {peak / 1e6:.1f} MB: something the payload's size was built"


def test_the_largest_allowed_payload_parses_whole():
    point = [123.456, 78.9, 1234.5]
    sketch = parse_stroke_json(json.dumps(_payload([[point] * 10_000] * 5)))
    assert sketch.num_points == 50_000 and [len(s) for s in sketch.strokes] == [10_000] * 5
    assert sketch.strokes[-1][-1].tolist() == pytest.approx(point)


def test_real_chairv2_sketches_round_trip(shared_data):
    from retrieval.data.formats import read_qmul

    sketches = list(read_qmul(shared_data("chairv2-train", "ChairV2_Coordinate")).values())[:50]
    for sketch in sketches:
        assert_same_sketch(parse_stroke_json(json.dumps(to_stroke_json(sketch))), sketch)


@pytest.mark.parametrize("payload", ['{"canvas": {"width": 8, "height": 8}, "strokes": [[[1, 2, 0]]]}', "{not json"])
def test_parsing_leaves_the_cyclic_collector_as_it_found_it(payload):
    import gc

    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        try:
            with contextlib.suppress(StrokePayloadError):
                parse_stroke_json(payload)
            assert gc.isenabled() is enabled
        finally:
            gc.enable()


def test_payloads_orjson_refuses_get_json_s_verdict_and_message():
    big_int = '{"canvas": {"width": 8, "height": 8}, "strokes": [[[1, 2, ' + "9" * 30 + "]]]}"
    with pytest.raises(StrokePayloadError, match=r"\|t\| = 1e\+30 exceeds"):
        parse_stroke_json(big_int)  # orjson stops at 64-bit integers; json reads it, the time bound refuses it
    with pytest.raises(StrokePayloadError, match="not a valid coordinate: send finite numbers only"):
        parse_stroke_json('{"canvas": {"width": 8, "height": 8}, "strokes": [[[NaN, 2, 0]]]}')
