"""The ``gearmanpy`` command line: one console script with a subcommand per task.

``submit`` (:mod:`.submit`), ``worker`` (:mod:`.worker`), ``admin`` (:mod:`.admin`),
``top`` (:mod:`.top`) and ``server`` (:mod:`.server`); :mod:`.common` holds what they
share (the servers, one-line errors, running on the reactor).
"""

from __future__ import annotations

import click

from gearmanpy._version import __version__
from gearmanpy.cli.admin import admin
from gearmanpy.cli.admin_policy import COMMANDS as POLICY_COMMANDS
from gearmanpy.cli.server import server
from gearmanpy.cli.submit import submit
from gearmanpy.cli.top import top
from gearmanpy.cli.worker import worker

EPILOG = """\b
Quick start:
  gearmanpy server                          # a job server on 127.0.0.1:4730
  gearmanpy worker -f reverse -- rev        # a worker running `rev` per job
  echo hello | gearmanpy submit reverse     # prints olleh
  gearmanpy top                             # watch the queues
"""


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gearmanpy")
def main() -> None:
    """gearmanpy: a Gearman job server, client and worker, on Twisted."""


for _command in POLICY_COMMANDS:  # gearmanpy's own admin commands (the failure policy)
    admin.add_command(_command)
main.add_command(admin)
main.add_command(submit)
main.add_command(worker)
main.add_command(server)
main.add_command(top)


__all__ = ["main"]
