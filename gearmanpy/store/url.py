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
    if url == "memory":
        from gearmanpy.store.memory import MemoryJobStore

        return MemoryJobStore()
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"unknown queue {url!r}: {_HELP}")
    if scheme == "sqlite":
        if not rest or rest.startswith("//"):
            raise ValueError(f"sqlite queue needs a file path (sqlite:PATH), got {url!r}")
        from gearmanpy.store.sqlite import SQLiteJobStore

        return SQLiteJobStore(os.path.abspath(rest), reactor)
    if scheme in ("postgresql", "postgres"):
        if not rest.startswith("//"):
            raise ValueError(f"PostgreSQL queue needs a URL postgresql://..., got {url!r}")
        from gearmanpy.store.postgres import PostgresJobStore

        return PostgresJobStore(url, reactor)
    if scheme == "redis":
        return _redis(url, reactor)
    raise ValueError(f"unknown queue {url!r}: {_HELP}")


def _redis(url: str, reactor: Any) -> IJobStore:
    """A Redis store for ``redis://[:password@]host[:port][/db]``."""
    from gearmanpy.store.redis import RedisJobStore

    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError as e:
        raise ValueError(f"bad port in Redis queue URL {url!r}") from e
    if not parts.hostname:
        raise ValueError(f"Redis queue URL needs a host: {url!r}")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"Redis database must be a number, got {path!r} in {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"Redis queue URL takes no query or fragment: {url!r}")
    password = unquote(parts.password) if parts.password else None
    return RedisJobStore(parts.hostname, port, reactor, db=int(path or 0), password=password)
