"""The import structure of src/instvl: no import cycles, and the library stays below its orchestrator.

The graph is built with `ast` from every import statement anywhere in a module: top-level, inside
functions (lazy imports) and under `if TYPE_CHECKING:`. A cycle that only a lazy or type-checking
import "breaks" at run time is still two modules that need each other, so it counts.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import instvl

SRC = Path(instvl.__file__).parent
LIBRARY = ("annotate", "datasets", "media", "qa", "train")
"""Subpackages that must not import `instvl.flows` (the Prefect orchestrator sits on top of them)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def _imported(node: ast.Import | ast.ImportFrom, name: str, is_package: bool) -> Iterator[str]:
    """Absolute names one import statement names: modules, and `pkg.attr` for `from pkg import attr`."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    if node.level:
        package = name.split(".") if is_package else name.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1])
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    yield target
    yield from (f"{target}.{alias.name}" for alias in node.names if alias.name != "*")


def import_graph() -> dict[str, set[str]]:
    """Module -> the instvl modules it imports; `from pkg import module` resolves to the module."""
    modules = all_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            named = list(_imported(node, name, path.name == "__init__.py"))
            if isinstance(node, ast.ImportFrom) and named[1:] and all(n in modules for n in named[1:]):
                named = named[1:]  # `from pkg import module, ...`: the edges go to the modules only
            targets |= {n for n in named if n in modules}
        graph[name] = targets - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def describe(cycle: list[str], graph: dict[str, set[str]]) -> str:
    """The cycle's modules and the import edges between them."""
    members = set(cycle)
    edges = [f"    {a} -> {b}" for a in cycle for b in sorted(graph[a] & members)]
    return " <-> ".join(cycle) + "\n" + "\n".join(edges)


def test_the_graph_resolves_every_import_form() -> None:
    graph = import_graph()
    assert "instvl.train.checkpoint" in graph["instvl.train.main"]  # from instvl.train import checkpoint
    assert "instvl.train.config" in graph["instvl.train.main"]  # from instvl.train.config import TrainConfig
    assert "instvl.train.model" in graph["instvl.train.main"]  # from instvl.train.model import (package)


def test_resolution_of_relative_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    source = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "from ..other import thing\n"
        "if TYPE_CHECKING:\n    from instvl.x import y\n"
        "def f():\n    import instvl.z\n"
    )
    found = {n for node in ast.walk(source) if isinstance(node, ast.Import | ast.ImportFrom)
             for n in _imported(node, "instvl.pkg.mod", is_package=False)}
    assert {"instvl.pkg.sibling", "instvl.other.thing", "instvl.x.y", "instvl.z"} <= found


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles = find_cycles(graph)
    report = "\n".join(describe(cycle, graph) for cycle in cycles)
    assert not cycles, f"{len(cycles)} import cycle(s) in src/instvl:\n{report}"


def test_the_library_does_not_import_the_orchestrator() -> None:
    graph = import_graph()
    upward = sorted(f"{module} -> {target}" for module, targets in graph.items()
                    if module.split(".")[1:2] and module.split(".")[1] in LIBRARY
                    for target in targets if target == "instvl.flows" or target.startswith("instvl.flows."))
    assert not upward, "library modules import instvl.flows:\n" + "\n".join(upward)
