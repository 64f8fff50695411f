"""The layout holds: today's import paths work, and imports go one way only.

The import rules (docs/layout.md) are checked by reading every module's
imports from its source, so a rule is broken the moment the import is written,
whether or not a test happens to run that line:

- the core (``gqlbatch/__init__.py``, ``gqlbatch/_*.py``) imports only the
  standard library and itself;
- an integration (``gqlbatch/strawberry/``, ``gqlbatch/sqlalchemy/``,
  ``gqlbatch/otel.py``, ``gqlbatch/redis/``) imports the standard library, its
  framework, the public names of ``gqlbatch`` and its own package; never the
  core's private modules, another integration, or the example;
- ``example_api`` and ``benchmarks`` import public gqlbatch names only, and
  ``example_api`` never imports ``benchmarks`` or ``tests``;
- nobody imports a name that starts with an underscore from another project module;
- no import circle among the modules of ``gqlbatch``, ``example_api`` and
  ``benchmarks``, counting imports inside functions and ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("gqlbatch", "example_api", "benchmarks")

# Every public import path of the project as of the package split; each must keep working.
PUBLIC: dict[str, tuple[str, ...]] = {
    "gqlbatch": (
        "BatchError",
        "BatchFunction",
        "BatchInfo",
        "BatchObserver",
        "BatchOptions",
        "BatchedQueue",
        "CacheCallInfo",
        "CircuitBreaker",
        "EngineOptions",
        "ErrorMode",
        "ErrorModeName",
        "GqlBatchError",
        "KeyType",
        "KeyedLoader",
        "LoaderClosedError",
        "LoaderOptions",
        "LoaderStats",
        "MemoryValueCache",
        "MissingKeyError",
        "NOT_FOUND",
        "QueueClearedError",
        "QueueFullError",
        "RetryPolicy",
        "RowsBatchFunction",
        "ValueCache",
        "ValueCacheRead",
        "WrongEventLoopError",
        "add_observer",
        "remove_observer",
    ),
    "gqlbatch.strawberry": (
        "AliasLimiter",
        "BatchLengthError",
        "Context",
        "CostLimiter",
        "DepthLimiter",
        "Fetcher",
        "GraphQL",
        "LoaderExtension",
        "LoaderRegistry",
        "LoaderSpec",
        "OperationNameRequired",
        "RegistryClosedError",
        "RepeatLimiter",
        "StatementCounting",
        "StatementScope",
        "context_getter",
        "from_index_batch",
        "invalidate",
        "loader",
        "write_through",
    ),
    "gqlbatch.strawberry.asgi": ("GraphQL",),
    "gqlbatch.strawberry.fastapi": ("FastAPIContext",),
    "gqlbatch.strawberry.cost": ("COST_CEILING", "CostLimiter"),
    "gqlbatch.strawberry.limits": (
        "AliasLimiter",
        "DepthLimiter",
        "OperationNameRequired",
        "RepeatLimiter",
    ),
    "gqlbatch.sqlalchemy": (
        "DB_RETRY",
        "DisconnectError",
        "ManyFetcher",
        "OneFetcher",
        "PerBatchSessions",
        "SessionSource",
        "SharedSession",
        "StatementCounter",
        "StatementScope",
        "by_column",
        "by_group",
        "by_relationship",
        "db_retry_policy",
    ),
    "gqlbatch.otel": ("TracingObserver", "instrument", "uninstrument"),
    "gqlbatch.redis": ("JsonSerializer", "RedisValueCache", "Serializer"),
}

# The third-party packages each integration is written against.
FRAMEWORKS: dict[str, frozenset[str]] = {
    "gqlbatch.strawberry": frozenset({"strawberry", "graphql", "starlette"}),
    "gqlbatch.sqlalchemy": frozenset({"sqlalchemy"}),
    "gqlbatch.otel": frozenset({"opentelemetry"}),
    "gqlbatch.redis": frozenset({"redis"}),
}


# --------------------------------------------------------------------------- today's import paths


@pytest.mark.parametrize(
    ("module", "name"),
    [(module, name) for module, names in PUBLIC.items() for name in names],
    ids=[f"{module}.{name}" for module, names in PUBLIC.items() for name in names],
)
def test_every_public_import_path_of_today_still_works(module: str, name: str) -> None:
    imported = importlib.import_module(module)
    assert getattr(imported, name) is not None
    assert name in imported.__all__


def test_the_packages_still_list_every_name_of_today() -> None:
    for module in PUBLIC:
        assert set(PUBLIC[module]) <= set(importlib.import_module(module).__all__), module


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("gqlbatch", ("strawberry", "sqlalchemy", "graphql", "starlette", "opentelemetry")),
        ("gqlbatch.strawberry", ("sqlalchemy", "starlette", "fastapi")),
        ("gqlbatch.sqlalchemy", ("strawberry", "graphql", "starlette")),
        ("gqlbatch.otel", ("strawberry", "sqlalchemy")),
    ],
)
def test_importing_a_package_imports_only_its_own_framework(
    module: str, absent: tuple[str, ...]
) -> None:
    code = (
        f"import sys, {module}; "
        f"bad = [m for m in {absent!r} if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- reading the imports


@dataclass(frozen=True)
class Import:
    """One edge: ``importer`` imports ``target`` (and maybe ``names`` from it)."""

    importer: str
    path: Path
    line: int
    target: str
    names: tuple[str, ...]
    typing_only: bool


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(root: Path, name: str) -> bool:
    base = root.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_of(root: Path, path: Path) -> Iterator[Import]:
    importer = _module_name(root, path)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))

    def walk(nodes: list[ast.stmt], typing_only: bool) -> Iterator[Import]:
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(importer, path, node.lineno, alias.name, (), typing_only)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                if target == "__future__":
                    continue
                plain: list[str] = []
                for alias in node.names:
                    if _is_module(root, f"{target}.{alias.name}"):  # a submodule
                        yield Import(
                            importer, path, node.lineno, f"{target}.{alias.name}", (), typing_only
                        )
                    else:
                        plain.append(alias.name)
                if plain:
                    yield Import(importer, path, node.lineno, target, tuple(plain), typing_only)
            elif isinstance(node, ast.If):
                yield from walk(node.body, typing_only or _is_type_checking(node.test))
                yield from walk(node.orelse, typing_only)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    children = getattr(node, field, None)
                    if isinstance(children, list):
                        statements = [c for c in children if isinstance(c, ast.stmt)]
                        handlers = [c for c in children if isinstance(c, ast.ExceptHandler)]
                        yield from walk(statements, typing_only)
                        for handler in handlers:
                            yield from walk(handler.body, typing_only)

    yield from walk(tree.body, False)


def project_imports(root: Path) -> list[Import]:
    """Every import in the checked trees under ``root``."""
    found: list[Import] = []
    for top in CHECKED:
        for path in sorted((root / top).rglob("*.py")):
            found.extend(_imports_of(root, path))
    return found


def _declared_all(root: Path, module: str) -> set[str] | None:
    """The ``__all__`` a project module declares (read from its source), or None."""
    base = root.joinpath(*module.split("."))
    path = base / "__init__.py" if (base / "__init__.py").is_file() else base.with_suffix(".py")
    if not path.is_file():
        return None
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                assert node.value is not None
                return set(ast.literal_eval(node.value))
    return None


# --------------------------------------------------------------------------- the rules


def _top(name: str) -> str:
    return name.split(".")[0]


def _area(module: str) -> str:
    """``core``, an integration's package (``gqlbatch.strawberry``), or the top-level tree."""
    if module.startswith("gqlbatch"):
        parts = module.split(".")
        if len(parts) == 1 or parts[1].startswith("_"):
            return "core"
        return f"gqlbatch.{parts[1]}"
    return _top(module)


