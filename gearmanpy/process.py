# -*- test-case-name: tests.test_tap -*-
"""The ``twistd gearman`` process around the server: its log filter and format, its exit
status after a failed start, the quiet exit of a daemon that could not start, and the
garbage collector's thresholds. :mod:`gearmanpy.tap` builds these around the server service.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from typing import IO, Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogPublisher,
    globalLogPublisher,
    jsonFileLogObserver,
)

from gearmanpy.server.admin import Verbosity
from gearmanpy.server.service import StartupError


def exit_nonzero(foreground: bool) -> Callable[[str], None]:
    """What ``twistd gearman`` does when start-up fails once its reactor is running: print
    the reason on standard error (in the foreground), and exit with status 1 once twistd has
    stopped the reactor and cleaned up.

    twistd itself always exits 0 after its reactor stops (its status pipe to a daemon's parent
    is closed by then), so the status is set from an ``atexit`` hook, the last thing the
    process runs: ``os._exit`` there is the only way to change it.
    """

    def failed(reason: str) -> None:
        if foreground:
            stream = sys.__stderr__  # twistd sends sys.stderr to the log
            if stream is not None:
                stream.write(f"gearmanpy: could not start: {reason}\n")
                stream.flush()
        atexit.register(_exit, 1)

    return failed


def _exit(status: int) -> None:
    """Flush the standard streams and end the process with ``status`` at once."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


class LogFilter(Service):
    """Puts :class:`Verbosity`'s filter in front of every log observer twistd has set up,
    so gearmanpy's messages below the level are dropped wherever the log goes (stdout, a
    file, syslog), and takes it away again when stopped.

    It starts before the server (twistd has begun logging by then) and stops after it.
    """

    def __init__(
        self,
        verbosity: Verbosity,
        publisher: LogPublisher = globalLogPublisher,
        json_to: Callable[[], IO[str]] | None = None,
    ) -> None:
        """
        :param json_to: with ``--log-format json``, opens where the log goes; its JSON
            observer replaces twistd's text observers while the service runs.
        """
        self.verbosity = verbosity
        self.publisher = publisher
        self.json_to = json_to
        self._wrapped: list[tuple[ILogObserver, ILogObserver]] = []

    def privilegedStartService(self) -> None:
        """Filter from the first line the server logs."""
        super().privilegedStartService()
        self._install()

    def startService(self) -> None:
        """Filter (if privilegedStartService was not called)."""
        super().startService()
        self._install()

    def _install(self) -> None:
        if self._wrapped:
            return
        # LogPublisher lists its observers in _observers and offers no other way to read them.
        observers = list(self.publisher._observers)
        if self.json_to is not None:  # one JSON object per line, in place of twistd's text
            json = FilteringLogObserver(
                jsonFileLogObserver(self.json_to(), recordSeparator=""),
                [self.verbosity.predicate],
            )
            for observer in observers:
                self.publisher.removeObserver(observer)
            self.publisher.addObserver(json)
            self._wrapped = [(observer, json) for observer in observers]
            return
        for observer in observers:
            wrapper = FilteringLogObserver(observer, [self.verbosity.predicate])
            self.publisher.removeObserver(observer)
            self.publisher.addObserver(wrapper)
            self._wrapped.append((observer, wrapper))

    def stopService(self) -> None:
        """Put the observers back as they were (a JSON log stays JSON to its last line)."""
        super().stopService()
        if self.json_to is not None:
            return
        for observer, wrapper in self._wrapped:
            self.publisher.removeObserver(wrapper)
            self.publisher.addObserver(observer)
        self._wrapped = []


class TwistdService(MultiService):
    """``twistd gearman``'s service: the log filter, then the server.

    A :class:`StartupError` raised while starting (daemon mode) has been logged in one line
    already; twistd reports it to the parent, so the daemon leaves without a traceback.
    """

    def privilegedStartService(self) -> None:
        """Start the children's privileged parts (the server binds its endpoints)."""
        _quiet_on_startup_error(super().privilegedStartService)

    def startService(self) -> None:
        """Start the children."""
        _quiet_on_startup_error(super().startService)

    def stopService(self) -> Deferred[None]:
        """Stop the children one after the other, last first: the log filter once the server
        has closed everything."""
        Service.stopService(self)
        d: Deferred[Any] = succeed(None)
        for child in reversed(list(self)):
            d.addBoth(_then_stop, child)
        return d


def _quiet_on_startup_error(start: Callable[[], None]) -> None:
    """Call ``start``; if it raises :class:`StartupError` (logged already), let it through
    but keep its traceback out of the log as the process ends."""
    try:
        start()
    except StartupError:
        _no_traceback_for(StartupError)
        raise


def _then_stop(_: object, service: Any) -> Any:
    """Stop ``service`` (after the one before it has stopped, whatever its outcome)."""
    return service.stopService()


def _no_traceback_for(kind: type[BaseException]) -> None:
    """Leave an uncaught ``kind`` out of the log (it was logged already) as the process ends."""
    previous = sys.excepthook

    def hook(etype: type[BaseException], value: BaseException, tb: Any) -> None:
        if not issubclass(etype, kind):
            previous(etype, value, tb)

    sys.excepthook = hook


def _json_log(twistd: Any, foreground: bool) -> Callable[[], IO[str]]:
    """What opens the JSON log: where twistd's own log would go (``--logfile``, standard
    output in the foreground without one, else ``twistd.log``)."""
    path = twistd.get("logfile") if twistd is not None else None
    if path in (None, "-") and (foreground or path == "-"):
        return lambda: sys.__stdout__ or sys.stdout  # twistd points sys.stdout at the log
    return lambda: open(path or "twistd.log", "a", buffering=1, encoding="utf-8")  # noqa: SIM115


#: Allocations between young-generation collections in the server process (CPython: 700).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Make CPython's cyclic garbage collector run far less often in the server process.

    A queue of a million jobs is a million long-lived objects, and with the default
    thresholds the collector scans them again and again as new jobs arrive, which costs a
    large share of the server's throughput (``python benchmarks/run.py --scenarios S1,S4``
    with the thresholds reset to CPython's shows it). Jobs are freed by reference counting when they
    end (the core breaks its own cycles), so the collector has little to find; it still runs,
    just every 50,000 allocations instead of every 700. Only ``twistd gearman`` calls this,
    never the library.
    """
    import gc

    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()
