"""``gearmanpy server``: ``twistd -n gearman`` in the foreground, in fewer words.

Every option after ``server`` is ``twistd gearman``'s (``gearmanpy server --help`` lists
them); without ``--pidfile`` no pid file is written, so two servers may run from one
directory.
"""

from __future__ import annotations

import sys

import click

EPILOG = """\b
Examples:
  gearmanpy server                                   # 127.0.0.1:4730, jobs in memory
  gearmanpy server --listen tcp:4730 --queue sqlite:///var/lib/gearman/jobs.db
  gearmanpy server --help                            # every twistd gearman option
"""


@click.command(
    "server",
    epilog=EPILOG,
    add_help_option=False,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("options", nargs=-1, type=click.UNPROCESSED)
def server(options: tuple[str, ...]) -> None:
    """Run a job server in the foreground (the options are twistd gearman's)."""
    from twisted.scripts.twistd import run

    pidfile = any(o == "--pidfile" or o.startswith("--pidfile=") for o in options)
    argv = ["twistd", "--nodaemon", *([] if pidfile else ["--pidfile="]), "gearman", *options]
    sys.argv = argv
    run()


__all__ = ["server"]
