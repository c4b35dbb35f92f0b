# -*- test-case-name: tests.test_pg_cluster -*-
"""The cluster's queue: one PostgreSQL table that several gearmanpy nodes share (``--cluster``).

The rows are the PostgreSQL store's queue table (:mod:`gearmanpy.store.postgres`) with three
more columns: ``owner`` (the node incarnation that claimed the row, NULL while it waits for
one), ``attempt`` (how many times it was claimed) and ``coalesce_key`` (what the job coalesces
on, empty for none). A partial unique index on ``(function, coalesce_key)`` makes coalescing
across nodes atomic: a submission is ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, and one
that conflicts joins the row that is there (the insert waits for a concurrent one to commit).

A node claims rows with ``UPDATE ... FROM (SELECT ... ORDER BY priority, seq FOR UPDATE SKIP
LOCKED LIMIT n)``: one transaction, so two nodes never hold one attempt. Rows it finishes,
releases or updates are matched on its owner token and the attempt, so a result for a
superseded attempt changes nothing. Each node holds a lease in ``<table>_nodes``
(``lease_until`` from the database's ``now()``, never a node's clock); any node's lease tick
deletes expired leases and requeues the rows whose owner has none (``retries + 1``). Taking and
renewing the lease also reads the database's clock, bracketed by the node's: the offset
between them (:attr:`LeaseTick.offset`, ``ClusterStore.on_clock``) times the node's recurring
jobs by the database (:mod:`gearmanpy.server.cluster_clock`). New and
requeued rows are announced with ``pg_notify`` on the table's channel (the function's name in
hex), which :class:`~gearmanpy.store.pg_cluster_listen.NotifyListener` hears on a connection of
its own.

Every operation goes through the store's one writer thread and its group commit
(:mod:`gearmanpy.store._writer`): a burst of submissions and the claims queued with it are
one transaction.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from zope.interface import implementer

from gearmanpy.errors import StoreError
from gearmanpy.store._rows import COLUMNS, job_from_row, job_row
from gearmanpy.store._writer import WRITES, ThreadedBatchWriter
from gearmanpy.store.interface import IJobStore, StoredJob
from gearmanpy.store.pg_cluster_broadcast import (
    BROADCAST_COLUMNS,
    BROADCAST_OPS,
    BroadcastOps,
    BroadcastStore,
    broadcast_statements,
)
from gearmanpy.store.pg_cluster_claims import CLAIM_JOBS, ClaimOps, ClaimStore
from gearmanpy.store.pg_cluster_dead import DEAD_OPS, DeadOps, DeadStore, dead_statements
from gearmanpy.store.pg_cluster_jobs import JOB_OPS, JobOps, JobStore, job_statements
from gearmanpy.store.pg_cluster_limits import LimitOps, limit_statements
from gearmanpy.store.pg_cluster_listen import NotifyListener
from gearmanpy.store.pg_cluster_results import (
    RESULT_COLUMNS,
    RESULT_OPS,
    RESULT_SCHEMA,
    JobStatus,
    ResultOps,
    ResultStore,
    Shared,
    result_statements,
)
from gearmanpy.store.pg_cluster_settings import (
    SETTINGS_OPS,
    SettingsOps,
    SettingsStore,
    settings_statements,
)
from gearmanpy.store.pg_cluster_throttle import Limits, Rationed, ThrottleOps, throttle_statements
from gearmanpy.store.pg_cluster_ticks import TICK_OPS, TickOps, TickStore
from gearmanpy.store.pg_cluster_workers import WORKER_OPS, WorkerOps, WorkerStore
from gearmanpy.store.postgres import _JOB_ARRAYS, _JOB_NAMES, PostgresJobStore, _PostgresBackend

#: The cluster's write ops (batched with the store's own, in order).
SUBMIT = "cluster_submit"
FINISH = "cluster_done"
RELEASE = "cluster_release"
LEASE = "cluster_lease"
LEAVE = "cluster_leave"
CLUSTER_OPS = (
    frozenset({SUBMIT, FINISH, CLAIM_JOBS, RELEASE, LEASE, LEAVE})
    | RESULT_OPS
    | WORKER_OPS
    | JOB_OPS
    | DEAD_OPS
    | SETTINGS_OPS
    | TICK_OPS
    | BROADCAST_OPS
)

#: The columns the cluster adds to the queue table.
_CLUSTER_COLUMNS = {
    "owner": "TEXT",
    "attempt": "INTEGER NOT NULL DEFAULT 0",
    "coalesce_key": "BYTEA NOT NULL DEFAULT ''::bytea",
    **RESULT_COLUMNS,
    **BROADCAST_COLUMNS,
}

_CLUSTER_SCHEMA = """
CREATE UNIQUE INDEX IF NOT EXISTS {table}_live_unique ON {table} (function, coalesce_key)
    WHERE coalesce_key <> ''::bytea;
