# -*- test-case-name: tests.test_pg_cluster_settings -*-
"""The settings a cluster's nodes share (``--cluster``): ``maxqueue`` and the failure policy's
run-time changes (``policy set``, ``policy reset``).

On a cluster these admin commands write the shared settings table
(:mod:`gearmanpy.store.pg_cluster_settings`) and answer ``OK`` once it is committed (``ERR
STORE_ERROR ...`` if the database refuses; then nothing changes on the node either). Every node
applies the table at start, when a notification says it changed, and every third of the
lease (a lost notification is caught up there): a ``maxqueue`` row replaces the node's
configured ``--max-queue`` limits for its function, and a ``policy`` row is a run-time change
over the node's configuration file, until ``policy reset`` deletes it, as on one node.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from gearmanpy.protocol import admin as fmt
from gearmanpy.server.acl import ADMIN
from gearmanpy.server.admin import maxqueue_limits
from gearmanpy.server.admin_policy import NO_POLICY, bad_policy
from gearmanpy.server.cluster_clock import every, halt
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.jobs import Peer
from gearmanpy.server.policy import check_settings
from gearmanpy.store.pg_cluster_settings import MAXQUEUE, POLICY, Setting

#: The reply when the settings table cannot be written.
STORE_ERROR = fmt.error(b"STORE_ERROR", b"the+cluster's+settings+could+not+be+written")


def _text(key: bytes) -> str:
    """A function name or pattern as text (for the policy, and for logs)."""
    return key.decode("utf-8", "surrogateescape")


@attrs.define(eq=False)
class ClusterSettings:
    """Writes this node's ``maxqueue`` and ``policy`` commands to the cluster's settings, and
    applies the settings table to the node's core whenever it changed.

    :ivar interval: seconds between reads of the table (the lease tick's, a third of
        ``--cluster-lease``).
    """

    log = Logger()

    core: JobServerCore
    store: Any  # the ClusterStore (read_settings, put_setting, drop_setting)
    clock: IReactorTime
    interval: float = 10.0 / 3
    #: The node's own ``--max-queue`` limits, what a function has without a shared row.
    _configured: dict[bytes, list[int]] = attrs.field(init=False)
    #: The table as last applied, by (kind, key).
    _applied: dict[tuple[str, bytes], Any] = attrs.field(init=False, factory=dict)
    _reading: bool = attrs.field(init=False, default=False)
    _again: bool = attrs.field(init=False, default=False)
    _loop: LoopingCall | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._configured = {name: list(limits) for name, limits in self.core.max_queues.items()}

    def start(self) -> None:
        """Read the table now, then every :attr:`interval`."""
        self._loop = every(self.clock, self.interval, self.refresh)

    def stop(self) -> None:
        """Stop reading the table."""
        halt(self._loop)
        self._loop = None

    def refresh(self) -> None:
        """Read the table and apply it (one read in flight; a change heard meanwhile reads
        again after it)."""
        if self._reading:
            self._again = True
            return
        self._reading = True
        self.store.read_settings().addCallbacks(self._read, self._read_failed)

    def _read(self, rows: list[Setting]) -> None:
        self._reading = False
        self.apply(rows)
        if self._again:
            self._again = False
            self.refresh()

    def _read_failed(self, failure: Failure) -> None:
        """The database is away: the next tick reads again."""
        self._reading = False
        self.log.debug("reading the cluster's settings failed: {e}", e=failure)

    # -- applying -----------------------------------------------------------------------

    def apply(self, rows: list[Setting]) -> None:
        """Make the core's ``maxqueue`` limits and run-time policy changes the table's
        ``rows`` (nothing happens when they are what was applied last)."""
        table = {(kind, key): value for kind, key, value in rows}
        old, self._applied = self._applied, table
        changed = {k for k in old.keys() | table.keys() if old.get(k) != table.get(k)}
        for kind, key in sorted(changed):
            if kind == MAXQUEUE:
                limits = table.get((kind, key)) or self._configured.get(key, [0, 0, 0])
                self.core.set_max_queue(key, [int(n) for n in limits])
        if any(kind == POLICY for kind, _ in changed):
            self._apply_policies(
                [k for k in old if k[0] == POLICY],
                [(key, value) for (kind, key), value in sorted(table.items()) if kind == POLICY],
            )

    def _apply_policies(self, gone: list[tuple[str, bytes]], rows: list[tuple[bytes, Any]]) -> None:
        """Replace the core's run-time policy changes with ``rows`` (pattern, settings), in
        the patterns' order on every node, and give every function its policy again."""
        policies = self.core.policies
        for _, key in gone:
            policies.reset(_text(key))
        for key, settings in rows:
            try:
                policies.set(_text(key), settings)
            except (ValueError, TypeError) as e:
                self.log.warn(
                    "the cluster's policy for {pattern} is not applied on this node: {error}",
                    pattern=_text(key),
                    error=e,
                )
        self.core._reapply_policies()

    # -- the admin commands -------------------------------------------------------------

    def handle(self, commands: Any, peer: Peer, command: Any) -> bool:
        """Answer ``maxqueue`` and ``policy set|reset`` for the cluster (``commands``: the
        node's AdminCommands, for permissions and parsing); False for any other command."""
        args = command.args
        if command.name == b"maxqueue":
            if not args:
                peer.out.send(fmt.invalid_arguments(b"maxqueue"))
                return True
            refused = commands.refusal(peer, ADMIN, args[0])
            if refused is not None:
                peer.out.send(refused)
                return True
            limits = [max(0, n) for n in maxqueue_limits(args[1:])]
            self._write(peer, self.store.put_setting(MAXQUEUE, args[0], limits))
            return True
        if command.name != b"policy":
            return False
        change = commands.policy_change(peer, args)
        if isinstance(change, bytes):
            peer.out.send(change)
            return True
        pattern, settings = change
        key = pattern.encode("utf-8", "surrogateescape")
        if settings is None:
            self._write(peer, self.store.drop_setting(POLICY, key))
            return True
        policies = self.core.policies
        base = policies.defaults if pattern == "*" else policies.rules.get(pattern, {})
        try:
            check_settings({**base, **self._applied.get((POLICY, key), {}), **settings})
        except (ValueError, TypeError) as e:
            peer.out.send(bad_policy(e))
            return True
        self._write(peer, self.store.put_setting(POLICY, key, settings))
        return True

    def _write(self, peer: Peer, d: Deferred[tuple[bool, list[Setting]]]) -> None:
        """Answer ``peer`` once the write ``d`` is committed, after applying the table it
        returned: ``OK`` (``ERR NO_POLICY`` for a reset of nothing), or ``ERR STORE_ERROR``."""
        slot = peer.out.hold()

        def written(result: tuple[bool, list[Setting]]) -> None:
            found, rows = result
            self.apply(rows)
            peer.out.release(slot, fmt.ok() if found else NO_POLICY)

        def failed(failure: Failure) -> None:
            self.log.warn(
                "a cluster setting was not changed: the settings table cannot be written ({error})",
                error=" ".join(str(failure.value).split()),
            )
            peer.out.release(slot, STORE_ERROR)

        d.addCallbacks(written, failed)


__all__ = ["STORE_ERROR", "ClusterSettings"]
