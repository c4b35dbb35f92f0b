# -*- test-case-name: tests.test_store -*-
"""Build a store from the ``--queue URL`` option.

* ``memory``: nothing survives the process.
* ``sqlite:PATH``: an SQLite file, relative to the working directory unless absolute.
* ``postgresql://user:password@host:port/dbname`` (or ``postgres://``), any libpq URL.
* ``redis://[:password@]host[:port][/db]``: port 6379 and database 0 by default.

Backends import their database clients only when opened, so this module stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from gearmanpy.store.interface import IJobStore

_HELP = "expected memory, sqlite:PATH, postgresql://..., postgres://... or redis://host:port/db"


def store_from_url(url: str, reactor: Any) -> IJobStore:
    """Return an unopened store for ``url``.

    :param url: the ``--queue`` value.
    :param reactor: the reactor the store uses for its timers and thread hand-offs.
    :raises ValueError: if ``url`` names no known backend or is malformed.
    """
    return store_factory(url)(reactor)


def store_factory(url: str) -> Callable[[Any], IJobStore]:
    """Check ``url`` as a whole and return what builds its store on a reactor.

    ``twistd gearman`` checks ``--queue`` this way while it parses its options, before any
    reactor exists, so a malformed URL is a usage error and never a start-up failure.

    :raises ValueError: if ``url`` names no known backend or is malformed.
    """
    if url == "memory":
        from gearmanpy.store.memory import MemoryJobStore

        return lambda reactor: MemoryJobStore()
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"unknown queue {url!r}: {_HELP}")
    if scheme == "sqlite":
        if not rest or rest.startswith("//"):
            raise ValueError(f"sqlite queue needs a file path (sqlite:PATH), got {url!r}")
        from gearmanpy.store.sqlite import SQLiteJobStore

        path = os.path.abspath(rest)
        return lambda reactor: SQLiteJobStore(path, reactor)
    if scheme in ("postgresql", "postgres"):
        _check_postgres(url, rest)
        from gearmanpy.store.postgres import PostgresJobStore

        return lambda reactor: PostgresJobStore(url, reactor)
    if scheme == "redis":
        return _redis(url)
    raise ValueError(f"unknown queue {url!r}: {_HELP}")


def _check_postgres(url: str, rest: str) -> None:
    """Parse a PostgreSQL URL as libpq will (its own parser, through psycopg), and check
    that every port in it is a port number."""
    if not rest.startswith("//"):
        raise ValueError(f"PostgreSQL queue needs a URL postgresql://..., got {url!r}")
    try:
        from psycopg import Error
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise ValueError(
            'a PostgreSQL queue needs psycopg: pip install "gearmanpy[postgresql]"'
        ) from None
    try:
        params = conninfo_to_dict(url)
    except Error as e:
        reason = " ".join(str(e).split())
        raise ValueError(f"bad PostgreSQL queue URL {url!r}: {reason}") from None
    for port in str(params.get("port", "")).split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"bad port {port!r} in PostgreSQL queue URL {url!r}")


def _redis(url: str) -> Callable[[Any], IJobStore]:
    """What builds a Redis store for ``redis://[:password@]host[:port][/db]``."""
    from gearmanpy.store.redis import RedisJobStore

    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"bad port in Redis queue URL {url!r}") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"Redis queue URL needs a host: {url!r}")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"Redis database must be a number, got {path!r} in {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"Redis queue URL takes no query or fragment: {url!r}")
    password = unquote(parts.password) if parts.password else None
    db = int(path or 0)
    return lambda reactor: RedisJobStore(host, port, reactor, db=db, password=password)
