"""The architecture's rules, read from the source's import statements with :mod:`ast`.

The rules (``DESIGN.md``; ``RULES`` below holds the first four as data):

- the policy (``genepool.policy``) imports no store, checkpoints, executor or worker: it
  decides from a frozen snapshot and returns data;
- the store (``genepool.store``) imports no policy and no executor;
- the space (``genepool.space``) is pure: from genepool it imports ``genepool._errors`` (its
  exceptions and message template) and ``genepool._redact`` (how a value is shown in a
  message), which import nothing from genepool themselves, and nothing else;
- analysis (``genepool.analysis``) runs no trial: it imports no executor
  (``genepool.executors``), no worker (``genepool.worker``) and not ``genepool._run``; it may
  import replay (``genepool._replay``), which runs one on purpose, and what replay imports
  is not followed;
- no import cycles among genepool's modules;
- no module longer than 500 lines (as ``wc -l`` counts them).

How imports are read. Every ``.py`` file under ``src/genepool`` is parsed, never imported.
An import statement is one of three kinds: at module level (in a ``try``, an ``if`` or a
class body too: it runs when the module is imported), in a function (it runs when the
function is called), or under ``if TYPE_CHECKING:`` (for the type checker: it never runs).
``from a import b`` imports the module ``a.b`` where there is one, else ``a``; a relative
import is resolved against its package. Python imports a module's packages before it, and
``genepool/__init__.py`` imports most of the library: that implicit import is not counted
(it would break every rule at once), but an explicit ``from genepool import X`` of a name
that is not a module is an import of ``genepool`` itself.

The first four rules follow module-level imports and imports in functions, transitively:
a module that reaches a forbidden one through others breaks the rule as surely as one that
imports it, and an import in a function runs as surely as one at the top, only later.
Imports under ``TYPE_CHECKING`` are not followed. The cycle rule follows imports at
module level and in functions alike: an import moved into a function hides a cycle from
Python's import machinery, not from a reader (the two modules still need each other), so
it counts; only one under ``TYPE_CHECKING``, which never runs, makes none.

The checkers are tested on small packages written into ``tmp_path``, so that each rule is
seen to fail on a tree that breaks it.
"""

from __future__ import annotations

import ast
import functools
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "genepool"
MAX_LINES = 500

#: The kinds of import statement, by where they stand.
MODULE, FUNCTION, TYPING = "module", "function", "typing"
_RUNTIME = frozenset({MODULE, FUNCTION})


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``source`` imports the module ``target`` at ``line``."""

    source: str
    target: str
    line: int
    kind: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target} ({self.kind})"


Graph = Mapping[str, list[Import]]


@dataclass(frozen=True)
class Rule:
    """What the modules under ``sources`` may reach through runtime imports.

    A module reached is forbidden when it is under one of ``forbidden``, or, with ``only``,
    when it is under none of ``only`` (nor of ``sources``). The imports of a module under
    ``through`` are not followed: it may do what the rule forbids the others.
    """

    name: str
    sources: tuple[str, ...]
    forbidden: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None
    through: tuple[str, ...] = ()


RULES = (
    Rule(
        "the policy imports no store, checkpoints, executor or worker",
        sources=("genepool.policy",),
        forbidden=(
            "genepool.store",
            "genepool.checkpoints",
            "genepool._fsspec_checkpoints",
            "genepool.executors",
            "genepool.worker",
        ),
    ),
    Rule(
        "the store imports no policy or executor",
        sources=("genepool.store",),
        forbidden=("genepool.policy", "genepool.executors"),
    ),
    Rule(
        "the space imports only errors and redaction from genepool",
        sources=("genepool.space",),
        only=("genepool._errors", "genepool._redact"),
    ),
    Rule(
        "analysis runs no trial but through replay",
        sources=("genepool.analysis",),
        forbidden=("genepool.executors", "genepool.worker", "genepool._run"),
        through=("genepool._replay",),
    ),
)


def under(module: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``module`` is one of ``prefixes`` or inside one of them."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


# -- reading the source ----------------------------------------------------------------------
def module_names(root: Path) -> dict[str, Path]:
    """Every module under the package folder ``root``, by its dotted name."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(node: ast.AST, kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement under ``node``, with its kind."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, kind
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for inner in child.body:
                yield from _statements(ast.Module(body=[inner], type_ignores=[]), TYPING)
            for inner in child.orelse:
                yield from _statements(ast.Module(body=[inner], type_ignores=[]), kind)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _statements(child, FUNCTION if kind == MODULE else kind)
        else:
            yield from _statements(child, kind)


