"""The experiment modules' imports form no circle, so that each can be read (and imported) after
the ones it builds on. Imports under ``if TYPE_CHECKING:`` count too: a task and its report that
name each other's types are still read together (the shapes both use live in a ``*_schema``
module). The circles that remain are listed by name, so that a new one fails here and a removed
one must be struck off the list."""

from __future__ import annotations

import ast
from pathlib import Path

import feedback_alignment.experiments as experiments

PACKAGE = "feedback_alignment.experiments"
ROOT = Path(experiments.__file__).parent

KNOWN_CIRCLES: set[frozenset[str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGE, *parts])


def _imports(tree: ast.AST, name: str, is_package: bool) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".")[: len(name.split(".")) - child.level + is_package]
                    module = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    module = child.module or ""
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in child.names)
            elif isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {
        _module_name(p): (ast.parse(p.read_text()), p.name == "__init__.py")
        for p in ROOT.rglob("*.py")
    }
    return {
        name: {m for m in _imports(tree, name, package) if m in modules and m != name}
        for name, (tree, package) in modules.items()
    }


def _circles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: set[frozenset[str]] = set()

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.add(frozenset(m.removeprefix(PACKAGE + ".") for m in component))

    for v in graph:
        if v not in index:
            connect(v)
    return circles


def test_the_experiment_modules_import_in_no_new_circle():
    assert _circles(_graph()) == KNOWN_CIRCLES


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == {frozenset({"a", "b", "c"})}
