"""README.rst's literal blocks, for the tests that run its examples."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.rst"


def code_block_after(marker: str) -> str:
    """The literal block (``::`` then indented lines) that follows ``marker`` in README.rst."""
    text = README.read_text()
    start = text.index(marker)
    block = text[text.index("::\n", start) + 3 :]
    lines = []
    for line in block.split("\n")[1:]:
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines).strip() + "\n"


def example_commands() -> dict[str, list[str]]:
    """The ``python examples/NAME.py ARGS`` commands of README.rst's *Examples* section:
    the arguments of each script, by script name."""
    text = README.read_text()
    section = text[text.index("\nExamples\n") : text.index("\nPersistent queues\n")]
    flat = " ".join(section.split())
    commands = re.findall(r"``python examples/(\w+\.py)([^`]*)``", flat)
    return {name: shlex.split(args) for name, args in commands}
