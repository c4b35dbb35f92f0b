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

Group commit: everything queued while a write is in flight goes into the next one, sent as a
single ``EVAL`` of a Lua script (:data:`_WRITE`). A script runs atomically, like
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

import struct
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gearmanpy.errors import StoreError
from gearmanpy.store._writer import (
    ADD,
    DEFAULT_TIMEOUT,
    DONE,
    RETRIES,
    Deadlines,
    job_from_row,
    settle,
)
from gearmanpy.store.interface import IJobStore, StoredJob

#: Apply a batch of writes. ARGV[1] is the key prefix, ARGV[2] the operations, packed by
#: :func:`_pack`: an op code byte then length-prefixed (4-byte big-endian) strings,
#: ``a key function unique priority data when retries reducer handle`` (add), ``d key`` (done),
#: ``r key retries`` (set the retry count, only if the job is still stored). Numbers travel as
#: decimal strings, since Lua numbers are doubles and ``when`` is 64-bit.
_WRITE = """
local p = ARGV[1]
local ops = ARGV[2]
local order = p .. 'order'
local jp = p .. 'job:'
local seq = tonumber(redis.call('GET', p .. 'seq') or '0')
local start = seq
local pos = 1
local n = #ops
local op, key, f, u, pr, d, w, r, rd, h
while pos <= n do
  op, pos = struct.unpack('c1', ops, pos)
  if op == 'a' then
    key, f, u, pr, d, w, r, rd, h, pos = struct.unpack(
      '>I4c0I4c0I4c0I4c0I4c0I4c0I4c0I4c0I4c0', ops, pos)
    redis.call('HSET', jp .. key, 'function', f, 'unique', u, 'priority', pr, 'data', d,
      'when', w, 'retries', r, 'reducer', rd, 'handle', h)
    seq = seq + 1
    redis.call('ZADD', order, 'NX', string.format('%d', seq), key)
  elseif op == 'd' then
    key, pos = struct.unpack('>I4c0', ops, pos)
    redis.call('DEL', jp .. key)
    redis.call('ZREM', order, key)
  elseif op == 'r' then
    key, r, pos = struct.unpack('>I4c0I4c0', ops, pos)
    local h = jp .. key
    if redis.call('EXISTS', h) == 1 then
      redis.call('HSET', h, 'retries', r)
    end
  else
    return redis.error_reply('bad operation code')
  end
end
if seq ~= start then
  redis.call('SET', p .. 'seq', string.format('%d', seq))
end
return 0
"""

#: Read one page of jobs in insertion order. ARGV = prefix, first index, count.
_READ = """
local p = ARGV[1]
local first = tonumber(ARGV[2])
local keys = redis.call('ZRANGE', p .. 'order', first, first + tonumber(ARGV[3]) - 1)
local out = {}
for _, key in ipairs(keys) do
  local v = redis.call('HMGET', p .. 'job:' .. key, 'function', 'unique', 'priority', 'data',
    'when', 'retries', 'reducer', 'handle')
  if v[1] then
    table.insert(out, {key, v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]})
  end
end
return {#keys, out}
"""

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
    _pending: list[tuple[str, tuple[Any, ...], Deferred[None]]] = attrs.field(factory=list)
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

    def _submit(self, op: str, *args: Any) -> Deferred[None]:
        """Queue a write for the next batch."""
        if self._closed or self._conn is None:
            return fail(StoreError("the Redis store is not open"))
        d: Deferred[None] = Deferred()
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
            error = None
            if isinstance(result, Failure):
                error = result.value
                if not isinstance(error, StoreError):
                    error = StoreError(f"Redis write failed: {error}")
            settle([d for _, _, d in batch], None, error)
            if self._pending and self._scheduled is None:
                self._scheduled = self.reactor.callLater(0, self._flush)
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

        d.addBoth(finished)

    @inlineCallbacks
    def _write(self, batch: list[tuple[str, tuple[Any, ...], Deferred[None]]]) -> Any:
        """Apply ``batch`` atomically with one ``EVAL`` of :data:`_WRITE`."""
        # Wait for a live connection first, then leave out the operations that timed out
        # meanwhile: the server has refused those jobs, so they must not be written late.
        connection = yield self._conn._factory.getConnection(peek=True)
        live = [item for item in batch if not item[2].called]
        if not live:
            return
        blob = _pack([(op, args) for op, args, _ in live])
        yield connection.execute_command("EVAL", _WRITE, 0, self.prefix, blob)

    @inlineCallbacks
    def replay(self) -> Any:
        """Every stored job, in insertion order (read in pages by :data:`_READ`)."""
        if self._conn is None:
            raise StoreError("the Redis store is not open")
        jobs: list[StoredJob] = []
        first = 0
        while True:
            try:
                seen, rows = yield self._bounded(
                    self._conn.execute_command("EVAL", _READ, 0, self.prefix, first, _PAGE)
                )
            except StoreError:
                raise
            except Exception as e:
                raise StoreError(f"Redis replay failed: {e}") from e
            jobs.extend(job_from_row((_decode_key(key), *fields)) for key, *fields in rows)
            if int(seen) < _PAGE:
                return jobs
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


def _pack(ops: list[tuple[str, tuple[Any, ...]]]) -> bytes:
    """Encode write operations for :data:`_WRITE` (op code, then length-prefixed strings)."""
    parts: list[bytes] = []
    append = parts.append
    for op, args in ops:
        if op == ADD:
            job: StoredJob = args[0]
            append(b"a")
            fields: tuple[bytes, ...] = (
                _encode_key(job.key),
                job.function,
                job.unique,
                b"%d" % job.priority,
                job.data,
                b"%d" % job.when,
                b"%d" % job.retries,
                job.reducer,
                job.handle,
            )
        elif op == DONE:
            append(b"d")
            fields = (_encode_key(args[0]),)
        else:
            append(b"r")
            fields = (_encode_key(args[0]), b"%d" % args[1])
        for field in fields:
            append(_LENGTH.pack(len(field)))
            append(field)
    return b"".join(parts)


_LENGTH = struct.Struct(">I")


def _encode_key(key: str) -> bytes:
    """A job key as bytes (keys are the server's strings)."""
    return key.encode("utf-8", "surrogateescape")


def _decode_key(key: bytes) -> str:
    """A job key read back from Redis, as the string :func:`_encode_key` encoded."""
    return key.decode("utf-8", "surrogateescape")


def _pairs(reply: Any) -> dict[bytes, Any]:
    """A Redis field/value reply (a flat list or a dict) as a dict with bytes keys."""
    if not reply:
        return {}
    if isinstance(reply, dict):
        items = list(reply.items())
    else:
        items = list(zip(reply[::2], reply[1::2], strict=True))
    return {(k.encode() if isinstance(k, str) else k): v for k, v in items}
