"""gearmanpy.protocol.text.show: wire bytes as one line of text."""

from __future__ import annotations

from gearmanpy.protocol.text import show


def test_show() -> None:
    assert show(b"H:host:1") == "H:host:1"
    assert show("dé".encode()) == "dé"
    assert show(b"\x00BAD\n\xff") == "\\x00BAD\\x0a\\xff"
    assert show(None) == "-"
