# -*- test-case-name: tests.test_pg_cluster -*-
"""The thread that LISTENs on a cluster's channel (``--cluster``): new and requeued rows'
function names, events for a node whose client waits, rows that another node's client
joined (``j:``), and changes of the shared settings (``s:``), handed to the reactor thread.

It has a connection of its own (LISTEN holds a session; the store's writer commits in
batches), and reconnects once a second after a lost connection, saying so (None) since some
notifications may have been missed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger


class NotifyListener:
    """LISTENs on the queue's channel on a thread and connection of its own, and hands each
    notification's function name to the reactor thread (None after a reconnect, when some
    may have been missed)."""

    log = Logger()

    def __init__(
        self,
        conninfo: str,
        channel: str,
        reactor: Any,
        heard: Callable[[bytes | None], None],
        events: Callable[[str], None] | None = None,
        joined: Callable[[str], None] | None = None,
        settings: Callable[[], None] | None = None,
    ) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._reactor = reactor
        self._heard = heard
        self._events = events
        self._joined = joined
        self._settings = settings
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None

    def start(self) -> None:
        """Start listening (returns at once)."""
        self._thread = threading.Thread(
            target=self._run, name="gearmanpy-cluster-listen", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening (the thread ends within half a second)."""
        self._stopping.set()

    def _run(self) -> None:
        """The listening thread: connect, LISTEN, pass notifications on; reconnect after a
        lost connection, once a second."""
        import psycopg

        first = True
        while not self._stopping.is_set():
            try:
                with psycopg.connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=5,
                    application_name="gearmanpy-listen",
                ) as conn:
                    conn.execute(f"LISTEN {self._channel}")
                    if not first:
                        self._reactor.callFromThread(self._heard, None)
                    first = False
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=0.5):
                            kind = note.payload[:2]
                            if kind in ("e:", "j:"):  # events for a node; a row joined
                                take = self._events if kind == "e:" else self._joined
                                if take is not None:
                                    self._reactor.callFromThread(take, note.payload[2:])
                                continue
                            if note.payload == "s:":  # the shared settings changed
                                if self._settings is not None:
                                    self._reactor.callFromThread(self._settings)
                                continue
                            try:
                                name = bytes.fromhex(note.payload)
                            except ValueError:
                                continue
                            self._reactor.callFromThread(self._heard, name)
            except psycopg.Error as e:
                self.log.debug("cluster LISTEN connection lost: {error}", error=e)
                first = False
                time.sleep(1.0)


__all__ = ["NotifyListener"]
