"""The two builds: which one is installed, that it is whole, and setup.py's choice of build.

``GEARMANPY_EXPECT_COMPILED=1`` (or ``0``) says which build the run must be testing; the
README's test command sets it for each of its two runs, so a build that silently fell back
to pure Python cannot pass as the compiled one.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

import gearmanpy
from gearmanpy._compiled import COMPILED_MODULES, build_name, compiled_modules, module_paths

ROOT = Path(__file__).resolve().parent.parent


def load_setup() -> ModuleType:
    """setup.py as a module (its ``setup()`` call runs only as ``__main__``)."""
    spec = importlib.util.spec_from_file_location("gearmanpy_setup", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_expected_build() -> None:
    """The run tests the build it says it tests."""
    expected = os.environ.get("GEARMANPY_EXPECT_COMPILED")
    if expected is None:
        pytest.skip("GEARMANPY_EXPECT_COMPILED is not set (the README's runs set it)")
    assert gearmanpy.compiled is (expected == "1"), compiled_modules()
    assert build_name() == ("compiled (mypyc)" if expected == "1" else "pure Python")


def test_all_or_nothing() -> None:
    """Either every hot module is compiled or none is: a half-built install is a build bug."""
    found = compiled_modules()
    assert set(found) == set(COMPILED_MODULES)
    assert len(set(found.values())) == 1, found


def test_compiled_modules_are_current() -> None:
    """An in-place compiled module is not older than its source (it would hide the edits)."""
    if not gearmanpy.compiled:
        pytest.skip("the pure-Python build runs")
    stale = []
    for name in COMPILED_MODULES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        source = Path(spec.origin).with_name(name.rsplit(".", 1)[-1] + ".py")
        if source.exists() and source.stat().st_mtime > Path(spec.origin).stat().st_mtime:
            stale.append(str(source))
    assert not stale, f"compiled before their last edit (scripts/setup-tests --compiled): {stale}"


def test_module_list_names_source_files() -> None:
    """Every module the compiled build compiles is a .py file of the source tree."""
    for path in module_paths():
        assert (ROOT / path).is_file(), path


def test_build_mode() -> None:
    """GEARMANPY_BUILD takes auto (the default), compiled or pure; anything else stops it."""
    setup = load_setup()
    assert setup.build_mode({}) == "auto"
    assert setup.build_mode({"GEARMANPY_BUILD": " Compiled "}) == "compiled"
    assert setup.build_mode({"GEARMANPY_BUILD": "pure"}) == "pure"
    with pytest.raises(SystemExit, match="GEARMANPY_BUILD must be one of auto, compiled, pure"):
        setup.build_mode({"GEARMANPY_BUILD": "fast"})


def test_pure_fallback(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a compiler, auto builds the pure package with one line saying why; compiled
    fails; pure and an editable auto install never compile."""
    setup = load_setup()
    monkeypatch.setattr(setup, "missing_toolchain", lambda: "no C compiler (cc)")
    assert setup.ext_modules("auto", ["bdist_wheel"]) == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pure Python: no C compiler (cc)" in err, err
    with pytest.raises(SystemExit, match="GEARMANPY_BUILD=compiled, but no C compiler"):
        setup.ext_modules("compiled", ["bdist_wheel"])
    assert setup.ext_modules("pure", ["bdist_wheel"]) == []
    assert "GEARMANPY_BUILD=pure" in capsys.readouterr().err
    assert setup.ext_modules("auto", ["editable_wheel"]) == []
    assert "editable install" in capsys.readouterr().err
