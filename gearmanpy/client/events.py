# -*- test-case-name: tests.test_client -*-
"""What a caller gets back from the client: progress events, job statuses and :class:`Job`.

A :class:`Job` is the caller's handle on one foreground job. The connection that carries it
(:mod:`gearmanpy.client.protocol`) and the :class:`~gearmanpy.client.Client` facade drive it
through the underscored members of its package-internal section (``_created``, ``_event``,
``_finish``, ``_forget``, ``_timer``, ``_timed_out``); they keep the underscore because
``Job`` itself is public. Nothing here knows about connections or servers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from typing import Any

import attrs
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from gearmanpy._connection import AsyncDeferred, awaitable
from gearmanpy.errors import JobLost, JobTimeout
from gearmanpy.protocol.text import show


@attrs.frozen
class WorkData:
    """A partial result (WORK_DATA) sent by the worker."""

    data: bytes


@attrs.frozen
class WorkWarning:
    """A warning (WORK_WARNING) sent by the worker."""

    data: bytes


@attrs.frozen
class WorkStatus:
    """A progress report (WORK_STATUS): ``numerator`` of ``denominator`` done."""

    numerator: int
    denominator: int


#: What iterating over a :class:`Job` yields.
JobEvent = WorkData | WorkWarning | WorkStatus


@attrs.frozen
class JobStatus:
    """The answer to :meth:`Client.get_status` or :meth:`Client.get_status_unique`.

    :ivar key: the handle (or unique key) that was asked about.
    :ivar known: whether the server knows the job (queued or running).
    :ivar running: whether a worker holds it.
    :ivar numerator: the last WORK_STATUS numerator (0 before any).
    :ivar denominator: the last WORK_STATUS denominator (0 before any).
    :ivar clients: for :meth:`Client.get_status_unique` only, how many foreground clients
        wait on the job; ``None`` for :meth:`Client.get_status`.
    """

    key: bytes
    known: bool
    running: bool
    numerator: int
    denominator: int
    clients: int | None = None


class Job:
    """A foreground job: its result, and the progress packets the worker sends meanwhile.

    * ``await job`` (or ``job.result``, a Deferred) gives the result bytes, or raises
      :class:`~gearmanpy.errors.JobFailed`, :class:`~gearmanpy.errors.JobException`,
      :class:`~gearmanpy.errors.JobTimeout`, :class:`~gearmanpy.errors.JobLost`,
      :class:`~gearmanpy.errors.RequestLost`, :class:`~gearmanpy.errors.ServerError` or
      :class:`~gearmanpy.errors.NoServersAvailable`.
    * ``async for event in job`` yields :class:`WorkData`, :class:`WorkWarning` and
      :class:`WorkStatus` in arrival order and ends when the job ends, however it ends (then
      ``await job`` for the outcome). Events are kept from submission on, so iterating
      late misses nothing.
    * :meth:`on_data`, :meth:`on_warning`, :meth:`on_status` register callbacks.
    * Cancelling ``job.result`` forgets the job (the server-side job is not stopped).
    """

    log = Logger()

    def __init__(self, function: bytes, data: bytes, unique: bytes) -> None:
        """Create a job not yet sent anywhere."""
        self.function = function
        self.data = data
        self.unique = unique
        #: The job handle once the server accepted the job, else ``None``.
        self.handle: bytes | None = None
        #: Fires with the result bytes, or fails (see the class docstring).
        self.result: Deferred[bytes] = AsyncDeferred(self._cancel)
        #: Called to forget the job wherever it is pending (set by the client).
        self._forget: Callable[[], None] = lambda: None
        self._timer: IDelayedCall | None = None
        self._done = False
        self._events: deque[JobEvent] = deque()
        self._waiters: deque[Deferred[JobEvent]] = deque()
        self._callbacks: dict[type, list[Callable[..., object]]] = {
            WorkData: [],
            WorkWarning: [],
            WorkStatus: [],
        }
        self._created_waiters: list[Deferred[bytes]] = []
        self._outcome_failure: Failure | None = None

    def __repr__(self) -> str:
        """Name the function and handle, for logs."""
        return f"<Job {show(self.function)} handle={show(self.handle)} done={self._done}>"

    @property
    def done(self) -> bool:
        """Whether the job has ended (its result Deferred has fired)."""
        return self._done

    def __await__(self) -> Generator[Any, None, bytes]:
        """``await job`` waits for the result, in a coroutine Twisted or asyncio runs."""
        return awaitable(self.result).__await__()

    def on_data(self, callback: Callable[[bytes], object]) -> Job:
        """Call ``callback(data)`` for each WORK_DATA; return the job (for chaining)."""
        self._callbacks[WorkData].append(lambda e: callback(e.data))
        return self

    def on_warning(self, callback: Callable[[bytes], object]) -> Job:
        """Call ``callback(data)`` for each WORK_WARNING; return the job."""
        self._callbacks[WorkWarning].append(lambda e: callback(e.data))
        return self

    def on_status(self, callback: Callable[[int, int], object]) -> Job:
        """Call ``callback(numerator, denominator)`` for each WORK_STATUS; return the job."""
        self._callbacks[WorkStatus].append(lambda e: callback(e.numerator, e.denominator))
        return self

    def when_created(self) -> Deferred[bytes]:
        """Return a Deferred that fires with the handle once the server accepted the job.

        It fails like :attr:`result` if the job ends before that.
        """
        if self.handle is not None:
            return awaitable(succeed(self.handle))
        if self._done:
            return awaitable(
                fail(self._outcome_failure or JobLost("the job ended without a handle"))
            )
        d: Deferred[bytes] = AsyncDeferred()
        self._created_waiters.append(d)
        return d

    def __aiter__(self) -> Job:
        """``async for event in job``."""
        return self

    def __anext__(self) -> Deferred[JobEvent]:
        """Return a Deferred for the next event; it fails with StopAsyncIteration at the end."""
        if self._events:
            return awaitable(succeed(self._events.popleft()))
        if self._done:
            return awaitable(fail(StopAsyncIteration()))
        d: Deferred[JobEvent] = AsyncDeferred()
        self._waiters.append(d)
        return d

    # -- package-internal: called by the connection and the client ---------------------

    def _created(self, handle: bytes) -> None:
        """The server accepted the job under ``handle``."""
        self.handle = handle
        waiters, self._created_waiters = self._created_waiters, []
        for d in waiters:
            d.callback(handle)

    def _event(self, event: JobEvent) -> None:
        """Deliver one progress event to the callbacks and the iterator."""
        if self._done:
            return
        for callback in self._callbacks[type(event)]:
            try:
                callback(event)
            except Exception:
                self.log.failure("Error in a {job} event callback", job=self)
        if self._waiters:
            self._waiters.popleft().callback(event)
        else:
            self._events.append(event)

    def _finish(self, outcome: bytes | Failure) -> None:
        """End the job: fire :attr:`result` once, end the iterator, drop timers."""
        if self._done:
            return
        self._done = True
        if isinstance(outcome, Failure):
            self._outcome_failure = outcome
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        waiters, self._waiters = self._waiters, deque()
        for d in waiters:
            d.errback(StopAsyncIteration())
        created, self._created_waiters = self._created_waiters, []
        for waiter in created:
            waiter.errback(
                outcome if isinstance(outcome, Failure) else Failure(JobLost("no handle"))
            )
        if isinstance(outcome, Failure):
            self.result.errback(outcome)
        else:
            self.result.callback(outcome)

    def _cancel(self, _d: Deferred[bytes]) -> None:
        """The caller cancelled :attr:`result`: forget the job everywhere."""
        self._forget()
        self._finish(Failure(CancelledError()))

    def _timed_out(self, timeout: float) -> None:
        """The per-call timeout expired: forget the job and fail it."""
        self._timer = None
        self._forget()
        self._finish(Failure(JobTimeout(f"job {show(self.function)} did not finish in {timeout}s")))


__all__ = ["Job", "JobEvent", "JobStatus", "WorkData", "WorkStatus", "WorkWarning"]
