"""The import graph of gateway/, read from the source with `ast`: no cycle, and every layer imports only inward.

Imports inside functions count too: a lazy import still ties the two modules together, and it is how a cycle hides.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gateway"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imported(module: str, path: Path) -> Iterator[str]:
    """Every module name `module` imports, gateway's resolved to the module itself (`from a import b`: a.b when b
    is a module, else a)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in MODULES else base


def _graph() -> dict[str, set[str]]:
    return {module: set(_imported(module, path)) for module, path in MODULES.items()}


GRAPH = _graph()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, or of one module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, set()) & graph.keys()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "gateway" else None


def _third_party(name: str) -> str | None:
    top = name.split(".")[0]
    return None if top == "gateway" or top in sys.stdlib_module_names or top == "__future__" else top


def _violations(layer: str, allowed_layers: set[str], allowed_packages: set[str] | None) -> set[tuple[str, str]]:
    """(module, what it imports) for each import of `layer` outside the layers and the installed packages it may use
    (None: any package)."""
    bad: set[tuple[str, str]] = set()
    for module, targets in GRAPH.items():
        if _layer(module) != layer:
            continue
        for target in targets:
            other = _layer(target)
            if other is not None and other != layer and other not in allowed_layers:
                bad.add((module, target))
            package = _third_party(target)
            if package is not None and allowed_packages is not None and package not in allowed_packages:
                bad.add((module, package))
    return bad


def test_the_graph_sees_every_layer() -> None:
    """Guards the tests below against a graph that reads nothing (and so finds nothing)."""
    layers = {_layer(module) for module in GRAPH}
    assert {"domain", "service", "adapters", "app"} <= layers
    assert "gateway.app.container" in GRAPH["gateway.app.lifecycle"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_of_the_gateway_imports_itself_back_through_others() -> None:
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize(
    ("layer", "allowed_layers", "allowed_packages"),
    [
        ("domain", set(), {"msgspec"}),
        ("service", {"domain"}, set()),
        ("adapters", {"domain"}, None),  # adapters are where the technologies live
    ],
)
def test_each_layer_imports_only_inward(
    layer: str, allowed_layers: set[str], allowed_packages: set[str] | None
) -> None:
    assert _violations(layer, allowed_layers, allowed_packages) == set()
