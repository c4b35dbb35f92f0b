# -*- test-case-name: tests.test_reactor -*-
"""The reactor ``twistd gearman`` runs on: Twisted's epoll reactor minus per-event log context.

For every ready file descriptor, Twisted's ``EPollReactor.doPoll`` runs ``_doReadOrWrite``
through ``log.callWithLogger``, which asks the selectable for its ``logPrefix()`` and runs the
call in a copy of the ``twisted.python.log`` context whose ``system`` is that prefix, so that
legacy ``twisted.python.log`` events (``log.msg``, ``log.err``) raised while handling the event
name the connection; ``twisted.logger`` events never read that context. A job server handles
several events per job, and that bookkeeping costs CPU on every one of them. How much shows
in the "S3 server CPU per job" line of ``benchmarks/run.py --scenarios S3 --servers
gearmanpy,epoll --baseline epoll --server-cmd 'epoll=twistd --reactor epoll ...'``, which runs
the server under both reactors (the full command is in benchmarks/README.rst, "Comparing
reactors").

gearmanpy's own modules log through ``twisted.logger`` with their own namespaces, so they have
no use for that context, and :class:`GearmanReactor` dispatches events directly. What that
gives up: a ``twisted.python.log`` event raised while handling an event, such as the traceback
of a handler that raised, carries the default ``system`` ``-`` instead of the connection's
prefix. What it keeps: an exception from ``doRead``, ``doWrite`` or ``dataReceived`` is logged
with ``log.err`` (as ``_doReadOrWrite`` logs it) and drops that connection, not the reactor.

:func:`gearmanpy.tap.makeService` installs it unless a reactor is already installed (``twistd
--reactor`` installs one before the plugin runs) or epoll is missing; any reactor works, this
one only skips the per-event bookkeeping.
"""

from __future__ import annotations

import errno
import select
import sys
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.internet.tcp import Server as _TCPServer
from twisted.python import log

_EPOLLIN = select.EPOLLIN


class GearmanReactor(EPollReactor):
    """An epoll reactor whose event dispatch skips ``log.callWithLogger``."""

    def doPoll(self, timeout: float | None) -> None:
        """Wait for events and hand each to its selectable."""
        if timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        dispatch = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            why: BaseException | None
            if event == _EPOLLIN:
                # The common case, readable and nothing else: what _doReadOrWrite does for it,
                # without its flag tests and its fileno() == -1 check, and for a plain TCP
                # connection what tcp.Connection.doRead does.
                try:
                    if selectable.__class__ is _TCPServer:
                        try:
                            data = selectable.socket.recv(selectable.bufferSize)
                        except BlockingIOError:
                            continue
                        except OSError:
                            why = CONNECTION_LOST
                        else:
                            if data:
                                selectable.protocol.dataReceived(data)
                                continue
                            why = CONNECTION_DONE
                    else:
                        why = selectable.doRead()
                except BaseException:
                    why = sys.exc_info()[1]
                    log.err()
                if why:
                    try:
                        self._disconnectSelectable(selectable, why, True)
                    except KeyboardInterrupt:
                        raise
                    except BaseException:
                        # A connectionLost that raises: logged, and the poll's other events
                        # are still handled (as on the path below).
                        log.err(None, "error dispatching an I/O event")
                continue
            try:
                dispatch(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                # _doReadOrWrite already turns handler errors into a disconnect; this only
                # catches failures of the disconnect itself.
                log.err(None, "error dispatching an I/O event")

    doIteration = doPoll


def install() -> Any:
    """Install :class:`GearmanReactor` as the global reactor and return it."""
    from twisted.internet.main import installReactor

    reactor = GearmanReactor()
    installReactor(reactor)
    return reactor
