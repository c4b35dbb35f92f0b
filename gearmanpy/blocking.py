# -*- test-case-name: tests.test_blocking -*-
"""A blocking Gearman client, for code that has no reactor: Django or Flask views, scripts,
notebooks.

::

    from gearmanpy.blocking import Client

    with Client(["127.0.0.1:4730"], timeout=30) as client:
        print(client.submit("reverse", b"hello"))          # b"olleh"
        handle = client.submit_background("resize", b"photo.jpg")

Each method waits for its answer and returns it, or raises what the Deferred
:class:`gearmanpy.Client` fails with (:class:`~gearmanpy.errors.JobFailed`,
:class:`~gearmanpy.errors.JobException`, :class:`~gearmanpy.errors.JobTimeout`,
:class:`~gearmanpy.errors.NoServersAvailable`...). The Deferred client does the work: it
runs on Twisted's global reactor, which the first blocking client starts in a daemon
thread (or uses, if another thread already runs it). Every call is handed to that thread,
so one blocking client may be used from many threads at once.

Use it when the calling code blocks anyway. Code that already runs a reactor or an asyncio
loop should use the Deferred :class:`gearmanpy.Client` directly: calling this one from the
reactor thread would wait for ever on itself, so it raises ``RuntimeError`` instead.
"""

from __future__ import annotations

import atexit
import datetime
import threading
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from gearmanpy._connection import DEFAULT_CONNECT_TIMEOUT, ClientTLS, ServerSpec, resolve_reactor
from gearmanpy.client import Client as DeferredClient
from gearmanpy.client import JobStatus
from gearmanpy.errors import JobTimeout
from gearmanpy.protocol.packets import Priority

#: Seconds a call waits beyond its own timeout before giving up on the reactor thread.
MARGIN = 5.0

_DEFAULT: Any = object()


class ReactorThread:
    """The global reactor, run in a daemon thread started once per process."""

    _lock = threading.Lock()
    _thread: threading.Thread | None = None

    @classmethod
    def reactor(cls) -> Any:
        """The running reactor, started in its thread on first use."""
        reactor = resolve_reactor(None)
        with cls._lock:
            if reactor.running or (cls._thread is not None and cls._thread.is_alive()):
                return reactor
            started = threading.Event()
            reactor.callWhenRunning(started.set)
            cls._thread = threading.Thread(
                target=reactor.run,
                kwargs={"installSignalHandlers": False},
                name="gearmanpy-reactor",
                daemon=True,
            )
            cls._thread.start()
            atexit.register(cls._stop, reactor)
        if not started.wait(30):
            raise RuntimeError("the Twisted reactor did not start")
        return reactor

    @classmethod
    def _stop(cls, reactor: Any) -> None:
        """At exit: stop the reactor so its thread closes the connections."""
        thread = cls._thread
        if thread is None or not thread.is_alive():
            return
        reactor.callFromThread(reactor.stop)
        thread.join(5)

    @classmethod
    def in_reactor_thread(cls) -> bool:
        """Whether the caller is the thread that runs the reactor."""
        from twisted.python import threadable

        return bool(threadable.isInIOThread())

    @classmethod
    def call(cls, function: Callable[..., Any], *args: Any, wait: float | None = None) -> Any:
        """Run ``function(*args)`` in the reactor thread and return its (Deferred's) result.

        :param wait: seconds to wait at most (``None``: for ever); then the Deferred is
            cancelled and :class:`~gearmanpy.errors.JobTimeout` raised.
        :raises RuntimeError: when called from the reactor thread (it would wait on itself).
        """
        reactor = cls.reactor()
        if cls.in_reactor_thread():
            raise RuntimeError(
                "gearmanpy.blocking called from the reactor thread: use gearmanpy.Client"
            )
        done = threading.Event()
        outcome: list[Any] = []
        pending: list[Deferred[Any]] = []

        def start() -> None:
            d = maybeDeferred(function, *args)
            pending.append(d)
            d.addBoth(finish)

        def finish(result: object) -> None:
            outcome.append(result)
            done.set()

        reactor.callFromThread(start)
        if not done.wait(wait):
            reactor.callFromThread(_cancel_all, pending)
            done.wait(MARGIN)
            if not outcome or isinstance(outcome[0], Failure):
                raise JobTimeout(f"no answer from the reactor thread in {wait}s")
        result = outcome[0]
        if isinstance(result, Failure):
            result.raiseException()
        return result


def _cancel_all(pending: list[Deferred[Any]]) -> None:
    """Cancel the Deferreds of calls given up on (in the reactor thread)."""
    for d in pending:
        d.cancel()


