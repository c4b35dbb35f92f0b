"""A script that submits jobs and never runs the reactor fails loudly at exit (issue 11),
while submitting before ``reactor.run()`` stays legitimate. Real interpreters, since the
check runs at interpreter exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.procs import free_port

ROOT = Path(__file__).resolve().parent.parent


def run(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with this worktree's gearmanpy."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )


def test_reactor_never_ran() -> None:
    """Submissions without a running reactor: one line naming the fix, exit status 1."""
    proc = run(
        "from gearmanpy import Client\n"
        f"client = Client(['127.0.0.1:{free_port()}'])\n"
        "client.submit_background('f', b'x')\n"
        "client.submit('f', b'y')\n"
        "print('script done')\n"
    )
    assert proc.returncode == 1
    assert proc.stdout == "script done\n"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "2 Gearman request(s) were never sent" in lines[0]
    assert "twisted.internet.task.react" in lines[0]


def test_submitted_before_run() -> None:
    """Submitting before reactor.run(), then running it, is fine: no message, status 0."""
    proc = run(
        "from twisted.internet import reactor\n"
        "from gearmanpy import Client, NoServersAvailable\n"
        f"client = Client(['127.0.0.1:{free_port()}'])\n"
        "d = client.submit_background('f', b'x')\n"
        "d.addErrback(lambda f: print(f.type.__name__))\n"
        "d.addBoth(lambda _: reactor.stop())\n"
        "reactor.run()\n"
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "NoServersAvailable\n", "")
