"""The dashboard in a real browser, and ``/metrics`` of a real server, against real workers.

A ``twistd gearman --http`` server gets jobs and workers from libgearman's ``gearman`` tool;
headless Chromium (Debian's package) loads the dashboard, driven over the DevTools protocol on
a pipe (``--remote-debugging-pipe``: JSON messages ending in NUL on fds 3 and 4, no extra
package). The test reads the rendered DOM, checks it shows the functions, counts, workers and
jobs, then changes the server and checks the page follows without a reload, and keeps a
screenshot under the test's tmp dir. ``promtool`` checks the live ``/metrics``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import free_port, stop_process, wait_until

from .conftest import RunningServer, require_tool, start_gearmanpy

pytestmark = pytest.mark.interop

CHROMIUM = "/usr/bin/chromium"
#: Headless, and quiet on a machine without internet (/work/.library/env/machines/python.md).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
]
#: Where the README's screenshot is kept (copied by hand from a test run's artefact).
README_SHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"


def _onto_3_and_4(read_end: int, write_end: int) -> None:
    """In the child: make fd 3 the browser's input and fd 4 its output (copies first, so
    neither original is overwritten before it is copied)."""
    read_copy, write_copy = os.dup(read_end), os.dup(write_end)
    os.dup2(read_copy, 3)
    os.dup2(write_copy, 4)


class Browser:
    """Headless Chromium spoken to over the DevTools protocol on a pipe."""

    def __init__(self, profile: Path) -> None:
        require_tool(CHROMIUM)
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        self.proc = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"],
            # The child's fds 3 and 4 become the pipe's ends (kept open past close_fds).
            pass_fds=sorted({3, 4, to_browser_r, from_browser_w}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: _onto_3_and_4(to_browser_r, from_browser_w),
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._buffer = b""
        self.session: str | None = None

    def call(self, method: str, timeout: float = 15.0, **params: Any) -> dict[str, Any]:
        """Send one command (to the page, once attached) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                if time.monotonic() > deadline:
                    pytest.fail(f"no answer from Chromium to {method} within {timeout}s")
                chunk = os.read(self._from_browser, 65536)
                if not chunk:
                    pytest.fail(f"Chromium closed the pipe (status {self.proc.poll()})")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    pytest.fail(f"{method}: {reply['error']}")
                return reply["result"]  # type: ignore[no-any-return]

    def open(self, url: str) -> None:
        """Open ``url`` in a new tab and attach to it."""
        target = self.call("Target.createTarget", url=url)["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        """Save the page as a PNG."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        """Close the browser and its pipes."""
        try:
            os.write(self._to_browser, json.dumps({"id": 0, "method": "Browser.close"}).encode())
        except OSError:
            pass
        stop_process(self.proc, timeout=5)
        os.close(self._to_browser)
        os.close(self._from_browser)


#: What the page shows per function row: the cells the test compares, by class.
ROWS_JS = """
Object.fromEntries([...document.querySelectorAll('#functions tbody tr')].map(tr => [
  tr.dataset.function,
  Object.fromEntries(['queued', 'running', 'workers', 'completed'].map(
    c => [c, tr.querySelector('td.' + c).textContent]))]))
"""


def gearman(server: RunningServer, *args: str) -> str:
    """Run the gearman tool against ``server`` and return its output."""
    run = subprocess.run(
        [require_tool("gearman"), "-h", "127.0.0.1", "-p", str(server.port), *args],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert run.returncode == 0, run
    return run.stdout


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RunningServer, int]]:
    """A gearmanpy server with --http, its HTTP port."""
    http = free_port()
    server = start_gearmanpy(
        "--http", f"tcp:{http}:interface=127.0.0.1", workdir=tmp_path / "server"
    )
    yield server, http
    server.stop()


def metric(text: str, line_start: str) -> float:
    """The value of the sample line that starts with ``line_start``."""
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {line_start} in /metrics")


# Long: one real scenario (workers, jobs, browser, change, screenshot) checked step by step.
def test_dashboard_shows_live_data(served: tuple[RunningServer, int], tmp_path: Path) -> None:
    """Chromium renders the functions, counts, workers and jobs of a live server, and the
    page follows the server without a reload; /metrics agrees and passes promtool."""
    server, http = served
    workers = [
        subprocess.Popen(
            [require_tool("gearman"), "-h", "127.0.0.1", "-p", str(server.port), "-w", *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for argv in (["-f", "reverse", "--", "rev"], ["-f", "slow", "--", "sleep", "60"])
    ]
    browser = Browser(tmp_path / "profile")
    try:
        base = f"http://127.0.0.1:{http}"
        wait_until(lambda: _api(base, "overview")["workers"] == 2, what="both workers")
        for word in ("hello", "world", "again"):
            assert gearman(server, "-f", "reverse", word).strip() == word[::-1]
        for n in range(4):
            gearman(server, "-b", "-f", "resize", "-u", f"image-{n}", f"img{n}")
        gearman(server, "-b", "-f", "slow", "-u", "slow-1", "zz")
        wait_until(lambda: _api(base, "overview")["counters"]["submitted"] == 8)

        browser.open(base + "/")
        expected = {
            "reverse": {"queued": "0", "running": "0", "workers": "1", "completed": "3"},
            "resize": {"queued": "4", "running": "0", "workers": "0", "completed": "0"},
            "slow": {"queued": "0", "running": "1", "workers": "1", "completed": "0"},
        }
        rows = wait_until(
            lambda: (r := browser.evaluate(ROWS_JS)) == expected and r,
            what=f"the dashboard to show {expected}",
        )
        assert rows == expected
        workers_text = browser.evaluate("document.querySelector('#workers tbody').innerText")
        assert "reverse" in workers_text and "slow" in workers_text and "running" in workers_text
        jobs_text = browser.evaluate("document.querySelector('#jobs tbody').innerText")
        assert "image-3" in jobs_text and "slow-1" in jobs_text
        assert browser.evaluate("document.getElementById('status').className") == "status ok"

        # The page follows the server without a reload: two more results, one more worker.
        loads = browser.evaluate("performance.getEntriesByType('navigation').length")
        for word in ("four", "five"):
            gearman(server, "-f", "reverse", word)
        wait_until(
            lambda: browser.evaluate(ROWS_JS)["reverse"]["completed"] == "5",
            what="the completed count to reach 5 in the page",
        )
        assert browser.evaluate("performance.getEntriesByType('navigation').length") == loads
        # Search by unique, as a person types it.
        browser.evaluate(
            "(() => { const q = document.getElementById('job-query'); q.value = 'image-2';"
            " q.dispatchEvent(new Event('input')); })()"
        )
        wait_until(
            lambda: browser.evaluate("document.querySelectorAll('#jobs tbody tr').length") == 1,
            what="the search to narrow the jobs to one",
        )
        for n in range(6):  # a few seconds of traffic for the charts (and the screenshot)
            gearman(server, "-f", "reverse", f"tick{n}")
            time.sleep(0.4)
        browser.evaluate(
            "(() => { const q = document.getElementById('job-query'); q.value = '';"
            " q.dispatchEvent(new Event('input')); })()"
        )
        shot = tmp_path / "dashboard.png"
        wait_until(
            lambda: browser.evaluate("document.querySelectorAll('#jobs tbody tr').length") == 5
        )
        browser.screenshot(shot)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        if os.environ.get("GEARMANPY_UPDATE_SCREENSHOT"):
            shutil.copy(shot, README_SHOT)

        # /metrics counts what ran, and promtool accepts it.
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            text = r.read()
        body = text.decode()
        assert metric(body, 'gearmanpy_function_jobs_completed_total{function="reverse"}') == 11
        assert metric(body, "gearmanpy_jobs_submitted_total") == 16
        assert metric(body, 'gearmanpy_function_queued{function="resize",priority="normal"}') == 4
        assert metric(body, 'gearmanpy_function_running{function="slow"}') == 1
        assert metric(body, 'gearmanpy_function_run_seconds_count{function="reverse"}') == 11
        promtool = require_tool("promtool")
        run = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True)
        assert run.returncode == 0, run
    finally:
        browser.close()
        for w in workers:
            stop_process(w)


def _api(base: str, name: str) -> Any:
    """One JSON API answer."""
    with urllib.request.urlopen(f"{base}/api/{name}", timeout=5) as r:
        return json.load(r)
