"""The package's import graph has no circle, deferred imports included (ruff's rules, `make lint`,
keep each layer off the layers above it; a circle inside a layer is what they cannot see)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "activation_assets"


def import_graph() -> dict[str, set[str]]:
    modules = {".".join(f.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): f
               for f in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
                     if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name and name != module and not module.startswith(name + "."):
                    graph[module].add(name)
    return graph


def test_no_module_imports_itself_back():
    graph = import_graph()
    circles = set()

    def walk(module: str, path: list[str]) -> None:
        for imported in graph[module]:
            if imported in path:
                circles.add(" -> ".join(path[path.index(imported):] + [imported]))
            elif len(path) < 12:
                walk(imported, path + [imported])

    for module in graph:
        walk(module, [module])
    assert not circles, sorted(circles)[:5]


def test_the_graph_is_read_whole():
    """The graph sees deferred imports too (an import inside a function is an edge all the same)."""
    graph = import_graph()
    assert "activation_assets.orchestration.dbt" in graph["activation_assets.cli.commands"]  # a deferred import
    assert "activation_assets.tables" in graph["activation_assets.models.sql"]
