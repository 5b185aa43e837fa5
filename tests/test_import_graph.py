"""The library's import graph: no circles, and no function-local imports that hide one.

The graph is read from the source (``ast``): an edge A -> B for every ``import`` of an
arraycnn module B in module A, at module level or inside a function. Command-line entry
points and tools (``cli``, ``train_cli``, ``info``, ``tools``, ``examples``) may import
lazily, for start-up time; the library itself imports at module level only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import arraycnn

ROOT = Path(arraycnn.__file__).parent
#: Modules allowed to import arraycnn modules inside functions (entry points, tools).
LAZY_OK = (
    "arraycnn.cli",
    "arraycnn.train_cli",
    "arraycnn.info",
    "arraycnn.tools",
    "arraycnn.examples",
)
#: Library imports that must stay inside a function, each with its reason.
LAZY_TARGETS = {
    ("arraycnn.conv.naive", "arraycnn.conv._numba_depthwise"): "it imports numba, an optional "
    "extra: loaded on the first depthwise call on NumPy, never by `import arraycnn`",
    ("arraycnn.conv.naive", "arraycnn.conv._numba_winograd"): "it imports numba, an optional "
    "extra: loaded on the first Winograd plan on NumPy, never by `import arraycnn`",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom, modules: set[str]) -> list[str]:
    """The arraycnn modules an ``ImportFrom`` node needs: each name that is a submodule,
    and the module it imports from where some name is not (a package's ``__init__`` is
    only needed for the names it defines)."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    if not target.startswith("arraycnn"):
        return []
    subs = [f"{target}.{alias.name}" for alias in node.names]
    found = [name for name in subs if name in modules]
    return found if len(found) == len(subs) else [target, *found]


MODULES = {_module_name(p) for p in ROOT.rglob("*.py")}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported arraycnn module, inside a function) for every import in ``path``."""
    module = _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom):
                names = _resolve(module, path.name == "__init__.py", child, MODULES)
                found.extend((name, local) for name in names)
            elif isinstance(child, ast.Import):
                found.extend((a.name, local) for a in child.names if a.name.startswith("arraycnn"))
            visit(child, inner)

    visit(tree, False)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for target, _ in _imports(path):
            if target in files and target != name:
                graph[name].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (as a path), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_library_modules_import_arraycnn_at_module_level_only():
    lazy = [
        f"{_module_name(p)} imports {target} inside a function"
        for p in ROOT.rglob("*.py")
        if not _module_name(p).startswith(LAZY_OK)
        for target, local in _imports(p)
        if local and (_module_name(p), target) not in LAZY_TARGETS
    ]
    assert lazy == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from .conv import cost", ["arraycnn.conv.cost"]),
        ("from .conv import conv2d", ["arraycnn.conv"]),
        ("from .conv import conv2d, cost", ["arraycnn.conv", "arraycnn.conv.cost"]),
        ("from numpy import ones", []),
    ],
)
def test_relative_imports_resolve(source, expected):
    node = ast.parse(source).body[0]
    assert _resolve("arraycnn.filters", False, node, MODULES) == expected
