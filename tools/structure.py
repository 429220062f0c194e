"""Structure figures of the batchnb package: import cycles and oversized modules, classes and functions.

Prints every problem it finds and exits 1 when there is one (0 when the package is in shape), so CI can run it.

An import counts wherever it is written, at module level or inside a function: a lazy import postpones a cycle,
it does not remove the dependency. Imports under `if TYPE_CHECKING:` do not count (they never run and only name
types). An import names one module: `from batchnb.sources.base import X` is an edge to `batchnb.sources.base`,
not to `batchnb.sources`, whose `__init__` Python also runs first (counting it would make every package
`__init__` that re-exports its submodules a cycle).

    python tools/structure.py [--package batchnb]
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

MODULE_LINES = 400
CLASS_LINES = 200
FUNCTION_LINES = 60
ROOT = Path(__file__).resolve().parent.parent


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, skipping the bodies of `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imported_modules(name: str, path: Path, tree: ast.AST, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule `pkg.sub` when there is one, else a name of `pkg`.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        found.update(t for t in targets if t in modules and t != name)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each group of modules that import one another, directly or not (strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the package is small enough for recursion
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def _shortest_cycle(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """The shortest path from the group's first module back to itself, inside the group (breadth first)."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for succ in sorted(graph[node] & members):
            if succ == start:
                return [*paths[node], start]
            if succ not in paths:
                paths[succ] = [*paths[node], succ]
                queue.append(succ)
    return group  # unreachable for a strongly connected group


def oversized(path: Path, tree: ast.AST, label: str) -> Iterator[tuple[str, str, int, int]]:
    """(kind, where, lines, limit) for the module, each class and each function (methods and nested ones too)."""
    lines = len(path.read_text(encoding="utf-8").splitlines())
    if lines > MODULE_LINES:
        yield "module", label, lines, MODULE_LINES

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                kind, limit = (
                    ("class", CLASS_LINES) if isinstance(child, ast.ClassDef) else ("function", FUNCTION_LINES)
                )
                size = (child.end_lineno or child.lineno) - child.lineno + 1
                if size > limit:
                    yield kind, f"{label}:{child.lineno} {prefix}{child.name}", size, limit
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default=str(ROOT / "batchnb"), help="package directory (default: batchnb/)")
    package = Path(parser.parse_args(argv).package).resolve()
    modules = module_files(package)
    graph, sizes = {}, []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = imported_modules(name, path, tree, modules)
        sizes += oversized(path, tree, str(path.relative_to(package.parent)))
    groups = import_cycles(graph)
    print(f"{len(modules)} modules, {sum(map(len, graph.values()))} internal imports")
    print(f"import cycles: {len(groups)}")
    for group in groups:
        cycle = _shortest_cycle(graph, group)
        others = [m for m in group if m not in cycle]
        print("  " + " -> ".join(cycle) + (f"  (the circle also holds {', '.join(others)})" if others else ""))
    for kind, limit in (("module", MODULE_LINES), ("class", CLASS_LINES), ("function", FUNCTION_LINES)):
        found = sorted((s for s in sizes if s[0] == kind), key=lambda s: -s[2])
        print(f"{kind}{'es' if kind == 'class' else 's'} over {limit} lines: {len(found)}")
        for _, where, lines, _ in found:
            print(f"  {lines:5}  {where}")
    return 1 if groups or sizes else 0


if __name__ == "__main__":
    sys.exit(main())
