# -*- test-case-name: tests.test_store -*-
"""Group commit for the stores: one writer, many queued operations, one commit per batch.

Two pieces are shared by the backends:

* :class:`Deadlines` fails every store Deferred that has not fired within a bounded time, so
  a store whose database hangs or is down never makes the server wait forever.
* :class:`ThreadedBatchWriter` runs a blocking database backend (SQLite, PostgreSQL) on one
  dedicated thread. Operations queued from the reactor thread while a commit is in flight all
  go into the next transaction, so the commit rate (bounded by disk syncs) no longer bounds
  the job rate. Results are handed back to the reactor thread with one ``callFromThread`` per
  batch.

Every write op goes into the same ordered batches, so an add, a reschedule and a bury of one
job commit in that order. :meth:`IJobStore.claim_tick` is a write op too, although it answers:
the backend returns one result per op and the writer fires each op's Deferred with its own.
That keeps a claimed tick in the same transaction as the job it adds, in order with the writes
around it and in the same group commit, instead of costing a commit of its own.
"""

from __future__ import annotations

import collections
import queue
import threading
from typing import Any, ClassVar, Protocol

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from gearmanpy.errors import StoreError
from gearmanpy.store.interface import DeadJob, KeptResult, StoredJob

#: How long an operation may wait for its commit before it fails with StoreError.
DEFAULT_TIMEOUT = 10.0

#: The ops (operation names) a batch of writes may carry; the writer applies them in order of
#: arrival. ``open``, ``replay``, ``dead``, ``results``, ``next_boot`` and ``close`` are the
#: control ops, run on their own.
ADD = "add"
DONE = "done"
RETRIES = "retries"
RESCHEDULE = "reschedule"
BURY = "bury"
UNBURY = "unbury"
DROP_DEAD = "drop_dead"
KEEP_RESULT = "keep_result"
DROP_RESULTS = "drop_results"
#: The one write op that answers (True if it claimed the tick); it goes into the batch like
#: the others, so its tick commits with its job and in order with the writes around it.
CLAIM = "claim_tick"
WRITES = frozenset(
    {ADD, DONE, RETRIES, RESCHEDULE, BURY, UNBURY, DROP_DEAD, KEEP_RESULT, DROP_RESULTS, CLAIM}
)

#: At most this many operations go into one transaction.
MAX_BATCH = 50_000


class Deadlines:
    """Fail Deferreds that have not fired ``timeout`` seconds after they were tracked.

    Store results arrive in the order operations were queued, so a FIFO suffices and a single
    periodic check replaces one timer per job. A timed-out operation may still reach the
    database afterwards (the writer leaves out those that timed out before it started their
    batch, but cannot recall one already sent), so a job refused this way can still run after
    a restart: at least once, never lost.
    """

    def __init__(self, clock: IReactorTime, timeout: float, what: str) -> None:
        self._clock = clock
        self._timeout = timeout
        self._what = what
        self._pending: collections.deque[tuple[float, Deferred[Any]]] = collections.deque()
        self._loop: LoopingCall | None = None

    def start(self) -> None:
        """Begin checking, about four times per timeout (at most once a second)."""
        if self._loop is None:
            self._loop = LoopingCall(self.check)
            self._loop.clock = self._clock
            self._loop.start(min(1.0, self._timeout / 4), now=False)

    def stop(self) -> None:
        """Stop checking (the store is closed)."""
        if self._loop is not None:
            self._loop.stop()
            self._loop = None

    def track(self, d: Deferred[Any]) -> Deferred[Any]:
        """Fail ``d`` with :class:`StoreError` unless it fires within the timeout."""
        self._pending.append((self._clock.seconds() + self._timeout, d))
        return d

    def check(self) -> None:
        """Fail every tracked Deferred past its deadline; forget those that have fired."""
        now = self._clock.seconds()
        pending = self._pending
        while pending:
            deadline, d = pending[0]
            if d.called:
                pending.popleft()
            elif deadline <= now:
                pending.popleft()
                d.errback(
                    Failure(StoreError(f"{self._what} did not answer within {self._timeout}s"))
                )
            else:
                break