CREATE INDEX IF NOT EXISTS {table}_unclaimed ON {table} (function, priority, seq)
    WHERE owner IS NULL;
CREATE INDEX IF NOT EXISTS {table}_owned ON {table} (owner) WHERE owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS {table}_nodes (
    owner TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


#: The database's clock in Unix seconds, as the statement runs.
_CLOCK = "extract(epoch FROM clock_timestamp())::float8"

#: This node's owner token for the statements of one transaction (``current_setting``).
_SET_OWNER = "SELECT set_config('gearmanpy.owner', %s, true)"


@attrs.frozen
class Claimed:
    """A row a claim returned: the job, the attempt it was claimed for, and whether it is a
    shared foreground job (a node's client waits for its results)."""

    job: StoredJob
    attempt: int
    foreground: bool = False
    #: Some node's foreground clients joined this background row (its unique): its packets
    #: are published to them as a shared job's are.
    waited: bool = False


@attrs.frozen
class Submitted:
    """What a submission came to: a new row (``created``), or the handle of the live job with
    the same function and coalescing key that it joined."""

    created: bool
    handle: bytes
    #: Refused: its function's queued rows reached the submission's ``maxqueue`` limit.
    full: bool = False


@attrs.frozen
class LeaseTick:
    """What a lease tick found: whether this node's lease was still there, and the node
    incarnations whose lease had expired (their rows requeued)."""

    alive: bool
    expired: list[str]
    requeued: int
    #: Rows this node held without knowing it, given back.
    reconciled: int = 0
    #: The database's clock minus the node's, in seconds, read as the lease was renewed.
    offset: float | None = None


class _ClusterBackend(
    BroadcastOps, DeadOps, SettingsOps, ThrottleOps, TickOps, LimitOps, JobOps, WorkerOps,
    ResultOps, _PostgresBackend,
):  # fmt: skip
    """The PostgreSQL backend with the cluster's columns and statements (writer thread)."""

    # Long: the cluster's statements, one entry each, written out where they are kept.
    def __init__(
        self,
        conninfo: str,
        table: str,
        connect_timeout: float,
        owner: str,
        name: str,
        lease: float,
        seconds: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(conninfo, table, connect_timeout)
        self.owner = owner
        self.name = name
        self.lease = lease
        #: The node's clock (its reactor's), and the offset to the database's read at open.
        self.seconds = seconds
        self.offset: float | None = None
        self.channel = f"gearmanpy_{table}"
        t = table
        # A row the core adds itself (a recurring tick, a promoted or unburied job) is held
        # by this node, which queues it locally; the store's own finishing and updating
        # statements touch only rows this node holds. The owner is the setting
        # gearmanpy.owner, set at the start of each transaction, so that no statement
        # changes its parameters.
        me = "current_setting('gearmanpy.owner')"
        self._sql["add"] = (
            self._sql["add"].replace(
                f"INSERT INTO {t} ({COLUMNS}) SELECT {_JOB_NAMES}",
                f"INSERT INTO {t} ({COLUMNS}, owner) SELECT {_JOB_NAMES}, {me}",
                1,
            )
            + ", owner = EXCLUDED.owner, attempt = 0"
        )
        self._sql["done"] += f" AND owner = {me}"
        self._sql["retries"] += f" AND {t}.owner = {me}"
        self._sql["reschedule"] += f" AND {t}.owner = {me}"
        returned = ", ".join(f"j.{c.strip()}" for c in COLUMNS.split(","))
        self._cluster_sql = {
            # The rows take their seq (FIFO) in submission order, then go in by (function,
            # coalescing key), the order every node takes the unique index's locks in, so two
            # nodes' batches of the same uniques never deadlock.
            SUBMIT: f"INSERT INTO {t} ({COLUMNS}, coalesce_key, seq) OVERRIDING SYSTEM VALUE"
            f" SELECT {_JOB_NAMES}, c, q FROM (SELECT *, nextval(pg_get_serial_sequence("
            f"'{t}', 'seq')) AS q FROM (SELECT * FROM unnest({_JOB_ARRAYS}, %b::bytea[])"
            f" WITH ORDINALITY AS x({_JOB_NAMES}, c, n) ORDER BY n) AS o) AS y ORDER BY f, c"
            " ON CONFLICT DO NOTHING RETURNING job_key",
            # The live rows that submissions joined; a shared foreground row that a
            # background submission joins becomes a background row (it must run even if its
            # clients go, as quirk 11's promotion on one node).
            "existing": f"WITH x AS (SELECT * FROM unnest(%b::bytea[], %b::bytea[]) AS x(f, c)),"
            f" p AS (UPDATE {t} SET foreground = false FROM x WHERE {t}.function = x.f"
            f" AND {t}.coalesce_key = x.c AND {t}.foreground) SELECT function, coalesce_key,"
            f" handle FROM {t} JOIN x ON {t}.function = x.f AND {t}.coalesce_key = x.c",
            "mine": f"SELECT job_key FROM {t} WHERE job_key = ANY(%b::text[])",
            # The deleted rows' final packets go to any node's clients that joined them
            # (a foreground submission of the same unique), whether or not this node had
            # heard of them yet; the statement returns those nodes.
            FINISH: f"WITH d AS (DELETE FROM {t} USING unnest(%b::text[], %b::int4[],"
            f" %b::bytea[]) AS x(k, a, f) WHERE {t}.job_key = x.k AND {t}.attempt = x.a"
            f" AND {t}.owner = {me} RETURNING {t}.handle, x.f), e AS (INSERT INTO {t}_events"
            f" (waiter, handle, data) SELECT w.waiter, w.handle, d.f FROM {t}_waiters AS w"
            " JOIN d ON w.handle = d.handle RETURNING waiter), u AS (DELETE FROM"
            f" {t}_waiters AS w USING d WHERE w.handle = d.handle) SELECT DISTINCT waiter FROM e",
            CLAIM_JOBS: f"UPDATE {t} AS j SET owner = {me}, attempt = j.attempt + 1"
            f" FROM (SELECT job_key AS k FROM {t} WHERE owner IS NULL AND function = %b"
            f" AND (target IS NULL OR target = {me}) AND when_to_run <= extract(epoch FROM now())"
            " ORDER BY priority, seq"
            " LIMIT %s FOR UPDATE SKIP LOCKED) AS c"
            f" WHERE j.job_key = c.k RETURNING j.seq, j.attempt, j.foreground, EXISTS (SELECT 1"
            f" FROM {t}_waiters AS w WHERE w.handle = j.handle), {returned}",
            RELEASE: f"UPDATE {t} SET owner = NULL FROM unnest(%b::text[], %b::int4[]) AS x(k, a)"
            f" WHERE {t}.job_key = x.k AND {t}.attempt = x.a AND {t}.owner = {me}"
            f" RETURNING {t}.function",
            # Both return the database's clock as the statement runs (now() is the
            # transaction's start, which a group commit may have begun a while before).
            "renew": f"UPDATE {t}_nodes SET lease_until = now() + make_interval(secs => %s)"
            f" WHERE owner = %s RETURNING {_CLOCK}",
            "join": f"INSERT INTO {t}_nodes (owner, name, lease_until)"
            " VALUES (%s, %s, now() + make_interval(secs => %s)) ON CONFLICT (owner)"
            f" DO UPDATE SET lease_until = EXCLUDED.lease_until RETURNING {_CLOCK}",
            "expire": f"DELETE FROM {t}_nodes WHERE lease_until < now() RETURNING owner",
            "forget_name": f"DELETE FROM {t}_nodes WHERE name = %s AND owner <> %s",
            # Rows whose owner holds no lease (expired, left, or an earlier incarnation).
            "requeue": f"UPDATE {t} SET owner = NULL, retries = retries + 1"
            f" WHERE owner IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {t}_nodes AS n"
            f" WHERE n.owner = {t}.owner) RETURNING function",
            "requeue_mine": f"UPDATE {t} SET owner = NULL, retries = retries + 1"
            f" WHERE owner = {me} RETURNING function",
            "leave": f"DELETE FROM {t}_nodes WHERE owner = {me}",
            # Rows held here that the node does not know it holds (a claim whose answer was
            # lost with a connection or came after its timeout) go back.
            "reconcile": f"UPDATE {t} SET owner = NULL WHERE owner = {me}"
            " AND job_key <> ALL(%b::text[]) RETURNING function",
            "notify": "SELECT pg_notify(%s, encode(f, 'hex'))"
            " FROM (SELECT DISTINCT unnest(%b::bytea[]) AS f) AS s",
            **result_statements(t, me),
            **job_statements(t, me),
            **limit_statements(t),
            **dead_statements(t, me),
            **settings_statements(t),
            **throttle_statements(t),
            **broadcast_statements(t, me),
        }
        self._add_worker_statements(t, me)

    def _setup(self, cur: Any) -> None:
        """The store's tables, then the cluster's columns, indexes and leases table, under
        an advisory lock so that nodes starting at once do not race on DDL."""
        cur.execute(_SET_OWNER, (self.owner,))
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._table,))
        super()._setup(cur)
        self._add_columns(cur, _CLUSTER_COLUMNS)
        cur.execute(_CLUSTER_SCHEMA.format(table=self._table))
        cur.execute(RESULT_SCHEMA.format(table=self._table))
        self._setup_dead(cur, self._table)
        self._setup_workers(cur, self._table)
        self._setup_settings(cur, self._table)
        self._setup_throttles(cur)

    def replay(self) -> list[StoredJob]:
        """Nothing: a node holds only the rows it claims (the queue is the table)."""
        return []

    def write(self, ops: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Apply ``ops`` in one transaction: runs of the store's own ops as the store does,
        the cluster's ops one run at a time."""

        def action(conn: Any) -> list[Any]:
            try:
                return apply(conn)
            except StoreError:
                conn.rollback()  # none of the batch may commit
                raise

        def apply(conn: Any) -> list[Any]:
            results: list[Any] = []
            with conn.cursor() as cur:
                # Per transaction, not per session: PgBouncer in transaction mode may hand
                # each transaction another server connection.
                cur.execute(_SET_OWNER, (self.owner,))
                self._take_limit_locks(cur, [args for op, args in ops if op == SUBMIT])
                for cluster, group in itertools.groupby(ops, lambda op: op[0] in CLUSTER_OPS):
                    run = list(group)
                    if not cluster:
                        results.extend(self._apply(cur, run))
                        continue
                    for op, items in itertools.groupby(run, lambda o: o[0]):
                        args = [a for _, a in items]
                        results.extend(getattr(self, "_" + op)(cur, args))
            return results

        results: list[Any] = self._with_connection(action)
        return results

    # -- the cluster's ops (writer thread; each takes the args of a run of one op) --------

    def _submitted(self, created: bool, handle: bytes, full: bool = False) -> Submitted:
        """What a submission came to (for the limited path, pg_cluster_limits)."""
        return Submitted(created, handle, full)

    def _submit_rows(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Submitted]:
        """Insert new rows; a row that conflicts on (function, coalescing key) joins the live
        one. A conflicting row that ended before it could be read is inserted again."""
        out: list[Submitted | None] = [None] * len(runs)
        pending = list(range(len(runs)))
        for _ in range(5):
            if not pending:
                break
            rows = [(*job_row(runs[i][0]), runs[i][1]) for i in pending]
            cur.execute(self._cluster_sql[SUBMIT], [list(c) for c in zip(*rows, strict=True)])
            created = {r[0] for r in cur.fetchall()}
            joined = []
            for i in pending:
                job: StoredJob = runs[i][0]
                if job.key in created:
                    out[i] = Submitted(True, job.handle)
                else:
                    joined.append(i)
            pending = []
            if joined:
                # A retried batch whose first commit went through finds its own rows.
                cur.execute(self._cluster_sql["mine"], ([runs[i][0].key for i in joined],))
                mine = {r[0] for r in cur.fetchall()}
                for i in joined:
                    if runs[i][0].key in mine:
                        out[i] = Submitted(True, runs[i][0].handle)
                joined = [i for i in joined if out[i] is None]
            if not joined:
                break
            cur.execute(
                self._cluster_sql["existing"],
                ([runs[i][0].function for i in joined], [runs[i][1] for i in joined]),
            )
            live = {(bytes(f), bytes(c)): bytes(h) for f, c, h in cur.fetchall()}
            for i in joined:
                handle = live.get((runs[i][0].function, runs[i][1]))
                if handle is None:
                    pending.append(i)
                else:
                    out[i] = Submitted(False, handle)
        if pending:
            raise StoreError("a submission kept conflicting with rows that ended")
        self._notify(cur, [runs[i][0].function for i, s in enumerate(out) if s and s.created])
        return [s for s in out if s is not None]

    def _cluster_done(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[None]:
        """Delete finished rows ``(key, attempt, final packet)``, each only for its own
        attempt and owner; tell the nodes whose clients joined one its final packet."""
        cur.execute(self._cluster_sql[FINISH], [list(c) for c in zip(*runs, strict=True)])
        self._tell(cur, [r[0] for r in cur.fetchall()])
        return [None] * len(runs)

    def _cluster_claim(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[list[Claimed]]:
        """Claim up to ``n`` due rows of one function each, in priority and FIFO order
        (within its cluster-wide throttle's ``limits``, if any: pg_cluster_throttle.py)."""
        return [
            self._claim_rows(cur, f, n) if limits is None else self._rationed(cur, f, n, limits)
            for f, n, limits in runs
        ]

    def _claim_rows(self, cur: Any, function: bytes, n: int) -> list[Claimed]:
        """Claim up to ``n`` due rows of ``function``, in priority and FIFO order."""
        cur.execute(self._cluster_sql[CLAIM_JOBS], (function, n))
        rows = sorted(cur.fetchall(), key=lambda r: (int(r[7]), int(r[0])))
        return [Claimed(job_from_row(r[4:]), int(r[1]), bool(r[2]), bool(r[3])) for r in rows]

    def _cluster_release(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[int]:
        """Give claimed, unstarted rows back to the cluster (no retry counted)."""
        out = []
        for (pairs,) in runs:
            if not pairs:
                out.append(0)
                continue
            cur.execute(
                self._cluster_sql[RELEASE],
                ([k for k, _ in pairs], [a for _, a in pairs]),
            )
            functions = [bytes(r[0]) for r in cur.fetchall()]
            self._notify(cur, functions)
            out.append(len(functions))
        return out

    def _cluster_lease(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[LeaseTick]:
        """Renew this node's lease (joining if it is gone), expire the others', and requeue
        the rows of every owner without a lease."""
        out = []
        for lease, held in runs:
            offset = self._timed(cur, "renew", (lease, self.owner))
            alive = offset is not None
            if not alive:
                cur.execute(self._cluster_sql["forget_name"], (self.name, self.owner))
                offset = self._timed(cur, "join", (self.owner, self.name, lease))
                self._rejoin_workers(cur)
            cur.execute(self._cluster_sql["expire"])
            expired = [r[0] for r in cur.fetchall()]
            cur.execute(self._cluster_sql["requeue"])
            functions = [bytes(r[0]) for r in cur.fetchall()]
            cur.execute(self._cluster_sql["gone"])
            self._targets_gone(cur)
            released = []
            if held is not None:
                cur.execute(self._cluster_sql["reconcile"], (held,))
                released = [bytes(r[0]) for r in cur.fetchall()]
            self._notify(cur, functions + released)
            out.append(LeaseTick(alive, expired, len(functions), len(released), offset))
        return out

    def _timed(self, cur: Any, statement: str, args: tuple[Any, ...]) -> float | None:
        """Run a lease statement that returns the database's clock; return that clock minus
        the node's at the statement's midpoint (None if it returned no row)."""
        before = self.seconds()
        cur.execute(self._cluster_sql[statement], args)
        row = cur.fetchone()
        after = self.seconds()
        return None if row is None else float(row[0]) - (before + after) / 2

    def _cluster_leave(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[int]:
        """Release the unstarted rows, requeue the rest this node holds, drop its lease."""
        out = []
        for (pairs,) in runs:
            released = self._cluster_release(cur, [(pairs,)])[0]
            cur.execute(self._cluster_sql["requeue_mine"])
            functions = [bytes(r[0]) for r in cur.fetchall()]
            cur.execute(self._cluster_sql["leave"])
            self._notify(cur, functions)
            out.append(released + len(functions))
        return out

    def _notify(self, cur: Any, functions: list[bytes]) -> None:
        """Announce work for ``functions`` on the table's channel (sent at commit)."""
        if functions:
            cur.execute(self._cluster_sql["notify"], (self.channel, functions))

    def open(self) -> None:
        """Connect, set up the tables, and take this incarnation's lease (an earlier
        incarnation of the same node name gives its rows back at once)."""
        super().open()

        def action(conn: Any) -> int:
            with conn.cursor() as cur:
                cur.execute(_SET_OWNER, (self.owner,))
                cur.execute(
                    f"DELETE FROM {self._table}_nodes WHERE name = %s AND owner <> %s",
                    (self.name, self.owner),
                )
                self.offset = self._timed(cur, "join", (self.owner, self.name, self.lease))
                cur.execute(self._cluster_sql["requeue"])
                functions = [bytes(r[0]) for r in cur.fetchall()]
                self._notify(cur, functions)
                return len(functions)

        requeued = self._with_connection(action)
        if requeued:
            self.log.warn(
                "cluster: {n} jobs of nodes without a lease (an earlier run of {name}?) requeued",
                n=requeued,
                name=self.name,
            )


class _ClaimBackend(ClaimOps, _ClusterBackend):
    """The cluster backend on the claims' connection (:mod:`.pg_cluster_claims`)."""


def node_owner(name: str) -> str:
    """An owner token for one incarnation of node ``name`` (unique across restarts)."""
    return f"{name}/{os.urandom(4).hex()}"


@implementer(IJobStore)
@attrs.define(eq=False)
class ClusterStore(
    BroadcastStore, DeadStore, SettingsStore, TickStore, ResultStore, JobStore, WorkerStore,
    ClaimStore, PostgresJobStore,
):  # fmt: skip
    """The PostgreSQL store as one node of a cluster sees it (``--cluster``).

    :ivar node_name: the node's name (``--node-name``), shown with its lease.
    :ivar owner: this incarnation's token on the rows it claims.
    """

    node_name: str = attrs.field(default="", kw_only=True)
    owner: str = attrs.field(default="", kw_only=True)
    #: Seconds a lease lasts (the node renews it every third of that).
    lease: float = attrs.field(default=10.0, kw_only=True)
    #: Called on the reactor thread with each new reading of the database's clock minus the
    #: reactor's (at open, and at every lease tick).
    on_clock: Callable[[float | None], None] | None = attrs.field(default=None, kw_only=True)
    _cluster: _ClusterBackend | None = attrs.field(init=False, default=None)
    _claims: ThreadedBatchWriter | None = attrs.field(init=False, default=None)
    _offset: float | None = attrs.field(init=False, default=None)

    _name = "postgresql"
    _writes = WRITES | CLUSTER_OPS

    def _backend(self) -> _ClusterBackend:
        """The cluster backend on :attr:`conninfo` (and the claims', on a connection of
        their own)."""
        if not self.owner:
            self.owner = node_owner(self.node_name)
        args = (self.conninfo, self.table, min(5.0, self.timeout / 2), self.owner)
        rest = (self.node_name, self.lease, self.reactor.seconds)
        self._claims_on(_ClaimBackend(*args, *rest))
        self._cluster = _ClusterBackend(*args, *rest)
        return self._cluster

    @property
    def clock_offset(self) -> float | None:
        """The database's clock minus the reactor's as last read (None before open)."""
        return self._offset

    def open(self) -> Deferred[None]:
        """Connect, set up the tables, take the lease, read the database's clock and the
        shared settings."""

        def opened(_: None) -> Any:
            assert self._cluster is not None
            self._clocked(self._cluster.offset)
            return self._claimer.submit("open").addCallback(lambda _: self._open_settings())

        return super().open().addCallback(opened)

    def _clocked(self, offset: float | None) -> None:
        """Keep a new reading of the database's clock and pass it on."""
        if offset is not None:
            self._offset = offset
        if self.on_clock is not None:
            self.on_clock(offset)

    @property
    def channel(self) -> str:
        """The LISTEN channel of this queue."""
        return f"gearmanpy_{self.table}"

    def submit(
        self, job: StoredJob, coalesce: bytes, limit: int = 0, total: int = 0
    ) -> Deferred[Submitted]:
        """Insert ``job`` unclaimed, or join the live job with its coalescing key (b"": none);
        refuse it (``full``) once its function has ``limit`` queued rows, or the table
        ``total`` (0: no limit)."""
        return self._writer.submit(SUBMIT, job, coalesce, limit, total)

    def finish(self, key: str, attempt: int, final: bytes = b"") -> Deferred[None]:
        """Delete the row ``key`` if this node still holds it for ``attempt``; ``final`` (the
        job's last packet) goes to the clients of other nodes that joined it."""
        return self._writer.submit(FINISH, key, attempt, final)

    def release(self, pairs: list[tuple[str, int]]) -> Deferred[int]:
        """Give back claimed, unstarted rows ``(key, attempt)``; fires with how many."""
        return self._writer.submit(RELEASE, list(pairs))

    def tick(self, lease: float, held: list[str] | None = None) -> Deferred[LeaseTick]:
        """Renew the lease for ``lease`` seconds and requeue the rows of expired nodes; with
        ``held`` (the keys of every row this node knows it holds), give back the others."""
        d: Deferred[LeaseTick] = self._writer.submit(LEASE, lease, held)

        def clocked(tick: LeaseTick) -> LeaseTick:
            self._clocked(tick.offset)
            return tick

        return d.addCallback(clocked)

    def leave(self, pairs: list[tuple[str, int]]) -> Deferred[int]:
        """Release ``pairs``, requeue the other rows held (claims in flight answer first),
        and drop the lease."""
        return self.after_claims(lambda: self._writer.submit(LEAVE, list(pairs)))


__all__ = [
    "CLUSTER_OPS",
    "Claimed",
    "ClusterStore",
    "JobStatus",
    "LeaseTick",
    "Limits",
    "NotifyListener",
    "Rationed",
    "Shared",
    "Submitted",
    "node_owner",
]
