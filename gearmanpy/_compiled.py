"""Which modules the compiled build compiles with mypyc, and whether this install did.

The hot path of every job: the binary codec, the server's packet dispatch and its outbound
path, and the client's and worker's shared transport. ``setup.py`` compiles exactly these
(``GEARMANPY_BUILD``) from the same ``.py`` files the pure build ships; everything else is
Python in both builds. Measured per job by ``benchmarks/inprocess_bench.py`` under
callgrind, the modules below are those that gain (README.rst's Performance section says
what was tried).
This module is plain Python in both builds and imports nothing of gearmanpy's.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util

#: The modules the compiled build compiles, by dotted name.
COMPILED_MODULES: tuple[str, ...] = (
    "gearmanpy.protocol.packets",
    "gearmanpy.protocol.numbers",
    "gearmanpy.protocol.limits",
    "gearmanpy.protocol.replies",
    "gearmanpy.server.handles",
    "gearmanpy.server.outbound",
    "gearmanpy.server.protocol",
    "gearmanpy._transport",
)


def module_paths() -> list[str]:
    """The source files of :data:`COMPILED_MODULES`, relative to the project root."""
    return [name.replace(".", "/") + ".py" for name in COMPILED_MODULES]


def compiled_modules() -> dict[str, bool]:
    """For each of :data:`COMPILED_MODULES`: is the installed one an extension module?

    Found without importing them (``find_spec`` on a submodule imports only its packages).
    """
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    found = {}
    for name in COMPILED_MODULES:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        found[name] = bool(origin and origin.endswith(suffixes))
    return found


def is_compiled() -> bool:
    """True when the hot path runs compiled: every one of :data:`COMPILED_MODULES` is."""
    return all(compiled_modules().values())


def build_name() -> str:
    """``compiled (mypyc)`` or ``pure Python``, as ``twistd gearman`` logs it at start-up."""
    return "compiled (mypyc)" if is_compiled() else "pure Python"
