"""The modules of ``scrapbench.metrics`` import each other without a cycle (deferred and type-only imports count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

METRICS_DIR = Path(__file__).resolve().parents[1] / "benchmark" / "metrics"
PACKAGE = "scrapbench.metrics"


def _imported_modules(path: Path, modules: set[str]) -> set[str]:
    """Sibling modules (``__init__`` for the package itself) that ``path`` imports anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = node.module
            elif node.level == 0 and node.module and (node.module + ".").startswith(PACKAGE + "."):
                base = node.module[len(PACKAGE) + 1:] or None
            else:
                continue
            if base is None:  # ``from . import x``: x is a module, or a name defined in __init__
                found |= {a.name if a.name in modules else "__init__" for a in node.names}
            else:
                found.add(base.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE:
                    found.add("__init__")
                elif alias.name.startswith(PACKAGE + "."):
                    found.add(alias.name[len(PACKAGE) + 1:].split(".")[0])
    return found


def import_graph(directory: Path) -> dict[str, set[str]]:
    modules = {p.stem for p in directory.glob("*.py")}
    return {p.stem: _imported_modules(p, modules) - {p.stem} for p in sorted(directory.glob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*stack[stack.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_metrics_modules_import_without_cycles():
    graph = import_graph(METRICS_DIR)
    assert {"pixel", "state", "summary"} <= graph.keys()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in scrapbench.metrics: " + " → ".join(cycle)


def test_statistics_module_imports_no_module_built_on_it():
    graph = import_graph(METRICS_DIR)
    assert graph["state"].isdisjoint({"pixel", "summary", "bootstrap", "folders", "__init__"})


@pytest.mark.parametrize("source, cycle", [
    ({"a.py": "from .b import x\n", "b.py": "def f():\n    from .a import y\n"}, ["a", "b", "a"]),
    ({"a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import x\n",
      "b.py": "from . import a\n"}, ["a", "b", "a"]),
    ({"a.py": "from scrapbench.metrics.b import x\n", "b.py": "import scrapbench.metrics\n",
      "__init__.py": "from .a import x\n"}, ["__init__", "a", "b", "__init__"]),
    ({"a.py": "from . import b\n", "b.py": "import numpy\n"}, None),
])
def test_cycle_finder_sees_deferred_and_type_only_imports(tmp_path, source, cycle):
    for name, text in source.items():
        (tmp_path / name).write_text(text)
    assert find_cycle(import_graph(tmp_path)) == cycle
