"""Stroke payloads for the fuzz tests and the parse bench: a valid one, the largest the limits allow, and
hostile ones (fixed nasty cases and seeded random mutations), each with a name and a class.

One home for them: ``tests/test_fuzz.py`` checks that every hostile payload ends in a valid sketch or a
clear error and costs no more memory to parse than the largest allowed one; ``bench/speed/bench_stroke_parse.py``
times them against a typical payload and the largest allowed one.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np

from retrieval.data.formats.stroke_json import StrokeLimits

VALID = {
    "canvas": {"width": 400, "height": 300},
    "strokes": [[[10, 20, 0], [200, 150, 40], [390, 290, 80]], [[50, 250, 500], [300, 40, 560, 0.5]]],
}


def hostile_payloads(seed: int = 0, mutations: int = 300) -> list[tuple[str, object]]:
    """(name, payload) pairs: fixed nasty cases, cuts of a valid sketch's text, seeded random bytes and
    ``mutations`` seeded random mutations of a valid sketch."""
    rng = np.random.default_rng(seed)
    text = json.dumps(VALID)
    cases = fixed_cases(text)
    for n in sorted({1, 2, 10, len(text) // 2, len(text) - 1}):
        cases.append((f"truncated to {n} chars", text[:n]))
    for i in range(40):
        cases.append((f"random bytes #{i}", rng.bytes(int(rng.integers(1, 4000)))))
    return cases + [(f"mutation #{i}", mutated(text, rng)) for i in range(mutations)]


def fixed_cases(text: str) -> list[tuple[str, object]]:
    """The named nasty cases: non-finite numbers, sizes over the limits, wrong types and shapes, deep nesting,
    bad encodings (``text``: the valid sketch as JSON)."""
    return [
        ("NaN literal", text.replace("200", "NaN", 1)),
        ("Infinity literal", text.replace("200", "Infinity", 1)),
        ("-Infinity literal", text.replace("200", "-Infinity", 1)),
        ("nan float in dict", {**VALID, "strokes": [[[math.nan, 1, 2]]]}),
        ("inf float in dict", {**VALID, "strokes": [[[1, math.inf, 2]]]}),
        (
            "1e6 points text",
            '{"canvas":{"width":9,"height":9},"strokes":[[' + ",".join(["[1,2,3]"] * 1_000_000) + "]]}",
        ),
        ("1e6 points dict", {**VALID, "strokes": [[[1, 2, 3]] * 1_000_000]}),
        ("5000 strokes", {**VALID, "strokes": [[[1, 2, 3]]] * 5000}),
        ("1001 strokes", {**VALID, "strokes": [[[1, 2, 3]]] * 1001}),
        ("negative coordinates (valid)", {**VALID, "strokes": [[[-50, -20, 0], [-1, -1, 5]]]}),
        ("huge coordinate", {**VALID, "strokes": [[[1e300, 2, 3]]]}),
        ("huge negative coordinate", {**VALID, "strokes": [[[-1e7, 2, 3]]]}),
        ("huge integer", text.replace("200", "1" + "0" * 400, 1)),
        ("4300+ digit integer", text.replace("200", "9" * 5000, 1)),
        ("huge canvas", {**VALID, "canvas": {"width": 1e12, "height": 5}}),
        ("zero canvas", {**VALID, "canvas": {"width": 0, "height": 5}}),
        ("bool coordinate", {**VALID, "strokes": [[[True, 2, 3]]]}),
        ("None coordinate", {**VALID, "strokes": [[[None, 2, 3]]]}),
        ("string coordinate", {**VALID, "strokes": [[["1", 2, 3]]]}),
        ("dict point", {**VALID, "strokes": [[{"x": 1, "y": 2, "t": 3}]]}),
        ("strokes as dict", {**VALID, "strokes": {"0": [[1, 2, 3]]}}),
        ("strokes as string", {**VALID, "strokes": "[[1,2,3]]"}),
        ("canvas as list", {**VALID, "canvas": [400, 300]}),
        ("2-value point", {**VALID, "strokes": [[[1, 2]]]}),
        ("5-value point", {**VALID, "strokes": [[[1, 2, 3, 4, 5]]]}),
        ("empty stroke", {**VALID, "strokes": [[]]}),
        ("no strokes", {**VALID, "strokes": []}),
        ("missing canvas", {"strokes": VALID["strokes"]}),
        ("top-level list", "[1, 2, 3]"),
        ("top-level number", "42"),
        ("empty text", ""),
        ("whitespace", "   \n\t"),
        ("deep nesting [", "[" * 100_000),
        ("deep nesting {", '{"a":' * 100_000),
        ("deep nesting in strokes", {**VALID, "strokes": json.loads("[" * 500 + "]" * 500)}),
        ("invalid utf-8", b'{"canvas": "\xff\xfe"}'),
        ("lone surrogate", '{"canvas": {"width": "\ud800", "height": 1}, "strokes": [[[1,2,3]]]}'),
        ("NUL bytes", "\x00" * 1000),
        ("3 MB of spaces", " " * 3_000_000),
        ("wrong type int", 12345),
        ("wrong type list", [1, 2, 3]),
        ("wrong type None", None),
    ]


MUTATION_TOKENS = [0, -1, 1e308, -1e308, 1e6 + 1, "x", None, True, [], {}, [[]], [1, 2, 3], 1.5e-320]


def mutated(text: str, rng: np.random.Generator) -> object:
    """The valid sketch ``text`` with one random change: a point value, a canvas side, an extra point value
    (from MUTATION_TOKENS), or one character of its text."""
    tokens = MUTATION_TOKENS
    data = json.loads(text)
    stroke = data["strokes"][int(rng.integers(0, 2))]
    point = stroke[int(rng.integers(0, len(stroke)))]
    target = int(rng.integers(0, 4))
    if target == 0:
        point[int(rng.integers(0, len(point)))] = tokens[int(rng.integers(0, len(tokens)))]
    elif target == 1:
        data["canvas"][["width", "height"][int(rng.integers(0, 2))]] = tokens[int(rng.integers(0, len(tokens)))]
    elif target == 2:
        stroke.append(tokens[int(rng.integers(0, len(tokens)))])
    else:
        raw = json.dumps(data)
        cut = int(rng.integers(0, len(raw)))
        return raw[:cut] + chr(int(rng.integers(32, 127))) + raw[cut + 1 :]
    return data


def payload_class(name: str) -> str:
    """The class of a hostile case: its name without the number of a random case or the length of a cut."""
    return re.sub(r" #\d+$| to \d+ chars$", "", name)


def largest_allowed_payload(limits: StrokeLimits = StrokeLimits(), seed: int = 0) -> str:
    """The JSON text of the largest sketch ``limits`` accept: the most strokes of the most points each, up to
    ``max_points``; a seeded pen walk with one decimal, as the canvas sends (distinct numbers, not one repeated)."""
    rng = np.random.default_rng(seed)
    n_strokes = limits.max_points // limits.max_points_per_stroke
    steps = rng.normal(0, 2.0, size=(n_strokes, limits.max_points_per_stroke, 2))
    xy = np.clip([200, 150] + np.cumsum(steps, axis=1), 0, [400, 300]).round(1)  # on the 400x300 canvas
    t = np.arange(n_strokes * limits.max_points_per_stroke, dtype=float).reshape(n_strokes, -1) * 16.7
    strokes = [[[float(x), float(y), round(float(ms), 1)] for (x, y), ms in zip(s_xy, s_t)] for s_xy, s_t in zip(xy, t)]
    return json.dumps({"canvas": {"width": 400, "height": 300}, "strokes": strokes})