class BlockingBackend(Protocol):
    """What a database backend does on the writer thread; every method may block."""

    def open(self) -> None:
        """Connect and create the schema."""

    def write(self, ops: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Apply ``ops`` (an op and the arguments of the store method of that name, such as
        ``(ADD, (job,))`` or ``(CLAIM, (name, tick, job))``) in order in one durable
        transaction, or raise and apply none of them; return each op's result (None but for
        CLAIM's bool), in order."""

    def replay(self) -> list[StoredJob]:
        """Read every stored job in insertion order."""

    def dead(self) -> list[DeadJob]:
        """Read every dead job, oldest failure first."""

    def results(self) -> list[KeptResult]:
        """Read every kept result in the order they were kept."""

    def next_boot(self) -> int:
        """Count one more boot, commit, and return the count."""

    def close(self) -> None:
        """Release the connection."""


def settle(ds: list[Deferred[Any]], result: Any, error: BaseException | None) -> None:
    """Fire each of ``ds`` with ``result``, or fail it with ``error`` if that is not None;
    leave out those that have fired already (they timed out)."""
    for d in ds:
        if not d.called:
            if error is None:
                d.callback(result)
            else:
                d.errback(Failure(error))


def settle_each(ds: list[Deferred[Any]], results: list[Any], error: BaseException | None) -> None:
    """Fire each of ``ds`` with its own item of ``results``, or all with ``error`` as
    :func:`settle` does."""
    if error is not None:
        settle(ds, None, error)
        return
    for d, result in zip(ds, results, strict=True):
        if not d.called:
            d.callback(result)


#: A queued operation: its op, its arguments, and the Deferred its caller holds.
_Item = tuple[str, tuple[Any, ...], Deferred[Any]]


class ThreadedBatchWriter:
    """Run a :class:`BlockingBackend` on one dedicated thread with group commit.

    The reactor thread only appends to a queue. The writer thread takes everything queued,
    applies the writes in one transaction, and then fires their Deferreds on the reactor
    thread. Control operations (open, replay, close) run alone, in order with the writes.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        backend: BlockingBackend,
        name: str,
        timeout: float = DEFAULT_TIMEOUT,
        writes: frozenset[str] = WRITES,
    ) -> None:
        self._reactor: IReactorFromThreads = reactor
        #: The ops that go into batches (a backend with ops of its own adds them).
        self._writes = writes
        self._backend = backend
        self._name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._deadlines = Deadlines(reactor, timeout, name)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._close_waiters: list[Deferred[None]] | None = None

    def submit(self, op: str, *args: Any) -> Deferred[Any]:
        """Queue one operation; the Deferred fires on the reactor thread with its result."""
        if self._closed:
            return fail(StoreError(f"{self._name} is closed"))
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"gearmanpy-{self._name}-writer", daemon=True
            )
            self._thread.start()
            self._deadlines.start()
        d: Deferred[Any] = Deferred()
        self._queue.put((op, args, d))
        return self._deadlines.track(d)

    def close(self) -> Deferred[None]:
        """Let queued writes finish, close the backend, and stop the thread.

        Closing again is harmless: it fires when the first close has finished.
        """
        if self._closed:
            waiter: Deferred[None] = Deferred()
            if self._close_waiters is None:
                waiter.callback(None)
            else:
                self._close_waiters.append(waiter)
            return waiter
        if self._thread is None:
            self._closed = True
            return succeed(None)
        d = self.submit("close")
        self._closed = True
        self._close_waiters = []

        def stopped(result: Any) -> Any:
            self._deadlines.stop()
            waiters, self._close_waiters = self._close_waiters or [], None
            for waiter in waiters:
                waiter.callback(None)
            return result

        return d.addBoth(stopped)

    # Everything below runs on the writer thread, except _fire.

    def _run(self) -> None:
        """The writer thread: take all queued items, run them, hand results back."""
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        batched = self._writes
        while True:
            items: list[_Item] = []
            item = get()
            while item is not None:
                items.append(item)
                if len(items) >= MAX_BATCH:
                    break
                try:
                    item = get_nowait()
                except queue.Empty:
                    item = None
            writes: list[_Item] = []
            for item in items:
                op = item[0]
                if op in batched:
                    writes.append(item)
                    continue
                if writes:
                    self._flush(writes)
                    writes = []
                self._control(item)
                if op == "close":
                    return
            if writes:
                self._flush(writes)

    def _flush(self, writes: list[_Item]) -> None:
        """Apply ``writes`` in one transaction and report the outcome to all of them."""
        # Leave out operations that already timed out: the server refused those jobs. (Reading
        # ``called`` across threads is safe; a timeout that races with this check is allowed
        # for, see Deadlines.)
        writes = [item for item in writes if not item[2].called]
        if not writes:
            return
        failure: Exception | None = None
        results: list[Any] = []
        try:
            results = self._backend.write([(op, args) for op, args, _ in writes])
            if len(results) != len(writes):
                raise StoreError(f"{len(results)} answers for {len(writes)} writes")
        except Exception as e:
            failure = e
        self._reactor.callFromThread(self._fire, [d for _, _, d in writes], results, failure, True)

    def _control(self, item: _Item) -> None:
        """Run open, replay, dead, results, next_boot or close on its own."""
        op, _, d = item
        result: Any = None
        failure: Exception | None = None
        try:
            result = getattr(self._backend, op)()
        except Exception as e:
            failure = e
        self._reactor.callFromThread(self._fire, [d], result, failure)

    def _fire(
        self, ds: list[Deferred[Any]], result: Any, failure: Exception | None, each: bool = False
    ) -> None:
        """On the reactor thread: fire the Deferreds of one batch (skip timed-out ones), with
        ``result``, or with one item of it each if ``each``."""
        error = failure
        if failure is not None and not isinstance(failure, StoreError):
            # Said once per outage by the server (or at start-up); here only when debugging.
            self.log.debug("{store} operation failed: {error!r}", store=self._name, error=failure)
            error = StoreError(f"{self._name}: {failure}")
            error.__cause__ = failure
        if each:
            settle_each(ds, result, error)
        else:
            settle(ds, result, error)


@attrs.define(eq=False)
class ThreadedStore:
    """The :class:`~gearmanpy.store.interface.IJobStore` methods of a store whose database work
    runs on a :class:`ThreadedBatchWriter` (SQLite, PostgreSQL).

    A subclass names itself in :attr:`_name`, builds its backend in :meth:`_backend`, and
    declares its own first field (the database) before ``reactor``, so that both stay
    positional: ``Store(database, reactor, table=..., timeout=...)``.

    :ivar reactor: provides ``IReactorTime`` and ``IReactorFromThreads``.
    :ivar table: the table name (a trusted identifier, not user input).
    :ivar timeout: seconds an operation may wait before it fails with StoreError.
    """

    reactor: Any
    table: str = attrs.field(default="gearmanpy_queue", kw_only=True)
    timeout: float = attrs.field(default=DEFAULT_TIMEOUT, kw_only=True)
    _writer: ThreadedBatchWriter = attrs.field(init=False)

    #: The store's name in the writer thread's name, log lines and errors.
    _name: ClassVar[str]
    #: The ops its writer batches (the cluster's store adds its own).
    _writes: ClassVar[frozenset[str]] = WRITES

    def __attrs_post_init__(self) -> None:
        """Build the writer; its thread starts with :meth:`open`."""
        if not self.table.isidentifier():
            raise ValueError(f"bad table name {self.table!r}")
        self._writer = ThreadedBatchWriter(
            self.reactor, self._backend(), self._name, self.timeout, self._writes
        )

    def _backend(self) -> BlockingBackend:
        """The blocking backend the writer thread drives."""
        raise NotImplementedError()

    def open(self) -> Deferred[None]:
        """Connect and create the schema on the writer thread."""
        return self._writer.submit("open")

    def add(self, job: StoredJob) -> Deferred[None]:
        """Persist ``job``; fires after the commit that holds it."""
        return self._writer.submit(ADD, job)

    def done(self, key: str) -> Deferred[None]:
        """Delete the job under ``key``."""
        return self._writer.submit(DONE, key)

    def set_retries(self, key: str, retries: int) -> Deferred[None]:
        """Record the requeue count of the job under ``key``."""
        return self._writer.submit(RETRIES, key, retries)

    def replay(self) -> Deferred[list[StoredJob]]:
        """Every stored job in insertion order (read after all writes queued before it)."""
        return self._writer.submit("replay")

    def next_boot(self) -> Deferred[int]:
        """A boot number larger than any before, committed (run in order with the writes)."""
        return self._writer.submit("next_boot")

    def reschedule(self, key: str, when: int, retries: int, error: bytes) -> Deferred[None]:
        """Record that the job under ``key`` waits for a retry from ``when``."""
        return self._writer.submit(RESCHEDULE, key, when, retries, error)

    def bury(self, dead: DeadJob) -> Deferred[None]:
        """Move the job ``dead.job.key`` from the queue to the dead set, in one transaction."""
        return self._writer.submit(BURY, dead)

    def unbury(self, key: str, job: StoredJob) -> Deferred[None]:
        """Forget the dead row ``key`` and queue ``job``, in one transaction."""
        return self._writer.submit(UNBURY, key, job)

    def drop_dead(self, keys: list[str]) -> Deferred[None]:
        """Forget the dead rows under ``keys``."""
        return self._writer.submit(DROP_DEAD, list(keys))

    def dead(self) -> Deferred[list[DeadJob]]:
        """Every dead job, oldest failure first (read after the writes queued before it)."""
        return self._writer.submit("dead")

    def keep_result(self, key: str | None, result: KeptResult) -> Deferred[None]:
        """Forget the queued row ``key`` (if any) and keep ``result``, in one transaction."""
        return self._writer.submit(KEEP_RESULT, key, result)

    def drop_results(self, handles: list[bytes]) -> Deferred[None]:
        """Forget the results kept for ``handles``."""
        return self._writer.submit(DROP_RESULTS, list(handles))

    def results(self) -> Deferred[list[KeptResult]]:
        """Every kept result in the order they were kept."""
        return self._writer.submit("results")

    def claim_tick(self, name: str, tick: int, job: StoredJob) -> Deferred[bool]:
        """Record ``tick`` for ``name`` and queue ``job`` unless that tick was claimed."""
        return self._writer.submit(CLAIM, name, tick, job)

    def close(self) -> Deferred[None]:
        """Finish queued writes, release the database, stop the writer thread."""
        return self._writer.close()