def _private_part(name: str) -> bool:
    return any(part.startswith("_") for part in name.split("."))


def rule_violations(root: Path) -> list[str]:
    """Every import under ``root`` that breaks a rule of the module docstring, explained."""
    problems: list[str] = []
    stdlib = sys.stdlib_module_names
    for edge in project_imports(root):
        area = _area(edge.importer)
        known = _top(edge.target) in (*CHECKED, "tests")
        target_area = _area(edge.target) if known else None
        here = f"{edge.path.relative_to(root)}:{edge.line}: {edge.importer} imports {edge.target}"
        if edge.names:
            here += f" ({', '.join(edge.names)})"
        private = [n for n in edge.names if n.startswith("_")]
        if private and target_area is not None:
            problems.append(f"{here}: a private name is imported from another module")
        if area == "core":
            if target_area not in (None, "core") or (
                target_area is None and _top(edge.target) not in stdlib
            ):
                problems.append(f"{here}: the core imports the standard library only")
            continue
        if target_area is None:
            if _top(edge.target) in stdlib:
                continue
            allowed = FRAMEWORKS.get(area)
            if allowed is not None and _top(edge.target) not in allowed:
                problems.append(
                    f"{here}: {area} may import only its framework "
                    f"({', '.join(sorted(allowed))}) and the standard library"
                )
            continue
        if area in FRAMEWORKS:  # an integration
            if target_area == area:
                continue
            if edge.target != "gqlbatch":
                problems.append(
                    f"{here}: an integration imports only public names of gqlbatch "
                    "and its own package"
                )
                continue
        elif area in ("example_api", "benchmarks"):
            if area == "example_api" and target_area in ("benchmarks", "tests"):
                problems.append(f"{here}: example_api never imports {target_area}")
                continue
            if target_area != "core" and not target_area.startswith("gqlbatch."):
                continue  # its own tree, or benchmarks reading the example
            if _private_part(edge.target):
                problems.append(f"{here}: {area} imports public gqlbatch modules only")
                continue
        public = _declared_all(root, edge.target)
        unlisted = [n for n in edge.names if public is not None and n not in public]
        if unlisted and _top(edge.target) == "gqlbatch":
            problems.append(f"{here}: {', '.join(unlisted)} not in {edge.target}.__all__")
    return problems


