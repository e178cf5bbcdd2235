"""The package's shape, checked: who may import whom (docs/design.md), no import cycle, no sys.path edits.

Every ``import`` statement counts, also the ones inside functions: a lazy import is still a
dependency, it only moves the failure to run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from retrieval.provenance import PROJECT_ROOT as ROOT

LIBRARY = ("retrieval", "rl", "pipeline")
HARNESS = "harness"  # tests' and benches' clients of a running app: imports the library, never imported by it
BENCH = (
    "bench"  # benchmarks by purpose (bench/speed, load, accuracy) over shared helpers (bench/lib); nothing imports them
)

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
    "pipeline": {"retrieval", "data", "model", "serving", "evaluation", "train", "rl"},  # make reproduce
    "app": {"retrieval", "ui", "adapt"},
    HARNESS: {"retrieval", "data", "model", "serving", "study", "ui"},
}
# A bench uses the library and the harness; the purposes share code only through bench/lib, never with each other.
BENCH_USES = (set(ALLOWED) - {"app"}) | {"bench.lib"}
ALLOWED |= {
    "bench.lib": BENCH_USES - {"bench.lib"},
    "bench.speed": BENCH_USES,
    "bench.load": BENCH_USES,
    "bench.accuracy": BENCH_USES,
    BENCH: BENCH_USES,  # bench/registry.py and bench/run_all.py: the runner
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
    if parts[0] == BENCH and len(parts) > 1 and (ROOT / BENCH / parts[1]).is_dir():
        return f"{BENCH}.{parts[1]}"  # a purpose folder, or bench/lib
    return parts[0]


def project_modules(packages: tuple[str, ...] = (*LIBRARY, HARNESS, BENCH)) -> dict[str, Path]:
    found = {module_name(p): p for pkg in packages for p in (ROOT / pkg).rglob("*.py")}
    found["app"] = ROOT / "app.py"
    return found


def type_checking_imports(tree: ast.AST) -> set[ast.AST]:
    """The import statements under ``if TYPE_CHECKING:``: read by type checkers, never run."""
    return {
        node
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }


def imports_of(path: Path, known: set[str], runtime_only: bool = False) -> set[str]:
    """Project modules ``path`` imports, resolved to the deepest known module name (``runtime_only``: leave
    out the ``if TYPE_CHECKING:`` ones, e.g. a bench's report module naming its bench's Config)."""
    out = set()
    tree = ast.parse(path.read_text())
    skipped = type_checking_imports(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
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


@pytest.fixture(scope="module")
def runtime_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imports_of(path, known, runtime_only=True) - {name} for name, path in modules.items()}


def test_every_import_follows_the_layer_rule(graph):
    wrong = [
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) != layer_of(module) and layer_of(target) not in ALLOWED.get(layer_of(module), ())
    ]
    assert not wrong, "imports against docs/design.md's rule:\n" + "\n".join(sorted(wrong))


def test_every_bench_folder_has_a_rule():
    """A new folder under bench/ needs its line in ALLOWED (and in docs/design.md), or nothing checks it."""
    folders = {f"{BENCH}.{p.parent.name}" for p in (ROOT / BENCH).glob("*/*.py")}
    assert folders <= set(ALLOWED), f"bench folders without a dependency rule: {sorted(folders - set(ALLOWED))}"


def test_no_import_cycle(runtime_graph):
    # a package's __init__ is not an edge to its children: only real module-to-module imports count; an
    # import under TYPE_CHECKING never runs, so it cannot close a cycle (the layer rule still counts it)
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in runtime_graph.items()}
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


def test_the_cycle_checker_leaves_out_only_type_checking_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from a import X\nelse:\n    import b\n")
    assert imports_of(source, {"a", "b"}, runtime_only=True) == {"b"}
    assert imports_of(source, {"a", "b"}) == {"a", "b"}


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
    long = long_modules(project_modules((*LIBRARY, HARNESS)).values())
    assert not long, f"split these modules by responsibility (at most {MAX_MODULE_LINES} lines): {long}"


def test_no_bench_module_is_over_350_lines():
    long = long_modules(project_modules((BENCH,)).values())
    assert not long, (
        f"split these benches by responsibility, e.g. load / measurement / report, sharing code through "
        f"bench/lib/common.py (at most {MAX_MODULE_LINES} lines): {long}"
    )


def test_no_function_outside_tests_is_over_60_lines():
    paths = project_modules().values()
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
