"""Cheap packaging and CI consistency checks that run with the unit suite.

The expensive checks (build the wheel, install it and ``pip install -e .`` in fresh venvs, run
``twistd``) live in ``.ci/run``; these make sure that script and the README agree and that the
source tree can't ship files that would break Twisted's plugin system (style.md §4).
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CI_RUN = ROOT / ".ci" / "run"
README = ROOT / "README.rst"


def _readme_literal_lines() -> list[str]:
    """The indented (literal block) lines of README.rst, without their indentation."""
    return [line.strip() for line in README.read_text().splitlines() if line.startswith("    ")]


def _ci_print(option: str) -> str:
    """What ``.ci/run OPTION`` prints (one of its ``--print-...`` options), stripped."""
    return subprocess.run(
        ["bash", str(CI_RUN), option],
        check=True,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    ).stdout.strip()


def test_ci_runs_the_readme_test_command() -> None:
    """``.ci/run`` takes its test command from README.rst, and it is the documented one."""
    printed = _ci_print("--print-test-command")
    pytest_lines = [line for line in _readme_literal_lines() if "-m pytest" in line]
    assert pytest_lines == [printed]
    assert printed.startswith("python3 -m venv .venv && ")
    assert '.venv/bin/pip install -e ".[test]"' in printed


def _readme_apt_packages() -> list[str]:
    """The packages of README.rst's ``apt-get install`` literal (with its continuation lines)."""
    lines = _readme_literal_lines()
    starts = [i for i, line in enumerate(lines) if line.startswith("apt-get install ")]
    assert len(starts) == 1, f"README.rst must show one apt-get install line, found {starts}"
    words: list[str] = []
    for line in lines[starts[0] :]:
        words += line.removesuffix("\\").split()
        if not line.endswith("\\"):
            break
    return words[2:]


def test_readme_lists_the_ci_apt_packages() -> None:
    """README.rst's ``apt-get install`` names exactly the packages ``.ci/run`` installs."""
    printed = _ci_print("--print-apt-packages").split()
    assert "postgresql-15" in printed
    assert _readme_apt_packages() == printed


def test_readme_server_command() -> None:
    """README.rst shows how to install (non-editable) and run the server with twistd."""
    assert (
        "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/twistd -n gearman"
        in _readme_literal_lines()
    )


def test_ci_script_is_strict_and_executable() -> None:
    """``.ci/run`` is executable bash with ``set -euo pipefail`` and the CI Hypothesis profile."""
    text = CI_RUN.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert re.search(r"^set -euo pipefail$", text, re.M)
    assert re.search(r"^export HYPOTHESIS_PROFILE=ci$", text, re.M)
    assert os.access(CI_RUN, os.X_OK)
    subprocess.run(["bash", "-n", str(CI_RUN)], check=True)


def test_no_init_files_under_twisted() -> None:
    """The source tree has no ``twisted/__init__.py`` or ``twisted/plugins/__init__.py``."""
    assert not (ROOT / "twisted" / "__init__.py").exists()
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists()


def test_plugin_package_is_listed_for_setuptools() -> None:
    """setup.cfg finds namespace packages and includes ``twisted.plugins`` but not the tests."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["options"]["packages"].strip() == "find_namespace:"
    include = config["options.packages.find"]["include"].split()
    exclude = config["options.packages.find"]["exclude"].split()
    assert "twisted.plugins" in include
    assert "tests*" in exclude
    assert not (ROOT / "pyproject.toml").read_text().count("[project]")


def test_dropin_cache_kept_out() -> None:
    """``dropin.cache`` is ignored by git and excluded from source distributions."""
    assert "dropin.cache" in (ROOT / ".gitignore").read_text().split()
    assert "global-exclude dropin.cache" in (ROOT / "MANIFEST.in").read_text()


def test_public_names_listed_once_in_each_place() -> None:
    """``__all__`` (read statically by tools) names exactly the lazily exported names."""
    import gearmanpy

    assert set(gearmanpy.__all__) == set(gearmanpy._EXPORTS) | {"__version__"}
    for name in gearmanpy._EXPORTS:
        assert getattr(gearmanpy, name) is not None, name
