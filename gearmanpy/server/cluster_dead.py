# -*- test-case-name: tests.test_pg_cluster_dead -*-
"""The failure policy's admin commands on a cluster's node: the whole cluster's dead set,
scheduled jobs and kept results (``show dead``, ``show scheduled``, ``show result``,
``retry dead``, ``drop dead``, ``cancel unique``).

On a cluster the dead set and the kept results are shared tables
(:mod:`~gearmanpy.store.pg_cluster_dead`), and a node keeps no dead set in memory, so these
commands answer from the tables on every node, in the formats of
:mod:`~gearmanpy.server.admin_policy`: ``show dead`` lists every node's dead rows (oldest
failure first, at most :data:`~gearmanpy.store.pg_cluster_jobs.SHOW_JOBS_LIMIT`, with a
warning when there were more); ``show scheduled`` this node's waiting jobs and the table's
rows that wait for their time elsewhere; ``show result`` a result whichever node kept it (a
client's ``result()`` asks it); ``retry dead`` moves the rows into the shared queue for any
node's workers; ``drop dead`` deletes them; ``cancel unique`` cancels this node's job, else the
queued row whichever node wrote it. When the tables cannot be read, the ``show`` commands give
the node's own answer and ``retry``, ``drop`` and ``cancel`` an ``ERR STORE_ERROR``, each with a
one-line warning. :class:`DeadSweeper` bounds the tables as a node bounds its own sets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from gearmanpy.protocol import admin as fmt
from gearmanpy.protocol.text import show
from gearmanpy.server.acl import ADMIN, STATUS
from gearmanpy.server.admin import AdminCommands
from gearmanpy.server.admin_policy import field, format_result, rows, when
from gearmanpy.server.cluster_results import coalesce_column
from gearmanpy.server.core import JobServerCore
from gearmanpy.server.failures import SWEEP_INTERVAL
from gearmanpy.server.jobs import Peer
from gearmanpy.store.interface import DeadJob, KeptResult
from gearmanpy.store.pg_cluster_dead import Cancelled, ScheduledRow
from gearmanpy.store.pg_cluster_jobs import SHOW_JOBS_LIMIT

_PRIORITY_NAMES = (b"high", b"normal", b"low")

#: The reply of ``retry dead``, ``drop dead`` and ``cancel unique`` when the table is away.
STORE_ERROR = fmt.error(b"STORE_ERROR", b"the+cluster's+table+cannot+be+read")


def _anyone(function: bytes | None) -> bytes | None:
    """No refusal: anyone may act (the web dashboard's guard has checked the request)."""
    return None


def _one_line(failure: Failure) -> str:
    """A failure's message on one line (for the log)."""
    return " ".join(str(failure.value).split())


def scheduled_line(
    handle: bytes, function: bytes, unique: bytes, due: float, priority: int, retries: int,
    error: bytes,
) -> list[bytes]:  # fmt: skip
    """One ``show scheduled`` row: handle, function, unique, due, priority, attempts, error."""
    return [
        field(handle),
        field(function),
        field(unique),
        when(due),
        _PRIORITY_NAMES[priority],
        b"%d" % retries,
        field(error) if error else b"-",
    ]


class ClusterDeadCommands:
    """``show dead|scheduled|result``, ``retry dead``, ``drop dead`` and ``cancel unique``
    for the whole cluster, in front of the node's own commands."""

    def __init__(self, commands: AdminCommands, store: Any) -> None:
        self.commands = commands
        self.store = store

    @property
    def log(self) -> Logger:
        """The admin commands' log."""
        return self.commands.log

    @property
    def core(self) -> JobServerCore:
        """The node's core."""
        return self.commands.core

    def handle(self, peer: Peer, name: bytes, args: tuple[bytes, ...]) -> bool:
        """Answer the admin command ``name args`` if it is one of these (well formed; the
        node's own commands answer a malformed one); whether it did."""
        words = [a.lower() for a in args]
        if name == b"show" and words:
            rest = args[1:]
            if words[0] == b"dead" and len(rest) <= 1:
                self.show_dead(peer, rest[0] if rest else None)
            elif words[0] == b"scheduled" and len(rest) <= 1:
                self.show_scheduled(peer, rest[0] if rest else None)
            elif words[0] == b"result" and len(rest) in (1, 2):
                self.show_result(peer, rest)
            else:
                return False
        elif name in (b"retry", b"drop") and len(args) == 2 and words[0] == b"dead":
            self.act_on_dead(peer, name.decode(), args[1])
        elif name == b"cancel" and len(args) == 3 and words[0] == b"unique":
            self.cancel_unique(peer, args[1], args[2])
        else:
            return False
        return True

    def _answer(
        self, peer: Peer, d: Deferred[Any], answer: Callable[[Any], bytes],
        fallback: Callable[[], bytes], what: str, shows: bool = True,
    ) -> None:  # fmt: skip
        """Send ``answer(read)`` once ``d`` fires, in this reply's place; ``fallback()``
        and a one-line warning if the table cannot be read (``shows``: a ``show`` command,
        which then answers for this node only)."""
        slot = peer.out.hold()

        def failed(failure: Failure) -> None:
            if shows:
                self.log.warn(
                    "{what} shows this node only: the cluster's table cannot be read ({error})",
                    what=what,
                    error=_one_line(failure),
                )
            else:
                self.log.warn(
                    "{what} failed: the cluster's table cannot be read ({error})",
                    what=what,
                    error=_one_line(failure),
                )
            peer.out.release(slot, fallback())

        d.addCallback(answer).addCallbacks(lambda data: peer.out.release(slot, data), failed)

    def _bounded(self, found: list[Any], what: str, order: str) -> list[Any]:
        """``found`` cut to :data:`SHOW_JOBS_LIMIT` rows, with a warning if it was longer."""
        if len(found) > SHOW_JOBS_LIMIT:
            self.log.warn(
                "{what} lists the table's {order} {n} rows only",
                what=what,
                order=order,
                n=SHOW_JOBS_LIMIT,
            )
            del found[SHOW_JOBS_LIMIT:]
        return found

    def _own(self, peer: Peer, words: list[bytes], args: tuple[bytes, ...]) -> Callable[[], bytes]:
        """The node's own answer to ``show ARGS`` (for when the table is away)."""
        return lambda: self.commands.show_policy_state(peer, words, args)

    def _refused(self, peer: Peer, permission: str, name: bytes | None = None) -> bool:
        """Send the refusal and return True if ``peer`` may not use ``permission``."""
        refused = self.commands.refusal(peer, permission, name)
        if refused is not None:
            peer.out.send(refused)
        return refused is not None

    def show_dead(self, peer: Peer, function: bytes | None) -> None:
        """``show dead [FUNCTION]``: every node's dead rows, oldest failure first."""
        if self._refused(peer, STATUS):
            return
        args = (b"dead",) + ((function,) if function is not None else ())

        def answer(dead: list[DeadJob]) -> bytes:
            found = self._bounded(dead, "show dead", "oldest")
            return rows(
                [
                    [
                        field(d.job.handle or d.job.key.encode()),
                        field(d.job.function),
                        field(d.job.unique),
                        b"%d" % d.job.retries,
                        when(d.failed_at),
                        field(d.error),
                    ]
                    for d in found
                ]
            )

        d = self.store.show_dead(function)
        self._answer(peer, d, answer, self._own(peer, [b"dead"], args), "show dead")

    def dead_page(self, function: bytes | None, limit: int) -> Deferred[tuple[int, list[DeadJob]]]:
        """How many dead rows every node has, and the oldest ``limit`` (of ``function``, or
        all): the web dashboard's dead set (it asks every few seconds, so it reads no more)."""
        d: Deferred[tuple[int, list[DeadJob]]] = self.store.dead_page(function, limit)
        return d

    def show_scheduled(self, peer: Peer, function: bytes | None) -> None:
        """``show scheduled [FUNCTION]``: this node's waiting jobs and the table's rows
        waiting elsewhere (or for no node yet), soonest first, each job once."""
        if self._refused(peer, STATUS):
            return
        args = (b"scheduled",) + ((function,) if function is not None else ())
        own = list(self.core.scheduled_jobs(function))
        keys = {j.store_key for j in own} - {None}

        def answer(table: list[ScheduledRow]) -> bytes:
            found = self._bounded(table, "show scheduled", "soonest")
            lines = [
                (j.when, scheduled_line(
                    j.handle, j.function.name, j.unique, j.when, j.priority, j.retries, j.error
                ))
                for j in own
            ] + [
                (r.when, scheduled_line(
                    r.handle, r.function, r.unique, r.when, r.priority, r.retries, r.error
                ))
                for r in found
                if r.key not in keys
            ]  # fmt: skip
            lines.sort(key=lambda pair: pair[0])
            return rows([line for _, line in lines])

        d = self.store.show_scheduled(function)
        self._answer(peer, d, answer, self._own(peer, [b"scheduled"], args), "show scheduled")

    def show_result(self, peer: Peer, rest: tuple[bytes, ...]) -> None:
        """``show result HANDLE`` or ``show result FUNCTION UNIQUE``: the result, whichever
        node kept it."""
        if self._refused(peer, STATUS):
            return

        def answer(result: KeptResult | None) -> bytes:
            if result is None:
                return fmt.error(b"NO_RESULT", b"no+result+is+kept+for+that+job")
            return format_result(result)

        d = self.store.show_result(rest, self.core.clock.seconds())
        own = self._own(peer, [b"result"], (b"result", *rest))
        self._answer(peer, d, answer, own, "show result")

    def act_on_dead(self, peer: Peer, verb: str, what: bytes) -> None:
        """``retry dead WHAT`` (``verb`` "retry") or ``drop dead WHAT``: the dead rows a
        handle, a function or ``all`` names, every node's, once the peer may act on each of
        their functions."""
        slot = peer.out.hold()

        def done(n: int | bytes) -> bytes:
            if isinstance(n, bytes):  # refused
                return n
            if not n:
                return fmt.error(b"NO_DEAD_JOB", b"no+dead+job+matches")
            self.log.info(
                "{n} dead jobs {action} by an admin ({what})",
                n=n,
                action="queued again" if verb == "retry" else "dropped",
                what=show(what),
            )
            return fmt.ok()

        def failed(failure: Failure) -> None:
            peer.out.release(slot, STORE_ERROR)

        d = self.act(verb, what, lambda name: self.commands.refusal(peer, ADMIN, name))
        d.addCallback(done).addCallbacks(lambda data: peer.out.release(slot, data), failed)

    def act(
        self, verb: str, what: bytes, refusal: Callable[[bytes | None], bytes | None] = _anyone
    ) -> Deferred[int | bytes]:
        """Retry (``verb`` "retry") or drop the dead rows ``what`` names (a handle, a
        function or ``all``), every node's, unless ``refusal(function)`` refuses one of
        their functions (None for ``all``): fires with how many rows it moved (0: none
        matched, or another node got there first) or the refusal; a failure (the table is
        away) is logged on one line and passed on (``retry dead``, ``drop dead`` and the web
        dashboard's actions)."""
        command = f"{verb} dead"

        def chosen(found: list[tuple[str, bytes]]) -> Deferred[int] | int | bytes:
            functions = {f for _, f in found} if what != b"all" else {None}
            for name in sorted(functions or {what}, key=lambda f: f or b""):
                refused = refusal(name)
                if refused is not None:
                    return refused
            if not found:
                return 0
            keys = [k for k, _ in self._bounded(found, command, "oldest")]
            act = self.store.retry_dead if verb == "retry" else self.store.drop_dead_rows
            d: Deferred[int] = act(keys)
            return d

        def failed(failure: Failure) -> Failure:
            self.log.warn(
                "{command} failed: the cluster's table cannot be read ({error})",
                command=command,
                error=_one_line(failure),
            )
            return failure

        d: Deferred[int | bytes] = self.store.select_dead(what).addCallback(chosen)
        return d.addErrback(failed)

    def cancel_unique(self, peer: Peer, function: bytes, unique: bytes) -> None:
        """``cancel unique FUNCTION UNIQUE``: this node's job with that unique, else the
        queued row in the table whichever node wrote it."""
        if self._refused(peer, ADMIN, function):
            return
        if self.core.cancel_unique(function, unique):
            peer.out.send(fmt.ok())
            return

        def answer(found: Cancelled) -> bytes:
            if found.handle is not None:
                self.log.info(
                    "job {handle} cancelled by an admin (cancel unique)", handle=show(found.handle)
                )
                return fmt.ok()
            if found.held_by is not None:
                text = f"held by node {found.held_by}; send cancel unique there"
                return fmt.error(b"UNKNOWN_JOB", text.replace(" ", "+").encode("utf-8", "replace"))
            return fmt.error(b"UNKNOWN_JOB")

        d = self.store.cancel_unique(function, coalesce_column(unique))
        self._answer(peer, d, answer, lambda: STORE_ERROR, "cancel unique", shows=False)


class DeadSweeper:
    """Bounds the cluster's dead table as a node bounds its dead set (``[dead_set]``
    ``max_jobs`` and ``max_age``), and forgets expired results, every
    :data:`~gearmanpy.server.failures.SWEEP_INTERVAL` seconds (any node may; they agree)."""

    log = Logger()

    def __init__(self, core: JobServerCore, store: Any, clock: IReactorTime) -> None:
        self.core = core
        self.store = store
        self._loop = LoopingCall(self.sweep)
        self._loop.clock = clock

    def start(self) -> None:
        """Sweep now and every interval."""
        self._loop.start(SWEEP_INTERVAL, now=True)

    def stop(self) -> None:
        """Stop sweeping."""
        if self._loop.running:
            self._loop.stop()

    def sweep(self) -> Deferred[None]:
        """One sweep (a failure waits for the next one)."""
        dead = self.core.dead
        d: Deferred[None] = self.store.sweep(self.core.clock.seconds(), dead.max_age, dead.max_jobs)
        d.addErrback(lambda f: self.log.debug("dead set sweep failed: {e}", e=_one_line(f)))
        return d


__all__ = ["STORE_ERROR", "ClusterDeadCommands", "DeadSweeper", "scheduled_line"]