class Client:
    """A Gearman client whose methods block until the answer comes.

    :param servers: as for :class:`gearmanpy.Client` (``"host:port"``, endpoint strings).
    :param timeout: default seconds a call may take (``None``: wait for ever).
    :param client_id: sent as SET_CLIENT_ID on each connection.
    :param connect_timeout: seconds a connection attempt may take.
    :param tls: TLS to the ``host:port`` servers (:class:`~gearmanpy.ClientTLS`), verified.
    """

    def __init__(
        self,
        servers: Sequence[ServerSpec] | ServerSpec,
        *,
        timeout: float | None = 60.0,
        client_id: str | bytes | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        tls: ClientTLS | None = None,
    ) -> None:
        """Start the reactor thread if needed and make the Deferred client in it."""
        self.timeout = timeout
        self._closed = False
        self._client: DeferredClient = ReactorThread.call(
            lambda: DeferredClient(
                servers,
                timeout=timeout,
                client_id=client_id,
                connect_timeout=connect_timeout,
                tls=tls,
            )
        )

    def _call(self, timeout: float | None, method: Callable[..., Any], *args: Any) -> Any:
        """Call a method of the Deferred client in the reactor thread and wait for it."""
        if self._closed:
            raise RuntimeError("the blocking client is closed")
        limit = self.timeout if timeout is _DEFAULT else timeout
        return ReactorThread.call(method, *args, wait=None if limit is None else limit + MARGIN)

    def submit(
        self,
        function: str | bytes,
        data: str | bytes = b"",
        *,
        unique: str | bytes | None = None,
        priority: Priority = Priority.NORMAL,
        timeout: float | None = _DEFAULT,
    ) -> bytes:
        """Run a foreground job and return its result (see :meth:`gearmanpy.Client.submit`).

        :raises JobFailed, JobException, JobTimeout, JobLost, NoServersAvailable: as the
            Deferred client's ``job.result`` fails.
        """
        limit = self.timeout if timeout is _DEFAULT else timeout

        def submit() -> Deferred[bytes]:
            return self._client.submit(
                function, data, unique=unique, priority=priority, timeout=limit
            ).result

        return bytes(self._call(timeout, submit))

    def submit_background(
        self,
        function: str | bytes,
        data: str | bytes = b"",
        *,
        unique: str | bytes | None = None,
        priority: Priority = Priority.NORMAL,
        timeout: float | None = _DEFAULT,
    ) -> bytes:
        """Submit a background job and return its handle once the server accepted it."""
        limit = self.timeout if timeout is _DEFAULT else timeout
        return bytes(
            self._call(
                timeout,
                lambda: self._client.submit_background(
                    function, data, unique=unique, priority=priority, timeout=limit
                ),
            )
        )

    def submit_at(
        self,
        when: float | datetime.datetime,
        function: str | bytes,
        data: str | bytes = b"",
        *,
        unique: str | bytes | None = None,
        timeout: float | None = _DEFAULT,
    ) -> bytes:
        """Submit a background job to run at ``when`` (SUBMIT_JOB_EPOCH); return its handle."""
        limit = self.timeout if timeout is _DEFAULT else timeout
        return bytes(
            self._call(
                timeout,
                lambda: self._client.submit_at(when, function, data, unique=unique, timeout=limit),
            )
        )

    def get_status(self, handle: str | bytes, *, timeout: float | None = _DEFAULT) -> JobStatus:
        """Ask every server for a job's status by handle (GET_STATUS)."""
        limit = self.timeout if timeout is _DEFAULT else timeout
        status: JobStatus = self._call(
            timeout, lambda: self._client.get_status(handle, timeout=limit)
        )
        return status

    def get_status_unique(
        self, unique: str | bytes, *, timeout: float | None = _DEFAULT
    ) -> JobStatus:
        """Ask for a job's status by unique key (GET_STATUS_UNIQUE)."""
        limit = self.timeout if timeout is _DEFAULT else timeout
        status: JobStatus = self._call(
            timeout, lambda: self._client.get_status_unique(unique, timeout=limit)
        )
        return status

    def close(self) -> None:
        """Close the connections (idempotent); calls made afterwards raise RuntimeError."""
        if self._closed:
            return
        self._closed = True
        ReactorThread.call(self._client.stop, wait=30)

    def __enter__(self) -> Client:
        """``with Client(...) as client:`` closes it at the end of the block."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the client."""
        self.close()


__all__ = ["Client", "ReactorThread"]
