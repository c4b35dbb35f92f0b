# -*- test-case-name: tests.test_reactor -*-
"""The reactor ``twistd gearman`` runs on: Twisted's epoll reactor minus per-event log context.

For every ready file descriptor, Twisted's ``EPollReactor.doPoll`` goes through
``log.callWithLogger``, which asks the connection for its log prefix and pushes a context dict
so that legacy ``twisted.python.log`` messages carry a ``system`` field. A job server handles
several events per job, and profiling showed that bookkeeping at about a seventh of the
server's CPU. gearmanpy logs through ``twisted.logger`` with its own namespaces, so it has no
use for that context; :class:`GearmanReactor` dispatches events directly and keeps the part
that matters (an exception from a handler is logged, never fatal).

``twistd gearman`` installs it unless another reactor was chosen (``twistd --reactor``) or is
already installed; any reactor works, this one is only faster.
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
                # without its flag tests, and for a plain TCP connection what its doRead does.
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
                    self._disconnectSelectable(selectable, why, True)
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
