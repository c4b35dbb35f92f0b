# -*- test-case-name: tests.test_pg_cluster -*-
"""The connection a cluster node claims on (mixed into a second cluster backend, which
``ClusterStore`` drives on a writer thread of its own).

A claim that waits behind the writer's commits (a group of finishes, the submissions of a
burst) keeps a node's workers waiting for it; on a connection of its own it does not. Each
claim is one statement in autocommit (one round trip), with the node's owner token in its
text, since there is no transaction to set it in. Its commit is as durable as the writer's
(``synchronous_commit`` is left on: a session setting would outlive the session behind
PgBouncer in transaction mode).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class ClaimOps:
    """What a cluster backend does differently on the claims' connection (writer thread)."""

    owner: str
    _cluster_sql: dict[str, str]
    _conn: Any
    #: The backend's claim statement's name and its owner expression; its connection, with
    #: the transaction helpers and the claim op (from the PostgreSQL and cluster backends).
    _claim_op: str
    _owner_sql: str
    _drop: Callable[[], None]
    _with_connection: Callable[[Any], Any]
    _cluster_claim: Callable[[Any, list[tuple[Any, ...]]], list[Any]]

    def _claims_only(self) -> None:
        """Put the owner token into the claim statement as a constant (hex, so that no node
        name can break out of it)."""
        token = f"convert_from(decode('{self.owner.encode().hex()}', 'hex'), 'UTF8')"
        statement = self._cluster_sql[self._claim_op]
        self._cluster_sql[self._claim_op] = statement.replace(self._owner_sql, token)

    def _setup(self, cur: Any) -> None:
        """Nothing: the writer's connection set up the tables."""

    def _connect(self) -> Any:
        """A connection in autocommit."""
        conn = super()._connect()  # type: ignore[misc]
        conn.autocommit = True
        return conn

    def open(self) -> None:
        """Connect (nothing to set up, and no lease to take)."""
        self._drop()
        self._conn = self._connect()

    def write(self, ops: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Run the claims in ``ops``, each its own transaction."""

        def action(conn: Any) -> list[Any]:
            with conn.cursor() as cur:
                return self._cluster_claim(cur, [args for _, args in ops])

        results: list[Any] = self._with_connection(action)
        return results
