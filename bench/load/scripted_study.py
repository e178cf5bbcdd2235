"""A small scripted user study through the browser, then its analysis: the study pipeline end to end.

Starts the app in study mode on a study config (default ``assets/study_example.json``: on the fly
vs results only on request), and lets ``--participants`` simulated participants (P01, P02, ...:
consecutive numbers, so the Latin square balances) do every trial in Debian's Chromium. Each
draws the procedural dataset's own sketch of the target photo (drawer ``participant % 3``), stroke
by stroke with the mouse, under a fixed policy:

- ``every_stroke``: draw until the app says found (it ends the trial), Give up after the last stroke;
- ``on_request``: press Search after every ``--search-every`` strokes and after the last one;
  Give up if the last Search does not find it;
- ``after_trial``: draw every stroke, then press Done.

The log goes to ``--out``/logs; ``retrieval.study.analysis`` then writes its report, and this
script writes ``docs/results/<name>.md`` (machine, date, command, policy, the analysis report) with
the analysis's plots beside it. Simulated people measure the pipeline and the design, not people:
the differences show what the policy does under each condition.

    .venv/bin/python -m bench.load.scripted_study                      # 4 participants x 6 trials
    .venv/bin/python -m bench.load.scripted_study --participants 2 --name scripted_study_quick
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.lib.common import ROOT, command_line, header_lines, machine_info, write_results
from bench.load.bench_browser import draw_stroke
from harness.api_client import running_app
from harness.browser import CHROMIUM, NO_CHROMIUM, chromium_browser
from retrieval.cli import parse_config
from retrieval.data.datasets import open_dataset
from retrieval.study.analysis import AnalysisConfig, analyse
from retrieval.study.log import log_files, read_log
from retrieval.study.plan import StudyConfig

PLOTS = ("rank_vs_stroke.png", "strokes_to_found.png")


@dataclass
class Config:
    """Scripted study settings."""

    study: Path = ROOT / "assets" / "study_example.json"
    """study config the app runs"""
    participants: int = 4
    """simulated participants P01, P02, ..."""
    gallery_size: int = 1000
    """procedural photos in the app's gallery (the app's default)"""
    search_every: int = 3
    """on_request policy: press Search after this many strokes"""
    stroke_timeout_s: float = 30.0
    """give up waiting for a stroke's answer after this long"""
    out: Path = ROOT / "runs" / "scripted_study"
    """logs and full analysis (git-ignored)"""
    name: str = "scripted_study"
    """result file docs/results/NAME.md and plot folder docs/results/NAME/"""


