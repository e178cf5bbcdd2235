"""Pen-up -> gallery painted, measured inside headless Chromium against the app (10k photos).

Starts ``app.py`` on a free 127.0.0.1 port, opens it in Debian's Chromium through Playwright
(``harness.browser``: the ``chromium`` on the PATH; never ``playwright install``; every request that is
not to 127.0.0.1 is blocked and counted) and draws procedural sketches stroke by stroke with the
mouse. In the page, a capture-phase ``pointerup`` listener stamps ``performance.now()`` when the
pen lifts on the canvas; a MutationObserver on the result grid's ``data-renders`` attribute
(assets/ui/results.js bumps it after re-rendering the grid) stamps the DOM update, and the next
``requestAnimationFrame`` stamps the frame that paints it ("painted"). It also records when
every thumbnail in the grid has loaded. After ``--strokes-per-sketch`` strokes the canvas is
cleared (not timed) and a new sketch starts.

    .venv/bin/python -m bench.load.bench_browser                         # >= 60 strokes at 10k photos
    .venv/bin/python -m bench.load.bench_browser --strokes 20 --gallery-size 1000
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from bench.lib.common import (
    BENCH_CACHE,
    DEFAULT_MODEL,
    Target,
    command_line,
    header_lines,
    machine_info,
    markdown_table,
    model_label,
    percentiles,
    target_table,
    write_results,
)
from bench.lib.plots import save_plot, use_agg
from harness.api_client import LOCALHOST, running_app
from harness.browser import CHROMIUM, CHROMIUM_ARGS, NO_CHROMIUM, chromium_browser
from retrieval.cli import parse_config

CANVAS = "#es-canvas canvas.es-canvas"
RESULTS = "#es-results .es-results"

# Installed once in the page: stamps pen-up, grid DOM update, the painting frame and thumbnails loaded.
OBSERVER_JS = """
([canvasSelector, resultsSelector]) => {
  const es = window.__es = {samples: [], pending: null};
  const canvas = document.querySelector(canvasSelector);
  const root = document.querySelector(resultsSelector);
  window.addEventListener('pointerup', (e) => { if (e.target === canvas) es.pending = performance.now(); }, true);
  new MutationObserver(() => {
    if (es.pending === null) return;
    const up = es.pending;
    es.pending = null;
    const mut = performance.now();
    requestAnimationFrame(() => {
      const s = {up, mut, paint: performance.now(), imgs: null, n: root.querySelectorAll('.es-grid img').length};
      es.samples.push(s);
      const poll = () => {
        const imgs = [...root.querySelectorAll('.es-grid img')];
        if (imgs.every((i) => i.complete)) s.imgs = performance.now();
        else if (performance.now() < s.paint + 5000) requestAnimationFrame(poll);
      };
      poll();
    });
  }).observe(root, {attributes: true, attributeFilter: ['data-renders']});
}
"""


@dataclass
class Config:
    """Benchmark settings."""

    strokes: int = 60  # timed strokes (>= 50 for the target)
    strokes_per_sketch: int = 10  # then Clear and start the next sketch
    gallery_size: int = 10_000  # procedural photos in the app's gallery
    gap_ms: float = 250.0  # pause after each painted result before the next stroke
    stroke_timeout_s: float = 30.0  # give up on a stroke whose result never paints
    max_s: float = 300.0  # hard cap on the drawing loop
    app_args: str = ""  # extra app.py flags
    model: Path = DEFAULT_MODEL
    cache_dir: Path = BENCH_CACHE
    seed: int = 0
    name: str = "browser"


def strokes_to_draw(cfg: Config) -> list[list[np.ndarray]]:
    """Sketches (lists of (n, 2) point arrays on a 256 canvas) of random gallery photos."""
    from retrieval.data.procedural import generate_sketch

    rng = np.random.default_rng(cfg.seed)
    sketches, total = [], 0
    while total < cfg.strokes:
        sketch = generate_sketch(cfg.seed, int(rng.integers(0, cfg.gallery_size)), int(rng.integers(0, 3)))
        strokes = [s[:, :2] / max(sketch.canvas_width, sketch.canvas_height) for s in sketch.strokes]
        strokes = strokes[: min(cfg.strokes_per_sketch, cfg.strokes - total)]
        sketches.append(strokes)
        total += len(strokes)
    return sketches


def draw_stroke(page, box: dict, points: np.ndarray) -> None:
    side = min(box["width"], box["height"]) * 0.9
    x0, y0 = box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2
    xy = [(x0 + float(x) * side, y0 + float(y) * side) for x, y in points[:: max(1, len(points) // 40)]]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:] or [(xy[0][0] + 1, xy[0][1])]:
        page.mouse.move(x, y)
    page.mouse.up()


def renders(page) -> int:
    return int(page.eval_on_selector(RESULTS, "el => Number(el.dataset.renders || 0)"))


def run_browser(url: str, cfg: Config) -> tuple[list[dict], int, list[str]]:
    """Draw the strokes; returns (samples, strokes attempted, blocked non-local requests)."""
    if CHROMIUM is None:
        raise SystemExit(NO_CHROMIUM)
    blocked: list[str] = []

    def guard(route) -> None:
        if urlparse(route.request.url).hostname in (LOCALHOST, None):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    attempted = 0
    with chromium_browser() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.route("**/*", guard)
        page.goto(url, wait_until="domcontentloaded")
        page.wait_for_selector("#es-canvas .es-canvas-wrap[data-ready='1']", timeout=60_000)
        page.wait_for_selector(RESULTS + "[data-ready='1']", timeout=60_000)
        page.wait_for_function(f"Number(document.querySelector('{RESULTS}').dataset.renders) >= 1", timeout=60_000)
        time.sleep(1.0)  # let the load event's render settle before stamping
        page.evaluate(OBSERVER_JS, [CANVAS, RESULTS])
        box = page.locator(CANVAS).bounding_box()
        deadline = time.monotonic() + cfg.max_s
        for sketch in strokes_to_draw(cfg):
            for stroke in sketch:
                if time.monotonic() > deadline:
                    break
                want = page.evaluate("window.__es.samples.length") + 1
                draw_stroke(page, box, stroke)
                attempted += 1
                try:
                    page.wait_for_function(f"window.__es.samples.length >= {want}", timeout=cfg.stroke_timeout_s * 1000)
                except Exception as exc:  # noqa: BLE001 - a lost stroke is counted, not fatal
                    print(f"stroke {attempted}: no painted result ({type(exc).__name__})", flush=True)
                    page.evaluate("window.__es.pending = null")
                time.sleep(cfg.gap_ms / 1e3)
            before = renders(page)
            page.click("#es-canvas .es-clear")  # untimed: wait for its render so it is not misattributed
            try:
                page.wait_for_function(
                    f"Number(document.querySelector('{RESULTS}').dataset.renders) > {before}",
                    timeout=cfg.stroke_timeout_s * 1000,
                )
            except Exception as exc:  # noqa: BLE001 - the next stroke's wait still guards attribution
                print(f"clear: no re-render ({type(exc).__name__})", flush=True)
            time.sleep(cfg.gap_ms / 1e3)
        time.sleep(1.0)  # late thumbnail loads
        samples = page.evaluate("window.__es.samples")
    return samples, attempted, blocked


def report(samples: list[dict], attempted: int, blocked: list[str], cfg: Config, machine: dict, command: str) -> None:
    painted = percentiles([s["paint"] - s["up"] for s in samples])
    dom = percentiles([s["mut"] - s["up"] for s in samples])
    imgs = percentiles([s["imgs"] - s["up"] for s in samples if s.get("imgs") is not None])
    targets = [
        Target(f"pen-up -> gallery painted p95, {cfg.gallery_size:,} photos, headless Chromium", painted["p95"], 150),
        Target("strokes measured (>= 50)", len(samples), 50, ">=", ""),
        Target("requests to hosts other than 127.0.0.1", len(blocked), 0, "<=", ""),
    ]
    lines = header_lines("Browser: pen-up to gallery painted", command, machine)
    lines += [
        f"- model: {model_label(cfg.model)}; gallery {cfg.gallery_size:,} procedural photos; app flags "
        f"`{cfg.app_args or '(defaults)'}`",
        f"- browser: Debian chromium {' '.join(CHROMIUM_ARGS)}; mouse-drawn procedural sketches, "
        f"{cfg.strokes_per_sketch} strokes per sketch, {cfg.gap_ms:.0f} ms pause after each result",
        "- in-page clocks: pointerup (capture) -> MutationObserver on the grid's data-renders -> next "
        "requestAnimationFrame (painted); thumbnails = all grid <img> complete",
        "",
        *target_table(targets),
        "",
        *markdown_table(
            ("from pen-up to", "n", "p50 ms", "p95 ms", "p99 ms", "mean ms"),
            [
                (what, st["n"], *(f"{st[k]:.1f}" for k in ("p50", "p95", "p99", "mean")))
                for what, st in (
                    ("grid DOM updated", dom),
                    ("gallery painted (next frame)", painted),
                    ("all thumbnails loaded", imgs),
                )
            ],
        ),
        "",
        f"{attempted} strokes drawn, {len(samples)} painted results"
        + (f"; blocked: {', '.join(blocked[:5])}" if blocked else "")
        + ". Plot: `browser.png`.",
    ]
    write_results(
        cfg.name,
        lines,
        targets,
        {
            "painted": painted,
            "dom": dom,
            "thumbnails": imgs,
            "samples": samples,
            "attempted": attempted,
            "blocked": blocked,
        },
        machine,
    )
    use_agg()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([s["paint"] - s["up"] for s in samples], "o-", ms=3, label="gallery painted")
    ax.plot([(s["imgs"] - s["up"]) if s.get("imgs") else np.nan for s in samples], ".", ms=4, label="thumbnails loaded")
    ax.axhline(150, color="r", ls="--", lw=1, label="p95 target")
    ax.set(title="pen-up -> result in headless Chromium", xlabel="stroke", ylabel="ms")
    ax.legend(fontsize=8)
    save_plot(fig, cfg.name)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    machine = machine_info()
    app_args = [
        "--gallery-size",
        str(cfg.gallery_size),
        "--cache-dir",
        str(cfg.cache_dir),
        "--model",
        str(cfg.model),
        *shlex.split(cfg.app_args),
    ]
    with running_app(app_args) as app:
        print(f"app ready at {app.url}", flush=True)
        samples, attempted, blocked = run_browser(app.url, cfg)
    report(samples, attempted, blocked, cfg, machine, command_line(__file__, argv))


def parse_args(argv: list[str] | None = None) -> Config:
    return parse_config(Config, argv, __doc__)


if __name__ == "__main__":
    main()
