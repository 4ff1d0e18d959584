"""The house rules of `bots/`, checked on the source so that they stay true.

- no import cycle between modules (a cycle means a responsibility sits in the wrong room);
- nothing but `__main__` imports the command line (`bots.cli` only parses and prints);
- pure logic (intake, decide, reports, the queue) never imports Playwright;
- product code never imports the developer tools (`bots.tools`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from paths import ROOT

PACKAGE = ROOT / "bots"


def _modules(package: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of the package that `name` imports, at any depth of its code."""

    def owner(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: Iterable[str] = ()
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[: len(base) - (node.level - 1)]
                module = ".".join(parent + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import mod` imports the module `pkg.mod` when there is one
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module
                       for a in node.names]
        deps.update(d for t in targets if (d := owner(t)))
    deps.discard(name)
    return deps


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = _modules(package)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "bots"
    (pkg / "sub").mkdir(parents=True)
    for f in ("__init__.py", "a.py", "b.py", "c.py", "sub/__init__.py", "sub/d.py"):
        (pkg / f).write_text("")
    (pkg / "a.py").write_text("from bots import b\n")
    (pkg / "b.py").write_text("def f():\n    from bots.sub.d import x\n")
    (pkg / "sub/d.py").write_text("from .. import c\nimport bots.a\n")
    graph = import_graph(pkg)
    assert graph["bots.a"] == {"bots.b"}
    assert graph["bots.b"] == {"bots.sub.d"}
    assert graph["bots.sub.d"] == {"bots.c", "bots.a"}
    assert cycles(graph) == [["bots.a", "bots.b", "bots.sub.d"]]


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_only_main_imports_the_cli() -> None:
    importers = sorted(m for m, deps in import_graph().items() if "bots.cli" in deps)
    assert importers == ["bots.__main__"]


@pytest.mark.parametrize("room", ["bots.intake", "bots.decide", "bots.reports", "bots.queue",
                                  "bots.models", "bots.notify", "bots.config"])
def test_pure_logic_never_imports_playwright(room: str) -> None:
    for name, path in _modules(PACKAGE).items():
        if name == room or name.startswith(room + "."):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
            assert not any(n.split(".")[0] == "playwright" for n in names), name


def test_product_code_never_imports_the_tools() -> None:
    graph = import_graph()
    offenders = sorted(m for m, deps in graph.items()
                       if not m.startswith(("bots.tools", "bots.cli"))
                       and any(d.startswith("bots.tools") for d in deps))
    assert offenders == []


def test_the_data_folders_are_not_packages() -> None:
    for folder in ("selectors", "config"):
        assert not list((ROOT / folder).rglob("*.py")), folder
