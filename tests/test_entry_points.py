"""Every command a reader may run answers ``--help`` with exit code 0 and a usage line.

Entry points are found, not listed: every module under ``retrieval/``, ``rl/`` and ``bench/`` with an
``if __name__ == "__main__":`` block or a ``__main__.py``, plus ``app.py``. Each runs in its own
subprocess from the repository root, as a reader would type it, with this checkout first on the
path (a ``bench/*.py`` script would otherwise import the installed copy). They start in parallel,
since each one mostly waits on importing torch.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAIN_GUARD = 'if __name__ == "__main__":'
# Named in docs/README; if one of them loses its entry point, this says so instead of shrinking the list.
EXPECTED = {
    "retrieval.train",
    "retrieval.evaluation",
    "retrieval.study.analysis",
    "retrieval.serving.serve_ray",
    "retrieval.data.procedural.preview",
    "rl.train",
    "rl.reproduce",
    "rl.head_study",
    "bench/bench_accuracy.py",
    "rl.control",
    "rl.sweep",
    "app.py",
    "bench/bench_ablation.py",
    "bench/run_all.py",
}
NEEDS = {"retrieval.serving.serve_ray": "ray"}  # optional extra: skipped when not installed


def entry_points() -> dict[str, list[str]]:
    """``{name: argv}`` of every command line in the repository."""
    found = {"app.py": [sys.executable, "app.py"]}
    sources = sorted(path for package in ("retrieval", "rl") for path in (ROOT / package).rglob("*.py"))
    delegated = set()  # modules whose main a package's __main__.py runs: one subprocess covers both
    for path in sources:
        if path.name == "__main__.py":
            package = ".".join(path.parent.relative_to(ROOT).parts)
            found[package] = [sys.executable, "-m", package]
            delegated |= set(re.findall(r"^from ([\w.]+) import main$", path.read_text(), re.MULTILINE))
    for path in sources:
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if module not in delegated and MAIN_GUARD in path.read_text():
            found[module] = [sys.executable, "-m", module]
    for path in sorted((ROOT / "bench").glob("*.py")):
        if MAIN_GUARD in path.read_text():
            found[f"bench/{path.name}"] = [sys.executable, f"bench/{path.name}"]
    return found


ENTRY_POINTS = entry_points()


def run_help(argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([*argv, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def help_runs() -> dict[str, subprocess.CompletedProcess]:
    runnable = {n: argv for n, argv in ENTRY_POINTS.items() if importlib.util.find_spec(NEEDS.get(n, "os"))}
    with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as pool:
        return dict(zip(runnable, pool.map(run_help, runnable.values())))


def test_the_documented_entry_points_are_all_found():
    assert EXPECTED <= set(ENTRY_POINTS), f"lost an entry point: {sorted(EXPECTED - set(ENTRY_POINTS))}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_help_exits_0_with_a_usage_line(name, help_runs):
    if name not in help_runs:
        pytest.skip(f"{NEEDS[name]} is not installed (an optional extra)")
    done = help_runs[name]
    assert done.returncode == 0, f"{name} --help exited {done.returncode}:\n{done.stderr[-2000:]}"
    assert done.stdout.lstrip().startswith("usage:"), f"{name} --help printed no usage:\n{done.stdout[:500]}"
    assert "--help" in done.stdout
