# -*- test-case-name: tests.test_pg_cluster_workers -*-
"""Every node's workers in PostgreSQL, for the admin ``workers`` of the whole cluster (mixed
into the cluster's backend and store).

Each node keeps one row in ``<table>_workers``: its owner token, its name, and the lines that
gearadmin's ``workers`` prints for its connections (``fd ip client-id : functions``, with the
node's name where the IP would be). A node rewrites its row when its workers changed (at most
once a second); the row goes with the node's lease: at a clean stop, and at the lease tick of
any node once the lease has expired. Rows are read only for nodes whose lease is live.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

PUBLISH_WORKERS = "cluster_publish_workers"
READ_WORKERS = "cluster_read_workers"
WORKER_OPS = frozenset({PUBLISH_WORKERS, READ_WORKERS})

WORKERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS {table}_workers (
    owner TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    lines BYTEA NOT NULL
)
"""


def worker_statements(t: str, me: str) -> dict[str, str]:
    """The statements of the workers table of ``t`` (``me``: the SQL naming this node's owner
    token)."""
    return {
        PUBLISH_WORKERS: f"INSERT INTO {t}_workers (owner, name, lines) VALUES ({me}, %s, %b)"
        " ON CONFLICT (owner) DO UPDATE SET name = EXCLUDED.name, lines = EXCLUDED.lines",
        READ_WORKERS: f"SELECT w.name, w.lines FROM {t}_workers AS w JOIN {t}_nodes AS n"
        f" ON n.owner = w.owner WHERE n.lease_until >= now() AND w.owner <> {me}"
        " ORDER BY w.name, w.owner",
        # Rows of nodes without a lease (expired, left, or an earlier incarnation).
        "workers_gone": f"DELETE FROM {t}_workers AS w WHERE NOT EXISTS"
        f" (SELECT 1 FROM {t}_nodes AS n WHERE n.owner = w.owner)",
        "workers_leave": f"DELETE FROM {t}_workers WHERE owner = {me}",
    }


class WorkerOps:
    """The workers ops of the cluster's backend (writer thread)."""

    _cluster_sql: dict[str, str]
    name: str
    #: The lines this node last wrote (writer thread), for a rejoin.
    _workers_lines: bytes | None = None

    def _add_worker_statements(self, t: str, me: str) -> None:
        """Add the workers statements; a lease's end (``gone``, ``leave``) takes the row."""
        sql = self._cluster_sql
        sql.update(worker_statements(t, me))
        sql["gone"] += "; " + sql["workers_gone"]
        sql["leave"] += "; " + sql["workers_leave"]

    def _setup_workers(self, cur: Any, table: str) -> None:
        """Create the workers table (at setup, under the cluster's advisory lock)."""
        cur.execute(WORKERS_SCHEMA.format(table=table))

    def _cluster_publish_workers(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[None]:
        """Write this node's row (the last of a run of publications is what it has now)."""
        cur.execute(self._cluster_sql[PUBLISH_WORKERS], (self.name, runs[-1][0]))
        self._workers_lines = runs[-1][0]
        return [None] * len(runs)

    def _rejoin_workers(self, cur: Any) -> None:
        """This node took a new lease after losing its own: write its row again (the other
        nodes deleted it with the lease), as it was last published."""
        if self._workers_lines is not None:
            cur.execute(self._cluster_sql[PUBLISH_WORKERS], (self.name, self._workers_lines))

    def _cluster_read_workers(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Any]:
        """The other live nodes' (name, lines), by name."""
        cur.execute(self._cluster_sql[READ_WORKERS])
        rows = [(str(name), bytes(lines)) for name, lines in cur.fetchall()]
        return [rows] * len(runs)


class WorkerStore:
    """The workers methods of the cluster's store."""

    _writer: Any

    def publish_workers(self, lines: bytes) -> Deferred[None]:
        """Replace this node's row with ``lines`` (its ``workers`` rows, node-named)."""
        d: Deferred[None] = self._writer.submit(PUBLISH_WORKERS, lines)
        return d

    def workers(self) -> Deferred[list[tuple[str, bytes]]]:
        """The other live nodes' names and ``workers`` lines, by name."""
        d: Deferred[list[tuple[str, bytes]]] = self._writer.submit(READ_WORKERS)
        return d


__all__ = [
    "PUBLISH_WORKERS",
    "READ_WORKERS",
    "WORKERS_SCHEMA",
    "WORKER_OPS",
    "WorkerOps",
    "WorkerStore",
    "worker_statements",
]
