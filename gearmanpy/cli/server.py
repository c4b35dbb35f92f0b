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
  gearmanpy server                       # tcp:4730, the queue in ./gearmanpy.sqlite
  gearmanpy server --queue memory        # nothing kept across restarts
  gearmanpy server --listen tcp:4730:interface=127.0.0.1 --queue sqlite:/var/lib/gm.db
  gearmanpy server --help                # and every twistd gearman option
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

    if "--help" in options or "-h" in options:
        click.echo("Usage: gearmanpy server [TWISTD GEARMAN OPTIONS]\n")
        click.echo("  Run a job server in the foreground: twistd -n gearman.\n")
        click.echo(EPILOG.replace("\b\n", ""))
        options = tuple("--help" if o == "-h" else o for o in options)
    pidfile = any(o == "--pidfile" or o.startswith("--pidfile=") for o in options)
    argv = ["twistd", "--nodaemon", *([] if pidfile else ["--pidfile="]), "gearman", *options]
    sys.argv = argv
    run()


__all__ = ["server"]
