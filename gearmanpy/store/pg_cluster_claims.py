# -*- test-case-name: tests.test_pg_cluster -*-
"""The connection a cluster node claims on: a second cluster backend (:class:`ClaimOps`
mixed in), driven by a writer thread of its own (:class:`ClaimStore`, mixed into the store).

A claim that waits behind the writer's commits (a group of finishes, the submissions of a
burst) keeps a node's workers waiting for it; on a connection of its own it does not. Each
claim is one statement in autocommit (one round trip), with the node's owner token in its
text, since there is no transaction to set it in. Its commit is as durable as the writer's
(``synchronous_commit`` is left on: a session setting would outlive the session behind
PgBouncer in transaction mode). Measured (benchmarks/README.rst), that beats a transaction
that sets the owner and an asynchronous commit for itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from twisted.internet.defer import Deferred

from gearmanpy.store._writer import ThreadedBatchWriter

#: The claim op (its statement is the cluster backend's), and the owner expression in it.
CLAIM_JOBS = "cluster_claim"
_OWNER = "current_setting('gearmanpy.owner')"


class ClaimOps:
    """What a cluster backend does differently on the claims' connection (writer thread)."""

    owner: str
    _cluster_sql: dict[str, str]
    _conn: Any
    #: The PostgreSQL backend's connection helpers, and the cluster backend's claim op.
    _drop: Callable[[], None]
    _with_connection: Callable[[Any], Any]
    _cluster_claim: Callable[[Any, list[tuple[Any, ...]]], list[Any]]

    def __init__(self, *args: Any) -> None:
        """The cluster backend's, with the owner token put into the claim statement as a
        constant (hex, so that no node name can break out of it)."""
        super().__init__(*args)
        token = f"convert_from(decode('{self.owner.encode().hex()}', 'hex'), 'UTF8')"
        self._cluster_sql[CLAIM_JOBS] = self._cluster_sql[CLAIM_JOBS].replace(_OWNER, token)

    def _setup(self, cur: Any) -> None:
        """Nothing: the writer's connection set up the tables."""

    def _connect(self) -> Any:
        """A connection in autocommit."""
        conn = super()._connect()  # type: ignore[misc]
        conn.autocommit = True
        return conn

    def open(self) -> None:
        """Connect (no tables to set up, and no lease to take)."""
        self._drop()
        self._conn = self._connect()

    def write(self, ops: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Run the claims in ``ops``, each its own transaction."""

        def action(conn: Any) -> list[Any]:
            with conn.cursor() as cur:
                return self._cluster_claim(cur, [args for _, args in ops])

        results: list[Any] = self._with_connection(action)
        return results


class ClaimStore:
    """The claims' writer of the cluster's store (reactor thread)."""

    reactor: Any
    timeout: float
    _name: ClassVar[str]
    _claims: ThreadedBatchWriter | None
    _writer: ThreadedBatchWriter

    def _claims_on(self, backend: Any) -> None:
        """Claim on ``backend`` (a cluster backend with :class:`ClaimOps`), on a thread of
        its own; its connection opens with the store."""
        self._claims = ThreadedBatchWriter(
            self.reactor, backend, f"{self._name} claims", self.timeout, frozenset({CLAIM_JOBS})
        )

    @property
    def _claimer(self) -> ThreadedBatchWriter:
        assert self._claims is not None
        return self._claims

    def claim(self, function: bytes, n: int, limits: Any = None) -> Deferred[list[Any]]:
        """Claim up to ``n`` due rows of ``function``; with ``limits``, within its throttle
        across the cluster (a :class:`~.pg_cluster_throttle.Rationed` list, which says when
        to claim again). A throttled claim counts and claims in one transaction, so it goes
        through the writer; the others through the claims' own connection."""
        if limits is not None:
            throttled: Deferred[list[Any]] = self._writer.submit(CLAIM_JOBS, function, n, limits)
            return throttled
        d: Deferred[list[Any]] = self._claimer.submit(CLAIM_JOBS, function, n, None)
        return d

    def after_claims(self, then: Callable[[], Deferred[Any]]) -> Deferred[Any]:
        """Close the claims' connection once the claims in flight have answered, then
        ``then()`` (so that it sees every claim committed)."""
        return self._claimer.close().addBoth(lambda _: then())

    def close(self) -> Deferred[None]:
        """Close the claims' connection, then the store."""
        close = super().close  # type: ignore[misc]
        return self.after_claims(close)
