"""The import graph of the four packages, read from their source: no cycles, and every edge points the way
the layout says (`provider_api`, `c2d_defs`, `c2d_cli` → `c2d_core`; `c2d_core` → none of them).

Every `import` / `from … import` counts wherever it is written (module level, inside a function, under
`TYPE_CHECKING`): a lazy import still ties the two modules together, it only hides the tie from a reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("c2d_core", "c2d_defs", "c2d_cli", "provider_api")
# Which of the four packages each one may import (itself always).
ALLOWED: dict[str, frozenset[str]] = {
    "c2d_core": frozenset(),
    "c2d_defs": frozenset({"c2d_core"}),
    "c2d_cli": frozenset({"c2d_core"}),
    "provider_api": frozenset({"c2d_core"}),
}
# Frameworks the shared core stays free of, so the Provider, the engine, the pods and the CLI all use it.
CORE_FORBIDDEN_THIRD_PARTY = ("fastapi", "starlette", "dagster")

# TEMPORARY (issue 13): the cycles that exist today, in code other items of that issue restructure. Each
# entry is one strongly connected set of modules. The test fails on a listed set that no longer exists,
# so when a cycle is broken (or shrinks) its entry must be dropped (or narrowed): this list only shrinks.
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


def imported_names(path: Path, module: str) -> Iterator[tuple[str, list[str], int]]:
    """(dotted module named by an import, names taken from it, line) for every import in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, [alias.name for alias in node.names], node.lineno


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """(edges between our modules, every (module, imported top-level name, line) for the rule checks)."""
    modules = source_modules()
    edges: dict[str, set[str]] = {name: set() for name in modules}
    imports: list[tuple[str, str, int]] = []
    for module, path in modules.items():
        for target, names, line in imported_names(path, module):
            imports.append((module, target, line))
            if target.split(".")[0] not in PACKAGES:
                continue
            # `from pkg import sub` imports the submodule `pkg.sub`; `from mod import name` the module.
            found = [f"{target}.{name}" for name in names if f"{target}.{name}" in modules]
            if not found:
                known = target
                while known and known not in modules:
                    known = known.rpartition(".")[0]
                found = [known] if known else []
            edges[module].update(found)
    for module in edges:
        edges[module].discard(module)
    return edges, imports


def cycles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_reads_every_package() -> None:
    edges, _ = import_graph()
    # A walk that found nothing would pass every rule below: make sure it saw the code it guards.
    assert {name.split(".")[0] for name in edges} == set(PACKAGES)
    assert "c2d_core.workflow" in edges["provider_api.compute"]
    assert "c2d_core.chain" in edges["c2d_cli.commands_publish"]


def test_no_import_cycles_beyond_the_known_ones() -> None:
    found = set(cycles(import_graph()[0]))
    new = sorted(sorted(cycle) for cycle in found - KNOWN_CYCLES)
    assert not new, f"import cycles: {new}"
    gone = sorted(sorted(cycle) for cycle in KNOWN_CYCLES - found)
    assert not gone, f"these cycles are gone, drop them from KNOWN_CYCLES: {gone}"


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_the_way_the_layout_says(package: str) -> None:
    _, imports = import_graph()
    broken = [
        f"{module}:{line} imports {target}"
        for module, target, line in imports
        if module.split(".")[0] == package
        and target.split(".")[0] in PACKAGES
        and target.split(".")[0] != package
        and target.split(".")[0] not in ALLOWED[package]
    ]
    assert not broken, f"{package} may import only {sorted(ALLOWED[package])}: {broken}"


def test_the_core_imports_no_web_or_engine_framework() -> None:
    _, imports = import_graph()
    broken = [
        f"{module}:{line} imports {target}"
        for module, target, line in imports
        if module.startswith("c2d_core") and target.split(".")[0].startswith(CORE_FORBIDDEN_THIRD_PARTY)
    ]
    assert not broken, broken


def test_cycles_finds_a_cycle_and_ignores_a_chain() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