class Participant:
    """One simulated participant in one browser page, following the policy of the module docstring.

    What happened is read from the study log, which the server writes before it answers: a stroke's
    ``rank`` record (written after the stroke, before the answer) or a Search whose logged rank is
    within the condition's ``found_k`` ended the trial (then the page's banner is awaited), any other
    left it running. No fixed waits.
    """

    def __init__(self, page, log_dir: Path, cfg: Config, number: int, dataset, conditions: dict) -> None:
        self.page, self.log_dir, self.cfg, self.number = page, log_dir, cfg, number
        self.dataset, self.conditions = dataset, conditions
        self.id = f"P{number:02d}"
        self.wrap, self.panel = page.locator(".es-canvas-wrap[data-ready]"), page.locator(".es-panel")

    def _records(self, kind: str) -> list[dict]:
        paths = [p for p in log_files(self.log_dir) if p.name.startswith(self.id + "__")]
        return [r for p in paths for r in read_log(p) if r["type"] == kind]

    def _next_record(self, kind: str, before: int, unless_ended: bool = False) -> dict | None:
        """The next ``kind`` record once on disk; None if, with ``unless_ended``, the trial ended first (a
        stroke on a canvas the time limit just locked is never sent)."""
        deadline = time.monotonic() + self.cfg.stroke_timeout_s
        while len(records := self._records(kind)) <= before:
            if unless_ended and self.ended():
                return None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.id}: no {kind} record within {self.cfg.stroke_timeout_s} s")
            self.page.wait_for_timeout(30)
        return records[before]

    def ended(self) -> bool:
        return self.panel.get_attribute("data-banner") in ("found", "miss")

    def _wait_ended(self) -> None:
        self.page.wait_for_function(
            "() => document.querySelector('.es-panel').dataset.banner", timeout=self.cfg.stroke_timeout_s * 1000
        )

    def _found(self, record: dict | None, condition) -> None:
        """After a ranking the trial may end on: wait for the page to say so when its rank was within found_k."""
        rank = record.get("target_rank") if record else None
        if rank is not None and rank <= condition.found_k:
            self._wait_ended()

    def draw(self, points, condition) -> None:
        before = len(self._records("rank"))
        draw_stroke(self.page, self.page.locator("canvas.es-canvas").bounding_box(), points)
        record = self._next_record("rank", before, unless_ended=True)
        if condition.feedback == "every_stroke":
            self._found(record, condition)

    def search(self, condition) -> None:
        before = len(self._records("search"))
        self.page.get_by_role("button", name="Search").click()
        self._found(self._next_record("search", before), condition)

    def end(self, button: str) -> None:
        """Press Give up or Done; return once the trial's end is logged and shown."""
        before = len(self._records("trial_end"))
        self.page.get_by_role("button", name=button).click()
        self._next_record("trial_end", before)
        self._wait_ended()

    def trial(self, condition) -> None:
        target = self.panel.get_attribute("data-target-id")
        sketch = self.dataset.sketch(target, self.number % 3)
        side = max(sketch.canvas_width, sketch.canvas_height)
        strokes = [s[:, :2] / side for s in sketch.strokes]
        for i, points in enumerate(strokes, start=1):
            self.draw(points, condition)
            if self.ended():  # found, or the time limit passed
                return
            if condition.feedback == "on_request" and (i % self.cfg.search_every == 0 or i == len(strokes)):
                self.search(condition)
                if self.ended():
                    return
        self.end("Done" if condition.feedback == "after_trial" else "Give up")

    def run(self, url: str) -> None:
        self.page.goto(url)
        self.page.get_by_label("Participant id").fill(self.id)
        self.page.get_by_role("button", name="Start").click()
        self._next_record("trial_start", 0)
        while True:
            self.page.wait_for_function("document.querySelector('.es-canvas-wrap[data-ready]')?.dataset.trial")
            token = self.wrap.get_attribute("data-trial")
            self.trial(self.conditions[self._records("trial_start")[-1]["condition"]])
            if not self.next_trial():
                return
            self.page.wait_for_function(
                "t => (document.querySelector('.es-canvas-wrap[data-ready]')?.dataset.trial || t) !== t",
                arg=token,
                timeout=self.cfg.stroke_timeout_s * 1000,
            )

    def next_trial(self) -> bool:
        """Press Next trial; True once the next trial started (its record is on disk), False at the session's end."""
        starts = len(self._records("trial_start"))
        self.page.get_by_role("button", name="Next trial").click()
        deadline = time.monotonic() + self.cfg.stroke_timeout_s
        while len(self._records("trial_start")) == starts and not self._records("session_end"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.id}: Next trial started nothing within {self.cfg.stroke_timeout_s} s")
            self.page.wait_for_timeout(30)
        return not self._records("session_end")


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(Config, argv, __doc__)
    if CHROMIUM is None:
        raise SystemExit(NO_CHROMIUM)
    study = StudyConfig.load(cfg.study)
    conditions = {c.name: c for c in study.conditions}
    log_dir = cfg.out / "logs"
    shutil.rmtree(log_dir, ignore_errors=True)
    dataset = open_dataset(f"procedural:photos={cfg.gallery_size}")
    machine, command = machine_info(), command_line(__file__, argv)
    args = ["--mode", "study", "--study", str(cfg.study), "--log-dir", str(log_dir)]
    args += ["--gallery-size", str(cfg.gallery_size), "--threads", "1"]
    started = time.monotonic()
    with running_app(args, log_path=cfg.out / "app.log") as app, chromium_browser() as browser:
        for number in range(1, cfg.participants + 1):
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            Participant(page, log_dir, cfg, number, dataset, conditions).run(app.url)
            page.context.close()
            print(f"P{number:02d} done ({time.monotonic() - started:.0f} s)", flush=True)
    analysis_dir = cfg.out / "analysis"
    analyse(AnalysisConfig(log_dir, analysis_dir))
    plots = ROOT / "docs" / "results" / cfg.name
    plots.mkdir(parents=True, exist_ok=True)
    for name in PLOTS:
        shutil.copy(analysis_dir / name, plots / name)
    write_report(cfg, machine, command, analysis_dir, time.monotonic() - started)


def shown_path(path: Path) -> str:
    """A path as the report shows it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def write_report(cfg: Config, machine: dict, command: str, analysis_dir: Path, seconds: float) -> None:
    models = ", ".join(f"`{key}` = `{folder}`" for key, folder in StudyConfig.load(cfg.study).models_used().items())
    report = (analysis_dir / "report.md").read_text().split("\n", 1)[1]  # drop its title (a tmp path)
    lines = header_lines(f"Scripted study: {cfg.participants} simulated participants in the browser", command, machine)
    lines += [
        f"- study config: `{shown_path(cfg.study)}` (models: {models or 'the app default only'}); gallery: "
        f"{cfg.gallery_size} procedural photos; app model `assets/model`; wall time {seconds:.0f} s",
        "- policy (bench/load/scripted_study.py): each participant draws the dataset's own sketch of the target "
        f"(drawer = participant number mod 3); `on_request`: Search after every {cfg.search_every} strokes "
        "and after the last; Give up when the sketch is drawn and not found",
        f"- reproduce: the command above (`make scripted-study` for the default); the logs are in "
        f"`{shown_path(cfg.out)}/logs` (`make analyse LOGDIR=...`)",
        "",
        "Simulated participants test the pipeline and the design, not people: differences between",
        "conditions here come from the scripted policy (a Search every few strokes cannot stop earlier",
        "than the live results do).",
        "",
        report,
        *(f"![{name}]({cfg.name}/{name})" for name in PLOTS),
    ]
    # the per-condition figures and their paired differences, as the analysis wrote them, beside the report
    data = {
        name: pd.read_csv(analysis_dir / f"{name}.csv").to_dict("records") for name in ("conditions", "differences")
    }
    write_results(cfg.name, lines, [], data, machine, ROOT / "docs" / "results")


if __name__ == "__main__":
    main()
