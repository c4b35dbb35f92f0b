"""Build gearmanpy: the pure-Python package, or the same source with its hot path compiled.

The metadata is in setup.cfg; this file only decides the extension modules. With mypyc (a
build requirement, pyproject.toml), a C compiler and the Python headers present, the modules
named in gearmanpy/_compiled.py are compiled from their ``.py`` files; otherwise the package is
pure Python, and one line on stderr says why. ``GEARMANPY_BUILD`` forces the choice:

* ``auto`` (the default): compile when possible, else pure; an editable install
  (``pip install -e .``) is pure, so edits to the source take effect at once;
* ``compiled``: compile, also in place for an editable install, or fail the build;
* ``pure``: never compile.
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
MODES = ("auto", "compiled", "pure")


def say(message: str) -> None:
    """One line for whoever runs the build (pip shows stderr of a failing or verbose build)."""
    print(f"gearmanpy build: {message}", file=sys.stderr, flush=True)


def build_mode(environ: Any = os.environ) -> str:
    """``GEARMANPY_BUILD``'s value, checked."""
    mode = environ.get("GEARMANPY_BUILD", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise SystemExit(f"GEARMANPY_BUILD must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def editable(argv: list[str]) -> bool:
    """Is this an editable install (PEP 660's ``editable_wheel``, or ``develop``)?"""
    return any(arg in ("editable_wheel", "develop") for arg in argv)


def missing_toolchain() -> str | None:
    """Why the hot path cannot be compiled here, or None when it can."""
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypyc is not installed"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.exists():
        return f"no Python headers ({headers})"
    return None


def hot_paths() -> list[str]:
    """The files to compile: gearmanpy/_compiled.py's list (read without importing gearmanpy)."""
    names = runpy.run_path(str(ROOT / "gearmanpy" / "_compiled.py"))
    return list(names["module_paths"]())


def ext_modules(mode: str, argv: list[str]) -> list[Any]:
    """The extension modules to build for ``mode``: all of the hot path, or none."""
    if mode == "pure":
        say("pure Python (GEARMANPY_BUILD=pure)")
        return []
    if mode == "auto" and editable(argv):
        say("pure Python for an editable install (GEARMANPY_BUILD=compiled compiles in place)")
        return []
    why = missing_toolchain()
    if why is not None:
        if mode == "compiled":
            raise SystemExit(f"gearmanpy build: GEARMANPY_BUILD=compiled, but {why}")
        say(f"pure Python: {why} (the compiled build needs mypyc, a C compiler and Python.h)")
        return []
    from mypyc.build import mypycify

    say(f"compiling {len(hot_paths())} modules of the hot path with mypyc")
    os.chdir(ROOT)  # mypyc reads pyproject's [tool.mypy] and names modules from here
    # One shared library, gearmanpy__mypyc, beside the small per-module ones.
    return list(mypycify(hot_paths(), opt_level="3", group_name="gearmanpy"))


class OptionalBuildExt(build_ext):
    """build_ext that falls back to the pure package when compiling fails (mode ``auto``)."""

    def run(self) -> None:
        """Compile; in ``auto`` mode a compiler failure leaves the pure package, with a line."""
        try:
            super().run()
        except Exception as e:  # the compiler's failures come as several distutils types
            if build_mode() == "compiled":
                raise
            say(f"pure Python: compiling failed ({type(e).__name__}: {e})")
            for output in self.get_outputs():  # nothing half-built may ship
                Path(output).unlink(missing_ok=True)
            self.extensions.clear()


if __name__ == "__main__":
    setup(
        ext_modules=ext_modules(build_mode(), sys.argv),
        cmdclass={"build_ext": OptionalBuildExt},
    )