def read_imports(root: Path) -> dict[str, list[Import]]:
    """Each module under ``root`` with its imports of modules under ``root``."""
    modules = module_names(root)

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, list[Import]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: list[Import] = []
        for stmt, kind in _statements(ast.parse(path.read_text(encoding="utf-8")), MODULE):
            if isinstance(stmt, ast.Import):
                targets = [known(a.name) for a in stmt.names]
            else:
                base = stmt.module or ""
                if stmt.level:  # relative: from the package, up one level per dot after the first
                    parts = package.split(".")[: len(package.split(".")) - stmt.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [
                    known(f"{base}.{a.name}") if f"{base}.{a.name}" in modules else known(base)
                    for a in stmt.names
                ]
            edges += [Import(name, t, stmt.lineno, kind) for t in dict.fromkeys(targets) if t]
        graph[name] = edges
    return graph


@functools.cache
def source_graph() -> Graph:
    return read_imports(SRC)


# -- the checkers ----------------------------------------------------------------------------
def chain(paths: Mapping[str, list[Import]], module: str) -> str:
    return " -> ".join(str(edge) for edge in paths[module])


def broken(graph: Graph, rule: Rule) -> list[str]:
    """Each module that breaks ``rule``, with the chain of imports that reaches it."""
    starts = [m for m in graph if under(m, rule.sources)]
    paths: dict[str, list[Import]] = {m: [] for m in starts}
    queue = deque(starts)
    while queue:
        module = queue.popleft()
        if under(module, rule.through):
            continue
        for edge in graph.get(module, []):
            if edge.kind in _RUNTIME and edge.target not in paths:
                paths[edge.target] = [*paths[module], edge]
                queue.append(edge.target)
    out = []
    for module in paths:
        allowed = rule.sources + (rule.only or ())
        if under(module, rule.forbidden) or (rule.only is not None and not under(module, allowed)):
            out.append(f"{module}: {chain(paths, module)}")
    return out


def cycles(graph: Graph) -> list[str]:
    """Each import cycle through imports that run (at module level or in a function), one
    per strongly connected group, as the imports that close it."""
    edges = {m: [e for e in graph[m] if e.kind in _RUNTIME and e.target in graph] for m in graph}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def connect(m: str) -> None:  # Tarjan's strongly connected components
        index[m] = low[m] = len(index)
        stack.append(m)
        for e in edges[m]:
            if e.target not in index:
                connect(e.target)
                low[m] = min(low[m], low[e.target])
            elif e.target in stack:
                low[m] = min(low[m], index[e.target])
        if low[m] == index[m]:
            group: list[str] = []
            while not group or group[-1] != m:
                group.append(stack.pop())
            groups.append(group)

    for m in sorted(edges):
        if m not in index:
            connect(m)
    out = []
    for group in groups:
        if len(group) == 1 and all(e.target != group[0] for e in edges[group[0]]):
            continue
        out.append("; ".join(str(e) for e in _loop(edges, sorted(group))))
    return out


def _loop(edges: Mapping[str, list[Import]], group: list[str]) -> list[Import]:
    """One cycle inside a strongly connected ``group``: from its first module back to it."""
    start, members = group[0], set(group)
    paths: dict[str, list[Import]] = {start: []}
    queue = deque([start])
    while queue:
        m = queue.popleft()
        for e in edges[m]:
            if e.target == start:
                return [*paths[m], e]
            if e.target in members and e.target not in paths:
                paths[e.target] = [*paths[m], e]
                queue.append(e.target)
    raise AssertionError(f"no cycle in {group}")  # pragma: no cover


def long_modules(root: Path, limit: int = MAX_LINES) -> list[str]:
    """Each module under ``root`` longer than ``limit`` lines, as ``wc -l`` counts."""
    out = []
    for name, path in module_names(root).items():
        lines = path.read_bytes().count(b"\n")
        if lines > limit:
            out.append(f"{name}: {lines} lines")
    return out


# -- the rules on genepool's source ----------------------------------------------------------
def test_the_source_is_read() -> None:
    graph = source_graph()
    assert {"genepool", "genepool.policy", "genepool.store", "genepool.space"} <= set(graph)
    assert any(e.target == "genepool.member" for e in graph["genepool.policy"])


@pytest.mark.parametrize("rule", RULES, ids=[r.sources[0] for r in RULES])
def test_the_layers_keep_their_rules(rule: Rule) -> None:
    found = broken(source_graph(), rule)
    assert not found, "\n".join([f"{rule.name}, but:", *found])


def test_there_is_no_import_cycle() -> None:
    found = cycles(source_graph())
    assert not found, "\n".join(["import cycles:", *found])


def test_no_module_is_over_500_lines() -> None:
    found = long_modules(SRC)
    assert not found, "\n".join([f"modules over {MAX_LINES} lines:", *found])


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("genepool.policy.select", "genepool.worker"),
        ("genepool.store.memory", "genepool.executors"),
        ("genepool.space", "genepool.member"),
        ("genepool.analysis._lineage", "genepool._run"),
    ],
)
def test_one_bad_import_added_to_the_source_breaks_its_rule(source: str, target: str) -> None:
    graph = {m: list(edges) for m, edges in source_graph().items()}
    graph[source].append(Import(source, target, 1, FUNCTION))
    (rule,) = [r for r in RULES if under(source, r.sources)]
    assert f"{target}: {source}:1 imports {target} (function)" in broken(graph, rule)
    graph[source][-1] = Import(source, target, 1, TYPING)
    assert broken(graph, rule) == broken(source_graph(), rule)


