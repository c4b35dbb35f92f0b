"""The README's quick start runs as written against our server (only the addresses change)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.conftest import TWISTD, RunningServer
from tests.procs import free_port, stop_process
from tests.readme import README, code_block_after

pytestmark = pytest.mark.interop


def test_quick_start_worker_and_client(gearmanpy_server: RunningServer, tmp_path: Path) -> None:
    """worker_app.py under twistd and client_main.py print the progress, result and status."""
    worker_src = code_block_after("Save this as ``worker_app.py``")
    client_src = code_block_after("(``python client_main.py``)")
    dead = f"tcp:host=127.0.0.1:port={free_port()}"  # the README's second server, down
    worker_src = worker_src.replace("127.0.0.1:4730", gearmanpy_server.address)
    client_src = client_src.replace("127.0.0.1:4730", gearmanpy_server.address)
    client_src = re.sub(r"tcp:host=jobs2:port=4730", dead, client_src)
    work = tmp_path / "readme"
    work.mkdir()
    (work / "worker_app.py").write_text(worker_src)
    (work / "client_main.py").write_text(client_src)
    env = dict(os.environ, PYTHONPATH=str(README.parent))
    worker = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "-l", str(work / "w.log"), "-y", "worker_app.py"],
        cwd=work,
        env=env,
    )
    try:
        out = subprocess.run(
            [sys.executable, "client_main.py"],
            cwd=work,
            env=env,
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout.decode()
    finally:
        stop_process(worker)
    assert "WorkStatus(numerator=1, denominator=1)" in out
    assert "b'olleh'" in out
    assert "JobStatus(" in out
