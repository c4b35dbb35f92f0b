"""The command-line options every example script shares (README.rst, *Examples*): the job
server's address, and memcached's for the word-count scripts."""

from __future__ import annotations

import argparse


def example_parser(doc: str, *, memcached: bool = False) -> argparse.ArgumentParser:
    """A parser described by the first line of the script's ``doc``, with ``--gearman``
    (and ``--memcached`` if asked for) already added."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--gearman", default="127.0.0.1:4730", help="job server host:port")
    if memcached:
        parser.add_argument("--memcached", default="127.0.0.1:11211", help="memcached host:port")
    return parser