def test_one_import_back_added_to_the_source_makes_a_cycle() -> None:
    graph = {m: list(edges) for m, edges in source_graph().items()}
    graph["genepool.member"].append(Import("genepool.member", "genepool.policy", 1, MODULE))
    assert any("genepool.member:1 imports genepool.policy (module)" in c for c in cycles(graph))


# -- the checkers, on small packages that break the rules ------------------------------------
def package(root: Path, files: Mapping[str, str]) -> Path:
    """A package ``genepool`` under ``root`` holding ``files`` (path: text)."""
    for name, text in {"__init__.py": "", **files}.items():
        path = root / "genepool" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text, encoding="utf-8")
    return root / "genepool"


def rule_for(sources: str) -> Rule:
    (found,) = [r for r in RULES if r.sources == (sources,)]
    return found


STORE = {
    "store/__init__.py": "from genepool.store.memory import MemoryStore\n",
    "store/memory.py": "",
}


def test_a_forbidden_import_is_found_through_a_chain_and_a_function(tmp_path: Path) -> None:
    root = package(
        tmp_path,
        {
            **STORE,
            "policy/__init__.py": "from . import select\n",
            "policy/select.py": "def pick():\n    from genepool import _helper\n",
            "_helper.py": "import genepool.store.memory as memory\n",
        },
    )
    assert broken(read_imports(root), rule_for("genepool.policy")) == [
        "genepool.store.memory: genepool.policy.select:2 imports genepool._helper (function)"
        " -> genepool._helper:1 imports genepool.store.memory (module)"
    ]


