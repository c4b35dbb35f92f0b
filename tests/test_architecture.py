"""The architecture rules of docs/architecture.rst that import-linter cannot express.

import-linter (``lint-imports`` in CI) checks which rooms import which. These tests check
which Twisted modules the core may use, that nothing imports the global reactor at module
scope, and the size limits that keep each room readable.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parent.parent / "gearmanpy"

#: The core's modules, and the only Twisted modules they may import (docs/architecture.rst).
CORE_MODULES = (
    "jobs",
    "core",
    "attempts",
    "results",
    "operations",
    "durability",
    "handles",
    "failures",
    "broadcast",
    "replay",
    "kept",
    "policy",
)
CORE_TWISTED = {
    "twisted.internet.defer",
    "twisted.internet.interfaces",
    "twisted.logger",
    "twisted.python.failure",
}

#: "About 600 lines" a module, "about 60" a function.
MAX_MODULE_LINES = 650
MAX_FUNCTION_LINES = 60


def library_modules() -> list[Path]:
    """Every source module of the library."""
    return sorted(LIBRARY.rglob("*.py"))


def imported_modules(tree: ast.AST) -> Iterator[str]:
    """Every module an ``import`` or ``from ... import`` anywhere in ``tree`` names."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            for alias in node.names:
                yield f"{node.module}.{alias.name}"


def test_core_uses_only_its_twisted_modules() -> None:
    """The core's modules import only Deferreds, interfaces, the logger and Failure of Twisted."""
    for name in CORE_MODULES:
        path = LIBRARY / "server" / f"{name}.py"
        tree = ast.parse(path.read_text())
        used = {m for m in imported_modules(tree) if m == "twisted" or m.startswith("twisted.")}
        # ``from twisted.internet.defer import Deferred`` names the module and the member.
        modules = {m for m in used if not any(m.startswith(a + ".") for a in CORE_TWISTED)}
        assert modules <= CORE_TWISTED, f"{path.name} imports {sorted(modules - CORE_TWISTED)}"


def test_twisted_check_can_fail() -> None:
    """The import scan sees a transport import, so the check above would catch one."""
    tree = ast.parse("from twisted.internet import tcp\nimport socket\n")
    assert "twisted.internet.tcp" in set(imported_modules(tree))


@pytest.mark.parametrize("path", library_modules(), ids=lambda p: str(p.relative_to(LIBRARY)))
def test_no_global_reactor_at_module_scope(path: Path) -> None:
    """No library module imports the global reactor when it is imported itself."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "twisted.internet":
            assert "reactor" not in {a.name for a in node.names}, path
        if isinstance(node, ast.Import):
            assert "twisted.internet.reactor" not in {a.name for a in node.names}, path


@pytest.mark.parametrize("path", library_modules(), ids=lambda p: str(p.relative_to(LIBRARY)))
def test_module_size(path: Path) -> None:
    """No module of the library is over about 600 lines."""
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(LIBRARY)} has {lines} lines"


def long_functions_without_reason(source: str) -> list[str]:
    """Functions over the limit whose ``def`` has no ``# Long:`` comment saying why."""
    lines = source.splitlines()
    missing = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length <= MAX_FUNCTION_LINES:
                continue
            first_body = node.body[0].lineno
            head = lines[max(node.lineno - 3, 0) : first_body]
            if not any(line.strip().startswith("# Long:") for line in head):
                missing.append(f"{node.name} ({length} lines)")
    return missing


@pytest.mark.parametrize("path", library_modules(), ids=lambda p: str(p.relative_to(LIBRARY)))
def test_long_functions_say_why(path: Path) -> None:
    """A function over about 60 lines says why beside its ``def``."""
    assert long_functions_without_reason(path.read_text()) == []


def test_long_function_check_can_fail() -> None:
    """A long function without the comment is found, and the comment is accepted."""
    body = "".join(f"    x{i} = {i}\n" for i in range(70))
    assert long_functions_without_reason("def f():\n" + body) == ["f (71 lines)"]
    assert long_functions_without_reason("# Long: a reason\ndef f():\n" + body) == []
