"""gearmanpy: a Gearman job server, client and worker library built on Twisted.

The public names are re-exported lazily (PEP 562), so importing a sans-I/O module such as
``gearmanpy.protocol.packets`` does not pull in the client, the worker or Twisted.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gearmanpy._version import __version__

_EXPORTS = {
    "Client": "gearmanpy.client",
    "Job": "gearmanpy.client",
    "JobStatus": "gearmanpy.client",
    "Priority": "gearmanpy.protocol.packets",
    "WorkData": "gearmanpy.client",
    "WorkStatus": "gearmanpy.client",
    "WorkWarning": "gearmanpy.client",
    "Worker": "gearmanpy.worker",
    "WorkerJob": "gearmanpy.worker",
    "GearmanError": "gearmanpy.errors",
    "JobError": "gearmanpy.errors",
    "JobException": "gearmanpy.errors",
    "JobFailed": "gearmanpy.errors",
    "JobLost": "gearmanpy.errors",
    "JobTimeout": "gearmanpy.errors",
    "NoServersAvailable": "gearmanpy.errors",
    "ProtocolError": "gearmanpy.errors",
    "RequestLost": "gearmanpy.errors",
    "ServerError": "gearmanpy.errors",
    "TLSHandshakeError": "gearmanpy.errors",
    "ClientTLS": "gearmanpy._connection",
}

__all__ = [
    "Client",
    "ClientTLS",
    "GearmanError",
    "Job",
    "JobError",
    "JobException",
    "JobFailed",
    "JobLost",
    "JobStatus",
    "JobTimeout",
    "NoServersAvailable",
    "Priority",
    "ProtocolError",
    "RequestLost",
    "ServerError",
    "TLSHandshakeError",
    "WorkData",
    "WorkStatus",
    "WorkWarning",
    "Worker",
    "WorkerJob",
    "__version__",
    "compiled",
]

if TYPE_CHECKING:
    from gearmanpy._connection import ClientTLS
    from gearmanpy.client import Client, Job, JobStatus, WorkData, WorkStatus, WorkWarning
    from gearmanpy.errors import (
        GearmanError,
        JobError,
        JobException,
        JobFailed,
        JobLost,
        JobTimeout,
        NoServersAvailable,
        ProtocolError,
        RequestLost,
        ServerError,
        TLSHandshakeError,
    )
    from gearmanpy.protocol.packets import Priority
    from gearmanpy.worker import Worker, WorkerJob

    compiled: bool


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name == "compiled":
        # True when the hot path runs as mypyc-compiled extension modules (the compiled
        # build), False for the pure-Python one (gearmanpy/_compiled.py).
        from gearmanpy._compiled import is_compiled

        globals()["compiled"] = value = is_compiled()
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gearmanpy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the public names too."""
    return sorted(set(globals()) | set(_EXPORTS) | {"compiled"})
