"""The ``datagen`` package's import graph has no cycle (issue 22): dependencies point one way,
cli → run → generate | filter | train → llm | records | prompts.

Every import counts, function-level and ``if TYPE_CHECKING:`` ones included: an import deferred into a
function, or kept to type hints, to dodge a cycle at load time is still a cycle in the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import datagen

PACKAGE = Path(datagen.__file__).parent


def _module_name(path: Path) -> str:
    parts = ("datagen", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


def _imports(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The ``datagen`` modules a module imports anywhere in its body (``from a import b`` counts ``a.b`` when
    ``b`` is a module, else ``a``)."""
    found: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        stack.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            names = [
                f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules else prefix for alias in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `import datagen.llm.client as c` names the module itself
                name = name.rpartition(".")[0]
            if name and name != module and name.startswith("datagen"):
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {
        name: _imports(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py", modules)
        for name, path in files.items()
    }


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), as a path a → … → a."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_path_in(graph, component) for component in components]


def _path_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, found breadth first."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in parents:
                    parents[w] = v
                    following.append(w)
        frontier = following
    return sorted(component)


def test_find_cycles_names_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_function_level_relative_and_type_checking_imports_count():
    modules = {"datagen", "datagen.x", "datagen.y", "datagen.z"}
    tree = ast.parse(
        "def f():\n    from datagen import y\n    from .z import thing\nif TYPE_CHECKING:\n    import datagen\n"
    )
    assert _imports(tree, "datagen.x", False, modules) == {"datagen.y", "datagen.z", "datagen"}


def test_graph_sees_the_whole_package():
    graph = import_graph()
    assert "datagen.cli" in graph and "datagen.llm.client" in graph
    assert "datagen.run" in graph["datagen.cli"]  # a function-level import


def test_no_import_cycle():
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in datagen (one per tangle; fix it and run again for the next):\n" + "\n".join(
        " -> ".join(c) for c in cycles
    )