def import_cycles(root: Path) -> list[list[str]]:
    """The import circles among the checked modules (each as a closed path), if any."""
    graph: dict[str, set[str]] = {}
    for edge in project_imports(root):
        graph.setdefault(edge.importer, set())
        if _top(edge.target) in CHECKED and edge.target != edge.importer:
            graph[edge.importer].add(edge.target)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


# --------------------------------------------------------------------------- the checks


def test_imports_go_one_way_only() -> None:
    problems = rule_violations(ROOT)
    assert not problems, "import rules broken (see docs/layout.md):\n" + "\n".join(problems)


def test_there_is_no_import_circle() -> None:
    cycles = import_cycles(ROOT)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for top in CHECKED:
        (root / top).mkdir(exist_ok=True)
        (root / top / "__init__.py").touch()
    return root


def test_a_broken_rule_is_reported_with_its_place_and_reason(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "gqlbatch/__init__.py": '__all__ = ["KeyedLoader"]\nfrom gqlbatch._loader import *\n',
            "gqlbatch/_loader.py": "import asyncio\nimport strawberry\n",
            "gqlbatch/strawberry/__init__.py": (
                "from gqlbatch._loader import KeyedLoader\n"
                "from gqlbatch.sqlalchemy import by_column\n"
                "import sqlalchemy\n"
                "from gqlbatch.strawberry.context import _build\n"
            ),
            "gqlbatch/strawberry/context.py": "from gqlbatch import KeyedLoader, Engine\n",
            "gqlbatch/sqlalchemy/__init__.py": '__all__ = ["by_column"]\n',
            "example_api/app.py": "from gqlbatch._loader import KeyedLoader\nimport tests.x\n",
        },
    )
    reasons = "\n".join(rule_violations(root))
    expected = [
        "gqlbatch/_loader.py:2: gqlbatch._loader imports strawberry: the core imports the "
        "standard library only",
        "gqlbatch/strawberry/__init__.py:1: gqlbatch.strawberry imports gqlbatch._loader "
        "(KeyedLoader): an integration imports only public names",
        "gqlbatch/strawberry/__init__.py:2: gqlbatch.strawberry imports gqlbatch.sqlalchemy "
        "(by_column): an integration imports only public names",
        "gqlbatch/strawberry/__init__.py:3: gqlbatch.strawberry imports sqlalchemy: "
        "gqlbatch.strawberry may import only its framework",
        "gqlbatch/strawberry/__init__.py:4: gqlbatch.strawberry imports "
        "gqlbatch.strawberry.context (_build): a private name is imported from another module",
        "gqlbatch/strawberry/context.py:1: gqlbatch.strawberry.context imports gqlbatch "
        "(KeyedLoader, Engine): Engine not in gqlbatch.__all__",
        "example_api/app.py:1: example_api.app imports gqlbatch._loader (KeyedLoader): "
        "example_api imports public gqlbatch modules only",
        "example_api/app.py:2: example_api.app imports tests.x: example_api never imports tests",
    ]
    for message in expected:
        assert message in reasons
    assert len(reasons.splitlines()) == len(expected), reasons


def test_a_circle_is_reported_even_through_a_type_checking_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "example_api/app.py": "from example_api.context import AppContext\n",
            "example_api/context.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from example_api.app import AppState\n"
            ),
        },
    )
    assert import_cycles(root) == [["example_api.app", "example_api.context", "example_api.app"]]
