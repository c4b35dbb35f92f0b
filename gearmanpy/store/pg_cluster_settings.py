# -*- test-case-name: tests.test_pg_cluster_settings -*-
"""The cluster's shared settings in PostgreSQL: ``maxqueue`` limits and the failure policy's
run-time changes (``policy set``), one row each in ``<table>_settings`` (mixed into the
cluster's backend and store).

A row is ``(kind, key, value)``: ``maxqueue`` with a function's name and its three limits
(high, normal, low; zeros are kept, since they take back a configured limit), or ``policy``
with a pattern and its changed settings (``policy set`` merges into the row, ``policy reset``
deletes it). Every write returns the whole table as it commits, and announces the change on
the queue's channel with the payload ``s:``, which no job wake-up (a function's name in hex)
or event (``e:...``) can be; the nodes also read the table at each lease tick, in case a
notification was lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

READ_SETTINGS = "cluster_read_settings"
PUT_SETTING = "cluster_put_setting"
DROP_SETTING = "cluster_drop_setting"
SETTINGS_OPS = frozenset({READ_SETTINGS, PUT_SETTING, DROP_SETTING})

#: The two kinds of rows.
MAXQUEUE = "maxqueue"
POLICY = "policy"

#: The notification payload of a settings change.
SETTINGS_PAYLOAD = "s:"

SETTINGS_SCHEMA = """
CREATE TABLE IF NOT EXISTS {table}_settings (
    kind TEXT NOT NULL,
    key BYTEA NOT NULL,
    value JSONB NOT NULL,
    PRIMARY KEY (kind, key)
)
"""

#: One setting as read: (kind, key, value).
Setting = tuple[str, bytes, Any]


def settings_statements(t: str) -> dict[str, str]:
    """The statements of the settings table of the queue table ``t``."""
    return {
        READ_SETTINGS: f"SELECT kind, key, value FROM {t}_settings ORDER BY kind, key",
        # maxqueue replaces its limits; policy merges its settings into the pattern's.
        "put_replace": f"INSERT INTO {t}_settings (kind, key, value) VALUES (%s, %b, %s::jsonb)"
        " ON CONFLICT (kind, key) DO UPDATE SET value = EXCLUDED.value",
        "put_merge": f"INSERT INTO {t}_settings AS s (kind, key, value)"
        " VALUES (%s, %b, %s::jsonb)"
        " ON CONFLICT (kind, key) DO UPDATE SET value = s.value || EXCLUDED.value",
        DROP_SETTING: f"DELETE FROM {t}_settings WHERE kind = %s AND key = %b RETURNING 1",
        "settings_notify": "SELECT pg_notify(%s, %s)",
    }


class SettingsOps:
    """The settings ops of the cluster's backend (writer thread)."""

    _cluster_sql: dict[str, str]
    channel: str

    def _setup_settings(self, cur: Any, table: str) -> None:
        """Create the settings table (at setup, under the cluster's advisory lock)."""
        cur.execute(SETTINGS_SCHEMA.format(table=table))

    def _read_settings(self, cur: Any) -> list[Setting]:
        """Every setting, by kind and key."""
        cur.execute(self._cluster_sql[READ_SETTINGS])
        return [(str(kind), bytes(key), value) for kind, key, value in cur.fetchall()]

    def _cluster_read_settings(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Any]:
        """The table, once for a run of reads."""
        rows = self._read_settings(cur)
        return [rows] * len(runs)

    def _cluster_put_setting(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Any]:
        """Write each setting (merged for a policy), announce it; the table after each."""
        out = []
        for kind, key, value in runs:
            statement = "put_merge" if kind == POLICY else "put_replace"
            cur.execute(self._cluster_sql[statement], (kind, key, json.dumps(value)))
            out.append((True, self._read_settings(cur)))
        self._announce(cur)
        return out

    def _cluster_drop_setting(self, cur: Any, runs: list[tuple[Any, ...]]) -> list[Any]:
        """Delete each setting; whether it was there, and the table after each."""
        out = []
        for kind, key in runs:
            cur.execute(self._cluster_sql[DROP_SETTING], (kind, key))
            out.append((cur.fetchone() is not None, self._read_settings(cur)))
        self._announce(cur)
        return out

    def _announce(self, cur: Any) -> None:
        """Tell every node the settings changed (sent at commit)."""
        cur.execute(self._cluster_sql["settings_notify"], (self.channel, SETTINGS_PAYLOAD))


class SettingsStore:
    """The settings methods of the cluster's store."""

    _writer: Any
    #: Called with the table once the store has opened (the node applies it before it
    #: takes any submission).
    on_settings: Callable[[list[Setting]], None] | None = None

    def _open_settings(self) -> Deferred[None] | None:
        """Read the table for :attr:`on_settings` (at open)."""
        if self.on_settings is None:
            return None
        return self.read_settings().addCallback(self.on_settings)

    def read_settings(self) -> Deferred[list[Setting]]:
        """Every shared setting: (kind, key, value), by kind and key."""
        d: Deferred[list[Setting]] = self._writer.submit(READ_SETTINGS)
        return d

    def put_setting(self, kind: str, key: bytes, value: Any) -> Deferred[tuple[bool, Any]]:
        """Write a setting (a policy's settings merge into the pattern's row); fires once
        committed with (True, the table as it committed)."""
        d: Deferred[tuple[bool, Any]] = self._writer.submit(PUT_SETTING, kind, key, value)
        return d

    def drop_setting(self, kind: str, key: bytes) -> Deferred[tuple[bool, Any]]:
        """Delete a setting; fires once committed with (whether it was there, the table)."""
        d: Deferred[tuple[bool, Any]] = self._writer.submit(DROP_SETTING, kind, key)
        return d


__all__ = [
    "DROP_SETTING",
    "MAXQUEUE",
    "POLICY",
    "PUT_SETTING",
    "READ_SETTINGS",
    "SETTINGS_OPS",
    "SETTINGS_PAYLOAD",
    "SETTINGS_SCHEMA",
    "Setting",
    "SettingsOps",
    "SettingsStore",
    "settings_statements",
]
