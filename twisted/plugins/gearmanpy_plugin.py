"""The ``twistd gearman`` plugin: a Gearman job server (see gearmanpy.tap)."""

from twisted.application.service import ServiceMaker

gearmanpy_server = ServiceMaker(
    "gearmanpy",
    "gearmanpy.tap",
    "A Gearman job server, wire-compatible with gearmand",
    "gearman",
)
