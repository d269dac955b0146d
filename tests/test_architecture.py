"""The house rules, checked: imports run one way, no module grows past its concept.

The import graph counts imports inside functions too (grimp reads every import statement of a
module, wherever it stands). The layers themselves are import-linter's contract in
pyproject.toml ([tool.importlinter]); docs/ARCHITECTURE.md draws them.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edgekd"
MAX_LINES = 450
# The lazy public API (edgekd/__init__.py) names everything by string and sits above it all;
# python -m edgekd is the CLI.
OUTSIDE = {"edgekd", "edgekd.__main__"}

grimp = pytest.importorskip("grimp", reason="the dev extra (import-linter) is not installed")


def import_graph() -> dict[str, set[str]]:
    """{module: modules of edgekd it imports}, imports inside functions included."""
    g = grimp.build_graph("edgekd", include_external_packages=False)
    return {m: {d for d in g.find_modules_directly_imported_by(m) if d not in OUTSIDE}
            for m in g.modules if m not in OUTSIDE}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_circle_finder_finds_a_circle_and_only_the_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_counting_imports_inside_functions():
    found = circles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_grimp_sees_imports_inside_functions():
    # The circle check is only as good as this: edgekd.verify imports its heavy pieces lazily.
    graph = import_graph()
    assert "edgekd.deploy" in graph["edgekd.verify"]


def test_layers_contract_holds():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install 'edgekd[dev]')")
    run = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_no_module_over_the_size_of_one_concept():
    big = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them by concept): {big}"


def floors() -> list[list[str]]:
    tomllib = pytest.importorskip("tomllib")
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = [c for c in conf["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    return [[name.strip() for name in layer.replace(":", "|").split("|")] for layer in contract["layers"]]


def test_every_module_stands_on_a_floor():
    # A module outside every layer would escape the contract; package faces that only hand
    # names on (edgekd, edgekd.latency, edgekd.remote) hold no code of their own.
    rooms = [name for layer in floors() for name in layer]
    faces = OUTSIDE | {"edgekd.latency", "edgekd.remote"}
    loose = sorted(m for m in import_graph() if m not in faces
                   and not any(m == r or m.startswith(r + ".") for r in rooms))
    assert not loose, f"modules on no floor of [tool.importlinter] in pyproject.toml: {loose}"
