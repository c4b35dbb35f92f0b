# -*- test-case-name: tests.test_web_api -*-
"""The HTTP listener's factory for ``twistd gearman --http``: its site, sampler and options.

:func:`build` puts the pieces of this room together for one core. The site starts the
once-a-second sampler when its port starts listening and stops it when the port closes, so
the sampler lives exactly as long as the listener (which the server's service binds, opens
and closes with its other endpoints).
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource

from gearmanpy.server.core import JobServerCore
from gearmanpy.web.auth import ActionGuard
from gearmanpy.web.history import History
from gearmanpy.web.metrics import registry
from gearmanpy.web.site import QuietSite, build_root
from gearmanpy.web.views import Views


class DashboardSite(QuietSite):
    """The site, owning the sampler: it samples while the site listens."""

    def __init__(self, resource: Resource, views: Views) -> None:
        super().__init__(resource)
        self.views = views

    def startFactory(self) -> None:
        """Listening: count the uptime from now and start sampling."""
        super().startFactory()
        self.views.started = self.views.core.clock.seconds()
        if not self.views.history.running:
            self.views.history.startService()

    def stopFactory(self) -> None:
        """Closed: stop sampling."""
        super().stopFactory()
        if self.views.history.running:
            self.views.history.stopService()


def build(
    core: JobServerCore,
    clock: IReactorTime,
    token: bytes | None = None,
    store: str = "memory",
    interval: float = 1.0,
) -> DashboardSite:
    """The site for ``core``: dashboard, JSON API and ``/metrics``.

    :param token: what actions need (``--http-token-file``); None: loopback only.
    :param store: the store's name for the dashboard (without its password).
    :param interval: seconds between the charts' samples.
    """
    history = History(core, clock, interval=interval)
    views = Views(core, history, started=clock.seconds(), store=store)
    return DashboardSite(build_root(views, registry(core), ActionGuard(token)), views)


__all__ = ["DashboardSite", "build"]
