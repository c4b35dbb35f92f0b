# -*- test-case-name: tests.test_pg_cluster_results -*-
"""The admin protocol's ``status``, ``prioritystatus``, ``workers``, ``show jobs`` and
``show unique jobs`` on a cluster's node: the whole cluster; and ``show nodes``, the cluster's
members.

:class:`ClusterAdmin` stands in front of the node's
:class:`~gearmanpy.server.admin.AdminCommands`: ``status`` counts, per function, the table's
rows (every node's queued and claimed jobs; a claimed one counts as running) plus the jobs only
this node holds (its foreground jobs that are not shared), with this node's workers;
``workers`` prints this node's connections, then those of every other live node as they
published them (:mod:`~gearmanpy.server.cluster_workers`: the node's name in the IP column);
``show jobs`` lists this node's jobs, then the table's rows that other nodes hold or none does
(oldest first, at most :data:`~gearmanpy.store.pg_cluster_jobs.SHOW_JOBS_LIMIT`), and
``show unique jobs`` their uniques, from the same read; ``prioritystatus`` counts the
table's queued rows that this node does not hold plus its own queued jobs; the failure
policy's dead set, scheduled jobs and kept results are the cluster's too
(:mod:`~gearmanpy.server.cluster_dead`); ``maxqueue`` and ``policy set|reset`` change the
cluster's shared settings (:mod:`~gearmanpy.server.cluster_settings`); every other command
is the node's own, as without ``--cluster``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.python.failure import Failure

from gearmanpy.protocol import admin as fmt
from gearmanpy.server.acl import STATUS
from gearmanpy.server.admin import (
    AdminCommands,
    live_jobs,
    priority_rows,
    show_jobs_rows,
    worker_rows,
)
from gearmanpy.server.admin_policy import field, rows, when
from gearmanpy.server.cluster_dead import ClusterDeadCommands
from gearmanpy.server.jobs import RUNNING, Peer
from gearmanpy.store.pg_cluster_jobs import SHOW_JOBS_LIMIT, NodeRow, TableJob


class ClusterAdmin:
    """The node's admin commands, with ``status``, ``prioritystatus``, ``workers`` and the
    ``show`` of jobs answered for the whole cluster."""

    def __init__(self, commands: AdminCommands, store: Any, settings: Any = None) -> None:
        self.commands = commands
        self.store = store
        #: ``show dead|scheduled|result``, ``retry dead``, ``drop dead``, ``cancel unique``.
        self.dead = ClusterDeadCommands(commands, store)
        #: The shared settings (server/cluster_settings.py): ``maxqueue`` and ``policy``.
        self.settings = settings

    def __getattr__(self, name: str) -> Any:
        """Everything else is the node's own admin commands'."""
        return getattr(self.commands, name)

    def handle(self, peer: Peer, command: Any) -> None:
        """Run one admin command; ``status``, ``workers`` and ``show jobs`` are answered once
        the tables have been read."""
        if command.name == b"workers":
            self.workers(peer)
            return
        if self.settings is not None and self.settings.handle(self.commands, peer, command):
            return
        if self.dead.handle(peer, command.name, command.args):
            return
        words = [a.lower() for a in command.args]
        if command.name == b"show" and words in ([b"jobs"], [b"unique", b"jobs"]):
            self.show_jobs(peer, unique=words[0] == b"unique")
            return
        if command.name == b"show" and words == [b"nodes"]:
            self.show_nodes(peer)
            return
        if command.name == b"prioritystatus":
            self.prioritystatus(peer)
            return
        if command.name != b"status":
            self.commands.handle(peer, command)
            return
        slot = peer.out.hold()

        def answer(counts: list[tuple[bytes, int, int]]) -> None:
            peer.out.release(
                slot, fmt.format_status(self.commands._visible(peer, self.rows(counts)))
            )

        def failed(failure: Failure) -> None:  # the database is away: this node's own view
            self.commands.log.warn(
                "status shows this node only: the cluster's table cannot be read ({error})",
                error=" ".join(str(failure.value).split()),
            )
            rows = [(f.name, f.total(), f.running, len(f.workers)) for f in self.functions()]
            peer.out.release(slot, fmt.format_status(self.commands._visible(peer, rows)))

        self.store.counts().addCallbacks(answer, failed)

    def workers(self, peer: Peer) -> None:
        """``workers``: this node's connections, then the other live nodes' (from the
        workers table; this node's only, with a warning, when the table cannot be read)."""
        refused = self.commands.refusal(peer, STATUS)
        if refused is not None:
            peer.out.send(refused)
            return
        own = fmt.format_workers(worker_rows(self.commands.core))
        slot = peer.out.hold()

        def answer(nodes: list[tuple[str, bytes]]) -> None:
            remote = b"".join(lines for _, lines in nodes)
            peer.out.release(slot, own[: -len(b".\n")] + remote + b".\n")

        def failed(failure: Failure) -> None:
            self.commands.log.warn(
                "workers shows this node only: the cluster's table cannot be read ({error})",
                error=" ".join(str(failure.value).split()),
            )
            peer.out.release(slot, own)

        self.store.workers().addCallbacks(answer, failed)

    def show_jobs(self, peer: Peer, unique: bool = False) -> None:
        """``show jobs`` (``show unique jobs`` if ``unique``): this node's jobs, then the
        table's rows that it does not hold (each job once); this node's only, with a warning,
        when the table cannot be read."""
        refused = self.commands.refusal(peer, STATUS)
        if refused is not None:
            peer.out.send(refused)
            return
        core = self.commands.core
        jobs = live_jobs(core)
        own = show_jobs_rows(core)
        keys = {j.store_key for j in jobs} - {None}
        handles = {row[0] for row in own}
        what = "show unique jobs" if unique else "show jobs"

        def reply(table: list[TableJob]) -> bytes:
            if unique:
                uniques = [j.unique for j in jobs] + [t.unique for t in table]
                return fmt.format_show_unique_jobs(uniques)
            rows = own + [(t.handle, t.retries, False, not t.foreground) for t in table]
            return fmt.format_show_jobs(rows)

        slot = peer.out.hold()

        def answer(table: list[TableJob]) -> None:
            if len(table) > SHOW_JOBS_LIMIT:
                self.commands.log.warn(
                    "{what} lists the table's oldest {n} rows only", what=what, n=SHOW_JOBS_LIMIT
                )
                del table[SHOW_JOBS_LIMIT:]
            others = [t for t in table if t.key not in keys and t.handle not in handles]
            peer.out.release(slot, reply(others))

        def failed(failure: Failure) -> None:
            self.commands.log.warn(
                "{what} shows this node only: the cluster's table cannot be read ({error})",
                what=what,
                error=" ".join(str(failure.value).split()),
            )
            peer.out.release(slot, reply([]))

        self.store.table_jobs().addCallbacks(answer, failed)

    def show_nodes(self, peer: Peer) -> None:
        """``show nodes`` (gearmanpy's; a cluster's only): a line per live node, tab-separated:
        its name, owner token, start (UTC), seconds left on its lease, rows it holds, and
        ``*`` for the node asked (``-`` for the others); then ``.``."""
        refused = self.commands.refusal(peer, STATUS)
        if refused is not None:
            peer.out.send(refused)
            return
        slot = peer.out.hold()

        def answer(nodes: list[NodeRow]) -> None:
            lines = [
                [
                    field(n.name.encode()),
                    field(n.owner.encode()),
                    when(n.started),
                    b"%.1f" % n.lease_left,
                    b"%d" % n.held,
                    b"*" if n.me else b"-",
                ]
                for n in nodes
            ]
            peer.out.release(slot, rows(lines))

        def failed(failure: Failure) -> None:
            error = " ".join(str(failure.value).split())
            peer.out.release(slot, fmt.error(b"UNAVAILABLE", b"the+cluster+table+cannot+be+read"))
            self.commands.log.warn("show nodes: the cluster's table cannot be read ({e})", e=error)

        self.store.nodes().addCallbacks(answer, failed)

    def prioritystatus(self, peer: Peer) -> None:
        """``prioritystatus``: this node's queued jobs plus the table's queued rows that it
        does not hold, per priority, with this node's workers; its own, with a warning, when
        the table cannot be read."""
        core = self.commands.core
        own = priority_rows(core)
        keys = [j.store_key for j in live_jobs(core) if j.store_key is not None]
        slot = peer.out.hold()

        def answer(counts: list[tuple[bytes, int, int]]) -> None:
            table: dict[bytes, list[int]] = {}
            for name, priority, n in counts:
                table.setdefault(name, [0, 0, 0])[priority] += n
            rows = []
            for name, high, normal, low, workers in own:
                h, n, lo = table.pop(name, [0, 0, 0])
                rows.append((name, high + h, normal + n, low + lo, workers))
            rows.extend((name, h, n, lo, 0) for name, (h, n, lo) in table.items())
            peer.out.release(slot, fmt.format_priority_status(self.commands._visible(peer, rows)))

        def failed(failure: Failure) -> None:
            self.commands.log.warn(
                "prioritystatus shows this node only: the cluster's table cannot be read ({error})",
                error=" ".join(str(failure.value).split()),
            )
            peer.out.release(slot, fmt.format_priority_status(self.commands._visible(peer, own)))

        self.store.priority_counts(keys).addCallbacks(answer, failed)

    def functions(self) -> list[Any]:
        """This node's function records."""
        return list(self.commands.core.functions.values())

    def rows(self, counts: list[tuple[bytes, int, int]]) -> list[tuple[bytes, int, int, int]]:
        """``status`` rows: the table's counts plus the jobs only this node holds, with this
        node's workers; functions of either, this node's first."""
        core = self.commands.core
        own_total: Counter[bytes] = Counter()
        own_running: Counter[bytes] = Counter()
        for job in core.jobs.values():
            if job.store_key is None:  # not in the table
                own_total[job.function.name] += 1
                own_running[job.function.name] += job.state == RUNNING
        table = {name: (total, claimed) for name, total, claimed in counts}
        rows = []
        for f in self.functions():
            total, claimed = table.pop(f.name, (0, 0))
            rows.append(
                (f.name, total + own_total[f.name], claimed + own_running[f.name], len(f.workers))
            )
        rows.extend((name, total, claimed, 0) for name, (total, claimed) in table.items())
        return rows


__all__ = ["ClusterAdmin"]
