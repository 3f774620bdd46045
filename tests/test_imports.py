"""Imports point down only: the modules of the installed package (src/fxlower, and passes/
shipped as fxlower.passes) import each other without a cycle.

Read from the source with `ast`, not by importing: every import counts, at module level,
inside functions and under `if TYPE_CHECKING:`, relative or absolute. `from fxlower import x`
is an edge to the module fxlower.x when there is one, else to fxlower (its __init__).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"fxlower": ROOT / "src" / "fxlower", "fxlower.passes": ROOT / "passes",
            "fxlower.kernels": ROOT / "src" / "fxlower" / "kernels"}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.glob("*.py")):
            out[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports, anywhere in its file."""
    is_package = path.stem == "__init__"
    here = name if is_package else name.rpartition(".")[0]  # the package a relative import starts in
    found: set[str] = set()

    def add(target: str) -> None:
        # the module itself, or the nearest enclosing package that is one of ours
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in known else base)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def test_the_graph_is_read() -> None:
    edges = graph()
    assert "fxlower.opnames" in edges["fxlower.check"]
    assert "fxlower.opnames" in edges["fxlower.targets"]
    assert "fxlower.spec" in edges["fxlower.cli"] and "fxlower.spec" in edges["fxlower.demo"]
    assert "fxlower.demo" in edges["fxlower.cli"]  # imported inside a function
    assert "fxlower.passes" in edges["fxlower.api"] or any(
        "fxlower.passes" in e for e in edges.values())


def test_cycle_finder() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert found == [], "import cycles (each a set of modules that import each other):\n" + \
        "\n".join(" <-> ".join(c) for c in found)
