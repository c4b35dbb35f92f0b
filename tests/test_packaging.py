"""Cheap packaging and CI consistency checks that run with the unit suite.

The expensive checks (build the wheel, install it and ``pip install -e .`` in fresh venvs, run
``twistd``) live in ``.ci/run``; these make sure that script and the README agree and that the
source tree can't ship files that would break Twisted's plugin system (style.md §4).
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CI_RUN = ROOT / ".ci" / "run"
README = ROOT / "README.rst"
SETUP_SCRIPT = ROOT / "scripts" / "setup-tests"


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
    """``.ci/run`` takes its test command from README.rst: set-up, then pytest."""
    printed = _ci_print("--print-test-command")
    assert printed == (
        "scripts/setup-tests --compiled && GEARMANPY_EXPECT_COMPILED=1 .venv/bin/python -m pytest"
        " && scripts/setup-tests && GEARMANPY_EXPECT_COMPILED=0 .venv/bin/python -m pytest"
        ' -m "not interop"'
    )
    assert [line for line in _readme_literal_lines() if "-m pytest" in line] == [printed]
    assert os.access(SETUP_SCRIPT, os.X_OK)


def _listed_packages() -> list[str]:
    """The packages of scripts/debian-packages, as scripts/setup-tests reads them."""
    return subprocess.run(
        ["bash", str(SETUP_SCRIPT), "--print-packages"], check=True, capture_output=True, text=True
    ).stdout.split()


def test_one_package_list() -> None:
    """``.ci/run`` installs exactly scripts/debian-packages, which the README names."""
    listed = _listed_packages()
    assert "postgresql-15" in listed and "gearman-job-server" in listed
    assert _ci_print("--print-apt-packages").split() == listed
    assert "scripts/debian-packages" in README.read_text()
    assert "apt-get install gearman-job-server" not in README.read_text()  # no second copy


def test_missing_packages_it_cannot_install() -> None:
    """Without root or a password-less sudo, scripts/setup-tests stops with one line naming the
    missing packages and the command to install them, before making any virtualenv."""
    # A copy of the script and a list that nobody may read (tmp_path and CI's copy of the
    # checkout are private to root).
    work = Path(tempfile.mkdtemp())
    work.chmod(0o755)
    (work / "scripts").mkdir(mode=0o755)
    script = work / "scripts" / "setup-tests"
    shutil.copy(SETUP_SCRIPT, script)
    script.chmod(0o755)
    listing = work / "packages"
    listing.write_text("# a comment\nbash\ngearmanpy-no-such-package  # trailing comment\n")
    listing.chmod(0o644)
    argv = ["bash", str(script)]
    if os.geteuid() == 0:  # CI runs as root: run it as nobody
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
    env = {"PATH": "/usr/bin:/bin", "GEARMANPY_DEBIAN_PACKAGES": str(listing)}
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd="/", timeout=60)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        "scripts/setup-tests: missing Debian packages: gearmanpy-no-such-package; install them with:"
        " sudo apt-get install gearmanpy-no-such-package"
    ]
    assert not (work / ".venv").exists()
    shutil.rmtree(work)


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

    assert set(gearmanpy.__all__) == set(gearmanpy._EXPORTS) | {"__version__", "compiled"}
    for name in gearmanpy._EXPORTS:
        assert getattr(gearmanpy, name) is not None, name
