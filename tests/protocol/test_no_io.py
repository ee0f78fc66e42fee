"""The sans-I/O core does no I/O (STYLE section 3.1).

Reads each core module's source (its AST, so nothing is imported or run) and
fails on an import of an I/O, clock or concurrency library, on any import that
is neither the standard library, msgspec nor the package itself, and on
``async``/``await``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import ipcbus

SANS_IO = (
    "_wire",
    "_framing",
    "_protocol",
    "_receiving",
    "_meaning",
    "_sending",
    "_states",
    "_events",
    "_errors",
)
FORBIDDEN = frozenset(
    {"anyio", "asyncio", "socket", "time", "threading", "trio", "selectors", "ssl"}
    | {"subprocess", "multiprocessing", "concurrent", "signal", "uvloop", "sniffio"}
)
PACKAGE = Path(ipcbus.__file__).parent


def _tree(module: str) -> ast.Module:
    path = PACKAGE / f"{module}.py"
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imports(tree: ast.Module) -> list[tuple[int, str]]:
    """``(line, top-level module)`` of every absolute import; relative ones are ours."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.partition(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.partition(".")[0]))
    return found


@pytest.mark.parametrize("module", SANS_IO)
def test_imports_nothing_that_does_io(module: str) -> None:
    bad = [(line, name) for line, name in _imports(_tree(module)) if name in FORBIDDEN]
    assert not bad, f"ipcbus.{module} imports I/O modules: {bad}"


@pytest.mark.parametrize("module", SANS_IO)
def test_imports_only_the_stdlib_and_msgspec(module: str) -> None:
    allowed = sys.stdlib_module_names | {"msgspec", "__future__", "ipcbus"}
    bad = [(line, name) for line, name in _imports(_tree(module)) if name not in allowed]
    assert not bad, f"ipcbus.{module} imports outside the stdlib and msgspec: {bad}"


@pytest.mark.parametrize("module", SANS_IO)
def test_no_dynamic_imports(module: str) -> None:
    calls = [
        node.lineno
        for node in ast.walk(_tree(module))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name | ast.Attribute)
        and getattr(node.func, "id", getattr(node.func, "attr", ""))
        in {"__import__", "import_module"}
    ]
    assert not calls, f"ipcbus.{module} imports dynamically at lines {calls}"


@pytest.mark.parametrize("module", SANS_IO)
def test_nothing_awaits(module: str) -> None:
    async_nodes = (ast.AsyncFunctionDef, ast.Await, ast.AsyncFor, ast.AsyncWith)
    found = [node.lineno for node in ast.walk(_tree(module)) if isinstance(node, async_nodes)]
    assert not found, f"ipcbus.{module} has async code at lines {found}"


def test_the_checker_catches_an_io_import() -> None:
    tree = ast.parse("import os\nfrom anyio import sleep\nimport socket as s\nfrom . import x\n")
    names = [name for _, name in _imports(tree)]
    assert names == ["os", "anyio", "socket"]
    assert {"anyio", "socket"} <= FORBIDDEN
