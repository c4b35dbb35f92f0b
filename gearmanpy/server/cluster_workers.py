# -*- test-case-name: tests.test_pg_cluster_workers -*-
"""A cluster node's workers, published for the admin ``workers`` of every node (``--cluster``).

:class:`WorkerBoard` writes this node's ``workers`` rows to the cluster's workers table
(:mod:`gearmanpy.store.pg_cluster_workers`) when they changed, checking once a second, with the
node's name where gearmand prints a connection's IP (spaces in the name become ``_``, so that
the line still splits into ``fd ip client-id :``); the cluster's admin prints the other live
nodes' rows after its own (:mod:`gearmanpy.server.cluster_admin`).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from gearmanpy.protocol import admin as fmt
from gearmanpy.server.admin import worker_rows
from gearmanpy.server.cluster_clock import every, halt
from gearmanpy.server.core import JobServerCore


def node_label(name: str) -> bytes:
    """``name`` as a remote row shows it in the IP column (no spaces)."""
    return name.encode("utf-8", "backslashreplace").replace(b" ", b"_")


@attrs.define(eq=False)
class WorkerBoard:
    """Keeps this node's row of the workers table up to date.

    :ivar interval: seconds between checks (a row is rewritten only when it changed).
    """

    log = Logger()

    core: JobServerCore
    store: Any  # the ClusterStore (publish_workers)
    clock: IReactorTime
    name: str
    interval: float = 1.0
    _published: bytes | None = attrs.field(init=False, default=None)
    _writing: bool = attrs.field(init=False, default=False)
    _loop: LoopingCall | None = attrs.field(init=False, default=None)

    def lines(self) -> bytes:
        """This node's ``workers`` rows, node-named, without the closing ``.``."""
        label = node_label(self.name)
        rows = [(fd, label, cid, fs) for fd, _, cid, fs in worker_rows(self.core)]
        return fmt.format_workers(rows)[: -len(b".\n")]

    def start(self) -> None:
        """Publish now, then check once every :attr:`interval`."""
        self._loop = every(self.clock, self.interval, self.publish)

    def stop(self) -> None:
        """Stop checking (the row goes with the node's lease, which the node drops after)."""
        halt(self._loop)
        self._loop = None

    def publish(self) -> None:
        """Write the rows if they changed since the last write (one write in flight)."""
        lines = self.lines()
        if self._writing or lines == self._published:
            return
        self._writing = True

        def written(_: None) -> None:
            self._writing = False
            self._published = lines

        def failed(failure: Failure) -> None:  # the next check tries again
            self._writing = False
            self.log.debug("publishing the workers failed: {e}", e=failure)

        self.store.publish_workers(lines).addCallbacks(written, failed)


__all__ = ["WorkerBoard", "node_label"]
