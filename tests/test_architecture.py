"""The package's shape, checked: who may import whom (docs/design.md), no import cycle, no sys.path edits.

Every ``import`` statement counts, also the ones inside functions: a lazy import is still a
dependency, it only moves the failure to run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from retrieval.provenance import PROJECT_ROOT as ROOT

LIBRARY = ("retrieval", "rl")
HARNESS = "harness"  # tests' and benches' clients of a running app: imports the library, never imported by it

# layer -> the layers it may import (besides itself); docs/design.md draws the same table
ALLOWED = {
    "retrieval": set(),  # retrieval/types.py, retrieval/cli.py: the foundation
    "data": {"retrieval"},
    "model": {"retrieval", "data"},
    "serving": {"retrieval", "data", "model"},
    "evaluation": {"retrieval", "data", "model", "serving"},
    "train": {"retrieval", "data", "model", "serving", "evaluation"},
    "study": {"retrieval", "data", "serving"},
    "ui": {"retrieval", "data", "model", "serving", "study"},
    "adapt": {"retrieval", "data", "model", "serving", "evaluation", "train"},
    "rl": {"retrieval", "data", "model", "serving", "evaluation", "train"},
    "app": {"retrieval", "ui", "adapt"},
    HARNESS: {"retrieval", "data", "model", "serving", "study", "ui"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "retrieval":
        return parts[1] if len(parts) > 2 else "retrieval"
    return parts[0]


def project_modules() -> dict[str, Path]:
    found = {module_name(p): p for pkg in (*LIBRARY, HARNESS) for p in (ROOT / pkg).rglob("*.py")}
    found["app"] = ROOT / "app.py"
    return found


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Project modules ``path`` imports, resolved to the deepest known module name."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imports_of(path, known) - {name} for name, path in modules.items()}


def test_every_import_follows_the_layer_rule(graph):
    wrong = [
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) != layer_of(module) and layer_of(target) not in ALLOWED[layer_of(module)]
    ]
    assert not wrong, "imports against docs/design.md's rule:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle(graph):
    # a package's __init__ is not an edge to its children: only real module-to-module imports count
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(edges):
        if module not in state and (cycle := visit(module)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_checker_sees_a_lazy_cycle(tmp_path):
    """The walk must count imports inside functions, or the cycle test could pass by construction."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from retrieval.data.datasets import open_dataset\n")
    assert imports_of(source, {"retrieval.data.datasets"}) == {"retrieval.data.datasets"}


def test_nothing_edits_sys_path():
    offenders = [
        str(path.relative_to(ROOT))
        for folder in (*LIBRARY, HARNESS, "bench", "tests")
        for path in (ROOT / folder).rglob("*.py")
        if path.name != Path(__file__).name and "sys.path.insert" in path.read_text()
    ]
    assert not offenders, f"the project is installed editable (make venv); these edit sys.path: {offenders}"


# --- size: a newcomer reads a module in one sitting and a function on one screen ---------------------------
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60
LONG_MODULES_ALLOWED: set[str] = set()
LONG_FUNCTIONS_ALLOWED: set[str] = set()


def long_functions(path: Path, limit: int) -> list[tuple[str, int]]:
    """``(name, lines)`` of every function, method and nested function in ``path`` longer than ``limit``."""
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > limit
    ]


def long_modules(paths) -> dict[str, int]:
    """``{path: lines}`` of the modules in ``paths`` over the limit and not allowed to be."""
    return {
        rel: n
        for path in paths
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
        and (rel := str(path.relative_to(ROOT))) not in LONG_MODULES_ALLOWED
    }


def test_no_library_module_is_over_350_lines():
    long = long_modules(project_modules().values())
    assert not long, f"split these modules by responsibility (at most {MAX_MODULE_LINES} lines): {long}"


def test_no_bench_module_is_over_350_lines():
    long = long_modules(sorted((ROOT / "bench").rglob("*.py")))
    assert not long, (
        f"split these benches by responsibility, e.g. load / measurement / report, sharing code through "
        f"bench/common.py (at most {MAX_MODULE_LINES} lines): {long}"
    )


def test_no_function_outside_tests_is_over_60_lines():
    paths = [*project_modules().values(), *sorted((ROOT / "bench").rglob("*.py"))]
    long = {
        key: n
        for path in paths
        for name, n in long_functions(path, MAX_FUNCTION_LINES)
        if (key := f"{path.relative_to(ROOT)}:{name}") not in LONG_FUNCTIONS_ALLOWED
    }
    assert not long, f"split these into named steps (at most {MAX_FUNCTION_LINES} lines each): {long}"


def test_the_size_checker_sees_methods_and_nested_functions(tmp_path):
    """The walk must reach into classes and closures, or a long method could pass unseen."""
    source = tmp_path / "m.py"
    source.write_text(
        "class C:\n    def method(self):\n        def inner():\n"
        + "".join(f"            x{i} = {i}\n" for i in range(60))
        + "        return inner\n"
    )
    assert long_functions(source, MAX_FUNCTION_LINES) == [("method", 63), ("inner", 61)]