def test_a_type_checking_import_is_not_followed(tmp_path: Path) -> None:
    root = package(
        tmp_path,
        {
            **STORE,
            "policy/__init__.py": (
                "import typing\nif typing.TYPE_CHECKING:\n    from genepool.store import memory\n"
                "else:\n    from genepool import space\n"
            ),
            "space.py": "from genepool._errors import invalid\n",
            "_errors.py": "",
        },
    )
    graph = read_imports(root)
    assert [(e.target, e.kind) for e in graph["genepool.policy"]] == [
        ("genepool.store.memory", TYPING),
        ("genepool.space", MODULE),
    ]
    assert broken(graph, rule_for("genepool.policy")) == []


@pytest.mark.parametrize(
    ("sources", "files", "reached"),
    [
        (
            "genepool.store",
            {"store/memory.py": "from genepool.executors import serial\n"},
            ["genepool.executors.serial"],
        ),
        (
            "genepool.store",
            {"store/memory.py": "def decide():\n    from genepool.policy import Truncation\n"},
            ["genepool.policy"],
        ),
        (
            "genepool.space",
            {"space.py": "from genepool._errors import invalid\nfrom genepool.member import M\n"},
            ["genepool.member"],
        ),
        (
            "genepool.space",  # a helper the space may import must itself be pure
            {"space.py": "from genepool import _redact\n", "_redact.py": "import genepool.clock\n"},
            ["genepool.clock"],
        ),
        (
            "genepool.analysis",
            {"analysis/_report.py": "from genepool._run import run\n"},
            ["genepool._run"],
        ),
        (
            "genepool.analysis",
            {"analysis/_report.py": "from genepool import worker\n"},
            ["genepool.worker"],
        ),
        (
            "genepool.analysis",  # replay may run a trial, and nothing else in analysis
            {
                "analysis/_report.py": "import genepool._replay\n",
                "analysis/_figures.py": "from genepool.result import Result\n",
                "_replay.py": "from genepool.executors import serial\n",
                "result.py": "from genepool.executors.processes import run\n",
            },
            ["genepool.executors.processes"],
        ),
    ],
)
def test_each_layer_rule_fails_on_a_package_that_breaks_it(
    tmp_path: Path, sources: str, files: dict[str, str], reached: list[str]
) -> None:
    names = ("_errors", "_redact", "member", "clock", "worker", "_run", "_replay", "result")
    stubs = {f"{n}.py": "" for n in names}
    stubs |= {"policy/__init__.py": "", "executors/serial.py": "", "executors/processes.py": ""}
    root = package(tmp_path, {**STORE, **stubs, **files})
    found = broken(read_imports(root), rule_for(sources))
    assert [f.partition(":")[0] for f in found] == reached


def test_a_cycle_is_found_through_a_function_but_not_type_checking(tmp_path: Path) -> None:
    root = package(
        tmp_path,
        {
            "a.py": "from genepool import b\n",
            "b.py": "import genepool.c\n",
            "c.py": "from .a import x\n",
            "d.py": "import genepool.f\n",  # d -> f -> e -> d under TYPE_CHECKING: none
            "e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import genepool.d\n",
            "f.py": "from genepool import e\n",
            "store/__init__.py": "from genepool.store.sql import SQLStore\n",
            "store/sql.py": "from genepool.store import _schema\n",
            "store/_schema.py": "X = 1\n",
        },
    )
    graph = read_imports(root)
    assert cycles(graph) == [
        "genepool.a:1 imports genepool.b (module); genepool.b:1 imports genepool.c (module); "
        "genepool.c:1 imports genepool.a (module)"
    ]
    (root / "store" / "_schema.py").write_text("def f():\n    from genepool.store.sql import X\n")
    assert (
        "genepool.store._schema:2 imports genepool.store.sql (function); "
        "genepool.store.sql:1 imports genepool.store._schema (module)"
    ) in cycles(read_imports(root))
    (root / "self.py").write_text("from genepool.self import y\n")
    assert "genepool.self:1 imports genepool.self (module)" in cycles(read_imports(root))


def test_a_long_module_is_found(tmp_path: Path) -> None:
    root = package(tmp_path, {"short.py": "x = 1\n" * MAX_LINES, "long.py": "x = 1\n" * 501})
    assert long_modules(root) == ["genepool.long: 501 lines"]
