"""Every command a reader may run answers ``--help`` with exit code 0 and a usage line.

Entry points are found, not listed: every module under ``retrieval/``, ``rl/`` and ``bench/`` with an
``if __name__ == "__main__":`` block or a ``__main__.py``, plus ``app.py``. All of them run as
``__main__`` (``runpy``, as ``python -m`` and ``python app.py`` would) in ONE child process from the
repository root, with this checkout first on the path (the library would otherwise come from the
installed copy, and ``bench`` is found from the repository root only): torch is imported once instead
of once per command, and whatever a module does at import (environment variables, matplotlib
backends) stays out of the test process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from retrieval.provenance import PROJECT_ROOT as ROOT

pytestmark = pytest.mark.slow  # one child process runs every entry point's --help (~6 s)

MAIN_GUARD = 'if __name__ == "__main__":'
# Named in docs/README; if one of them loses its entry point, this says so instead of shrinking the list.
EXPECTED = {
    "retrieval.train",
    "retrieval.adapt",
    "retrieval.evaluation",
    "retrieval.study.analysis",
    "retrieval.serving.serve_ray",
    "retrieval.data.procedural.preview",
    "rl.train",
    "pipeline.reproduce",
    "rl.head_study",
    "bench.accuracy.bench_accuracy",
    "bench.accuracy.bench_adapt",
    "rl.control",
    "rl.sweep",
    "app.py",
    "bench.accuracy.bench_ablation",
    "bench.run_all",
}
NEEDS = {"retrieval.serving.serve_ray": "ray"}  # optional extra: skipped when not installed


def entry_points() -> dict[str, list[str]]:
    """``{name: argv}`` of every command line in the repository."""
    found = {"app.py": [sys.executable, "app.py"]}
    sources = sorted(
        path for package in ("retrieval", "rl", "pipeline", "bench") for path in (ROOT / package).rglob("*.py")
    )
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
    return found


ENTRY_POINTS = entry_points()


# Runs in the child: each entry point as __main__ with --help, its exit code and output captured.
HELP_RUNNER = r"""
import contextlib, io, json, runpy, sys
results = {}
for name, argv in json.loads(sys.argv[1]).items():
    out, err, code = io.StringIO(), io.StringIO(), None
    sys.argv = [argv[-1], "--help"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if argv[0] == "-m":
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(argv[0], run_name="__main__")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:
            code, err = 1, io.StringIO(f"{type(exc).__name__}: {exc}")
    results[name] = {"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def help_runs() -> dict[str, dict]:
    runnable = {n: argv[1:] for n, argv in ENTRY_POINTS.items() if importlib.util.find_spec(NEEDS.get(n, "os"))}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    child = [sys.executable, "-W", "ignore::RuntimeWarning", "-c", HELP_RUNNER, json.dumps(runnable)]
    done = subprocess.run(child, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"the --help runner failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_documented_entry_points_are_all_found():
    assert EXPECTED <= set(ENTRY_POINTS), f"lost an entry point: {sorted(EXPECTED - set(ENTRY_POINTS))}"


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_help_exits_0_with_a_usage_line(name, help_runs):
    if name not in help_runs:
        pytest.skip(f"{NEEDS[name]} is not installed (an optional extra)")
    done = help_runs[name]
    assert done["returncode"] == 0, f"{name} --help exited {done['returncode']}:\n{done['stderr'][-2000:]}"
    assert done["stdout"].lstrip().startswith("usage:"), f"{name} --help printed no usage:\n{done['stdout'][:500]}"
    assert "--help" in done["stdout"]
