# -*- test-case-name: tests.test_store -*-
"""A store in Redis: ``--queue redis://[:password@]host:port/db``.

Layout (``prefix`` defaults to ``gearmanpy:``): one hash per job, ``<prefix>job:<key>``, with
the binary-safe fields ``function``, ``unique``, ``priority``, ``data``, ``when``, ``retries``,
``reducer`` and ``handle`` (missing in hashes written before gearmanpy kept handles: such a job
gets a new handle at replay); a sorted set ``<prefix>order`` whose members are job keys scored
by an insertion counter (``<prefix>seq``), which gives replay its insertion order; and the
boot counter ``<prefix>boot`` (``INCR``, atomic for servers sharing Redis). Jobs are keyed by
the server's job key, never by (function, unique), so none of gearmand's redis replay bugs
apply: ``-`` in function names, NULs in data, empty or repeated uniques and epoch jobs all
round-trip exactly.

The failure policy's state: one hash per dead job, ``<prefix>dead:<key>`` (a job's fields plus
``last_error`` and ``failed_at``) in the sorted set ``<prefix>deadorder``; one hash per kept
result, ``<prefix>result:<handle>``, in ``<prefix>results``; and one hash per recurring job,
``<prefix>tick:<name>`` (``tick`` and the ``key`` of the job that claimed it). Times are kept
as the shortest decimal that reads back as the same float. A store of an older gearmanpy
simply has none of these keys, and job hashes without ``submitted`` or ``error`` read as 0 and
empty.

Group commit: everything queued while a write is in flight goes into the next one, sent as a
single ``EVAL`` of a Lua script (:data:`gearmanpy.store._redis_lua.WRITE`); the script also
moves a job between the queue and the dead set, keeps a result, and claims a tick (checking
and recording it with its job), so each of those is atomic too, and a claim is safe for
servers sharing Redis (scripts run one at a time). A script runs atomically, like
``MULTI``/``EXEC``, but costs one command and one reply per batch instead of two per job,
which matters because the client library spends far more CPU per command than Redis does.
The scripts touch keys they do not declare, so Redis Cluster is not supported.

**Durability depends on how redis-server is configured** (the store logs a warning at open
when it can read the configuration and it is weaker than ``appendfsync always``):

* ``appendonly yes`` + ``appendfsync always``: Redis writes and fsyncs the AOF before it
  answers the write, so :meth:`RedisJobStore.add` fires only once the job is on disk. An
  acknowledged job survives a crash of redis-server, of the OS and a power loss.
* ``appendonly yes`` + ``appendfsync everysec`` (Redis' default AOF policy): the AOF is written
  before the answer but synced about once a second. Acknowledged jobs survive a crash of
  redis-server alone, but an OS crash or power loss can lose the last second or two of them.
* No AOF (RDB snapshots only, or no persistence at all): jobs acknowledged since the last
  snapshot (or all of them) are lost whenever redis-server stops, crashes or restarts.

While Redis is unreachable the client reconnects in the background (backoff capped at one
second) and operations fail with :class:`gearmanpy.errors.StoreError` after the store's
timeout. A write is sent only once a connection is up, and operations that timed out in the
meantime are left out of it; but a write that reached Redis and then timed out may still have
been applied, so such a job can run again after a restart (at least once, never lost).

Client: txredisapi (Twisted-native, binary-safe with ``charset=None``). It uses the global
reactor internally, so it is imported only when a Redis store is opened.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gearmanpy.errors import StoreError
from gearmanpy.store._redis_lua import (
    DEAD_FIELDS,
    JOB_FIELDS,
    READ,
    RESULT_FIELDS,
    WRITE,
    decode_key,
    pack,
)
from gearmanpy.store._rows import by_failure, dead_from_row, job_from_row, result_from_row
from gearmanpy.store._writer import (
    ADD,
    BURY,
    CLAIM,
    DEFAULT_TIMEOUT,
    DONE,
    DROP_DEAD,
    DROP_RESULTS,
    KEEP_RESULT,
    RESCHEDULE,
    RETRIES,
    UNBURY,
    Deadlines,
    settle,
)
from gearmanpy.store.interface import DeadJob, IJobStore, KeptResult, StoredJob

#: Jobs read per replay round trip.
_PAGE = 1000

#: At most this many operations go into one EVAL.
_MAX_BATCH = 20_000


@implementer(IJobStore)
@attrs.define(eq=False)
class RedisJobStore:
    """Background jobs in Redis, one hash per job plus a sorted set for insertion order.

    :ivar host: the Redis host.
    :ivar port: the Redis port.
    :ivar reactor: provides ``IReactorTime`` (for timeouts and batching).
    :ivar db: the database number.
    :ivar password: the password, if the server wants one.
    :ivar prefix: prepended to every key this store uses.
    :ivar timeout: seconds an operation may wait before it fails with StoreError.
    """

    host: str
    port: int
    reactor: Any
    db: int = 0
    password: str | None = None
    prefix: bytes = b"gearmanpy:"
    timeout: float = DEFAULT_TIMEOUT

    log = Logger()

    _conn: Any = None
    _pending: list[tuple[str, tuple[Any, ...], Deferred[Any]]] = attrs.field(factory=list)
    _in_flight: bool = False
    _scheduled: Any = None
    _closed: bool = False
    _deadlines: Deadlines | None = None
    _idle_waiters: list[Deferred[None]] = attrs.field(factory=list)

    @inlineCallbacks
    def open(self) -> Any:
        """Connect (fails with StoreError within the timeout) and check persistence settings."""
        import txredisapi

        self._deadlines = Deadlines(self.reactor, self.timeout, "redis")
        self._deadlines.start()
        conn = txredisapi.lazyConnection(
            self.host,
            self.port,
            dbid=self.db,
            reconnect=True,
            charset=None,
            password=self.password,
            connectTimeout=min(5.0, self.timeout / 2),
            convertNumbers=False,
        )
        # Reconnect quickly after a Redis restart (the defaults back off to 10 s).
        conn._factory.initialDelay = 0.2
        conn._factory.maxDelay = 1
        self._conn = conn
        try:
            yield self._ping()
        except Exception as e:
            yield self.close()  # stop reconnecting in the background
            raise StoreError(f"cannot reach Redis at {self.host}:{self.port}: {e}") from e
        try:
            reply = yield self._bounded(conn.execute_command("CONFIG", "GET", "append*"))
        except Exception as e:  # CONFIG may be renamed away on managed servers
            self.log.warn("cannot read the Redis persistence settings: {error}", error=e)
        else:
            settings = _pairs(reply)
            if settings.get(b"appendonly") != b"yes" or settings.get(b"appendfsync") != b"always":
                self.log.warn(
                    "Redis runs with appendonly={appendonly} appendfsync={appendfsync}:"
                    " acknowledged jobs can be lost (use appendonly yes, appendfsync always)",
                    appendonly=settings.get(b"appendonly"),
                    appendfsync=settings.get(b"appendfsync"),
                )

    @inlineCallbacks
    def _ping(self) -> Any:
        """PING until Redis answers, waiting while it is still loading its data set."""
        deadline = self.reactor.seconds() + self.timeout
        while True:
            try:
                yield self._bounded(self._conn.execute_command("PING"))
                return
            except Exception as e:
                if not str(e).startswith("LOADING") or self.reactor.seconds() > deadline:
                    raise
            pause: Deferred[None] = Deferred()
            self.reactor.callLater(0.05, pause.callback, None)
            yield pause

    def _bounded(self, d: Deferred[Any]) -> Deferred[Any]:
        """A Deferred that fires like ``d``, or fails with StoreError after the timeout.

        ``d`` itself is never fired from outside (txredisapi and ``inlineCallbacks`` own it);
        a late result is dropped.
        """
        assert self._deadlines is not None
        outer: Deferred[Any] = Deferred()

        def relay(result: Any) -> None:
            if outer.called:
                return None
            if isinstance(result, Failure):
                outer.errback(result)
            else:
                outer.callback(result)
            return None

        d.addBoth(relay)
        return self._deadlines.track(outer)

    def _submit(self, op: str, *args: Any) -> Deferred[Any]:
        """Queue a write for the next batch."""
        if self._closed or self._conn is None:
            return fail(StoreError("the Redis store is not open"))
        d: Deferred[Any] = Deferred()
        self._pending.append((op, args, d))
        if not self._in_flight and self._scheduled is None:
            self._scheduled = self.reactor.callLater(0, self._flush)
        assert self._deadlines is not None
        return self._deadlines.track(d)

    def add(self, job: StoredJob) -> Deferred[None]:
        """Persist ``job``; fires once Redis has answered the write (see the durability note)."""
        return self._submit(ADD, job)

    def done(self, key: str) -> Deferred[None]:
        """Delete the job under ``key``."""
        return self._submit(DONE, key)

    def set_retries(self, key: str, retries: int) -> Deferred[None]:
        """Record the requeue count of the job under ``key``, if it is still stored."""
        return self._submit(RETRIES, key, retries)

    def reschedule(self, key: str, when: int, retries: int, error: bytes) -> Deferred[None]:
        """Record that the job under ``key`` waits for a retry from ``when``, if still stored."""
        return self._submit(RESCHEDULE, key, when, retries, error)

    def bury(self, dead: DeadJob) -> Deferred[None]:
        """Move the job ``dead.job.key`` from the queue to the dead set, atomically."""
        return self._submit(BURY, dead)

    def unbury(self, key: str, job: StoredJob) -> Deferred[None]:
        """Forget the dead job ``key`` and queue ``job``, atomically."""
        return self._submit(UNBURY, key, job)

    def drop_dead(self, keys: list[str]) -> Deferred[None]:
        """Forget the dead jobs under ``keys``."""
        return self._submit(DROP_DEAD, list(keys))

    def keep_result(self, key: str | None, result: KeptResult) -> Deferred[None]:
        """Forget the queued job ``key`` (if any) and keep ``result``, atomically."""
        return self._submit(KEEP_RESULT, key, result)

    def drop_results(self, handles: list[bytes]) -> Deferred[None]:
        """Forget the results kept for ``handles``."""
        return self._submit(DROP_RESULTS, list(handles))

    def claim_tick(self, name: str, tick: int, job: StoredJob) -> Deferred[bool]:
        """Record ``tick`` for ``name`` and queue ``job`` unless that tick was claimed."""
        return self._submit(CLAIM, name, tick, job)

    def _flush(self) -> None:
        """Send what is queued as one atomic write; later writes wait for the next one."""
        self._scheduled = None
        if self._in_flight or not self._pending:
            return
        batch = self._pending[:_MAX_BATCH]
        del self._pending[:_MAX_BATCH]
        self._in_flight = True
        d = self._bounded(self._write(batch))

        def finished(result: Any) -> None:
            self._in_flight = False
            if isinstance(result, Failure):
                error = result.value
                if not isinstance(error, StoreError):
                    error = StoreError(f"Redis write failed: {error}")
                settle([d for _, _, d in batch], None, error)
            else:
                for d, answer in result:
                    if not d.called:
                        d.callback(answer)
            if self._pending and self._scheduled is None:
                self._scheduled = self.reactor.callLater(0, self._flush)
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

        d.addBoth(finished)

    @inlineCallbacks
    def _write(self, batch: list[tuple[str, tuple[Any, ...], Deferred[Any]]]) -> Any:
        """Apply ``batch`` atomically with one ``EVAL`` of the write script; fire with each
        written op's Deferred and its answer (a claim's bool, else None)."""
        # Wait for a live connection first, then leave out the operations that timed out
        # meanwhile: the server has refused those jobs, so they must not be written late.
        connection = yield self._conn._factory.getConnection(peek=True)
        live = [item for item in batch if not item[2].called]
        if not live:
            return []
        blob = pack([(op, args) for op, args, _ in live])
        claims = yield connection.execute_command("EVAL", WRITE, 0, self.prefix, blob)
        answers = iter(claims or [])
        return [(d, bool(int(next(answers))) if op == CLAIM else None) for op, _, d in live]

    @inlineCallbacks
    def replay(self) -> Any:
        """Every stored job, in insertion order."""
        rows = yield self._read_all(b"order", b"job:", JOB_FIELDS, "replay")
        return [job_from_row((decode_key(key), *fields)) for key, *fields in rows]

    @inlineCallbacks
    def dead(self) -> Any:
        """Every dead job, oldest failure first (ties in the order they were buried)."""
        rows = yield self._read_all(b"deadorder", b"dead:", DEAD_FIELDS, "dead set read")
        return by_failure([dead_from_row((decode_key(key), *fields)) for key, *fields in rows])

    @inlineCallbacks
    def results(self) -> Any:
        """Every kept result, in the order they were kept."""
        rows = yield self._read_all(b"results", b"result:", RESULT_FIELDS, "result read")
        return [result_from_row(row) for row in rows]

    @inlineCallbacks
    def _read_all(self, order: bytes, hashes: bytes, fields: tuple[bytes, ...], what: str) -> Any:
        """The rows (member, then ``fields``) of every hash ``<prefix><hashes><member>`` in
        the order of the sorted set ``<prefix><order>``, read in pages by the read script."""
        if self._conn is None:
            raise StoreError("the Redis store is not open")
        out: list[Any] = []
        first = 0
        while True:
            command = self._conn.execute_command(
                "EVAL", READ, 0, self.prefix + order, self.prefix + hashes, first, _PAGE, *fields
            )
            try:
                seen, rows = yield self._bounded(command)
            except StoreError:
                raise
            except Exception as e:
                raise StoreError(f"Redis {what} failed: {e}") from e
            out.extend(rows)
            if int(seen) < _PAGE:
                return out
            first += _PAGE

    @inlineCallbacks
    def next_boot(self) -> Any:
        """``INCR <prefix>boot``: durable before the answer under ``appendfsync always``."""
        if self._closed or self._conn is None:
            raise StoreError("the Redis store is not open")
        try:
            boot = yield self._bounded(self._conn.execute_command("INCR", self.prefix + b"boot"))
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"Redis boot count failed: {e}") from e
        return int(boot)

    @inlineCallbacks
    def close(self) -> Any:
        """Let the queued writes finish, then disconnect."""
        try:
            if self._closed or self._conn is None:
                self._closed = True
                return
            while self._pending or self._in_flight:
                if self._scheduled is not None:
                    self._scheduled.cancel()
                    self._scheduled = None
                if not self._in_flight:
                    self._flush()
                idle: Deferred[None] = Deferred()
                self._idle_waiters.append(idle)
                yield idle
            self._closed = True
            conn, self._conn = self._conn, None
            yield conn.disconnect()
        finally:
            if self._deadlines is not None:
                self._deadlines.stop()
                self._deadlines = None


def _pairs(reply: Any) -> dict[bytes, Any]:
    """A Redis field/value reply (a flat list or a dict) as a dict with bytes keys."""
    if not reply:
        return {}
    if isinstance(reply, dict):
        items = list(reply.items())
    else:
        items = list(zip(reply[::2], reply[1::2], strict=True))
    return {(k.encode() if isinstance(k, str) else k): v for k, v in items}
