# -*- test-case-name: tests.test_web_api -*-
"""Who may act through the HTTP API (cancel a job), and the checks against cross-site requests.

Reading is open to whoever can reach the listener. An action is refused unless:

* it is a ``POST`` carrying the ``X-Gearmanpy-Action`` header: a page on another site cannot
  send a custom header without a CORS preflight, which this server never approves;
* its ``Origin`` (when the browser sends one) names the host it was sent to, and
  ``Sec-Fetch-Site`` (when sent) is not ``cross-site``;
* it is authorised: with ``--http-token-file``, ``Authorization: Bearer <token>``; without,
  it comes from a loopback address and names a loopback host (so a DNS-rebinding page, whose
  Host is its own name, is refused too).
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

import attrs
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.web.iweb import IRequest

#: The header every action must carry (its value does not matter).
ACTION_HEADER = b"x-gearmanpy-action"

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def read_token(path: str) -> bytes:
    """The token in the file at ``path``, without surrounding white space.

    :raises ValueError: if the file cannot be read or holds no token.
    """
    try:
        with open(path, "rb") as f:
            token = f.read().strip()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    if not token or len(token.split()) != 1:
        raise ValueError(f"{path} must hold one token (no spaces), and holds none")
    return token


def is_loopback_host(host: str) -> bool:
    """Whether a Host header's name (port removed) is a loopback name or address."""
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """``host`` (a Host header or an Origin's netloc) without its port."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def from_loopback(request: IRequest) -> bool:
    """Whether the request came over a loopback address or a unix socket."""
    peer = request.getClientAddress()
    if isinstance(peer, UNIXAddress):
        return True
    if isinstance(peer, IPv4Address | IPv6Address):
        try:
            address = ipaddress.ip_address(peer.host.split("%", 1)[0])
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))
    return False


@attrs.define(eq=False)
class ActionGuard:
    """Decides whether a request may change the server.

    :ivar token: the bearer token actions need, or None: loopback only.
    """

    token: bytes | None = None

    def refusal(self, request: IRequest) -> tuple[int, str] | None:
        """Why ``request`` may not act (HTTP status and reason), or None if it may."""
        if request.method != b"POST":
            return 405, "actions are POST requests"
        if not request.getHeader(ACTION_HEADER):
            return 403, "an action needs the X-Gearmanpy-Action header"
        host = (request.getHeader(b"host") or b"").decode("latin-1")
        origin = request.getHeader(b"origin")
        if origin is not None and origin != b"null":
            if urlsplit(origin.decode("latin-1")).netloc.lower() != host.lower():
                return 403, "cross-origin actions are refused"
        elif origin == b"null":
            return 403, "cross-origin actions are refused"
        if request.getHeader(b"sec-fetch-site") == b"cross-site":
            return 403, "cross-site actions are refused"
        if self.token is not None:
            given = request.getHeader(b"authorization") or b""
            scheme, _, value = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), self.token):
                return 401, "this action needs the token of --http-token-file"
            return None
        if not from_loopback(request) or not is_loopback_host(_host_name(host)):
            return 403, "without --http-token-file, actions are accepted from loopback only"
        return None


__all__ = ["ACTION_HEADER", "ActionGuard", "is_loopback_host", "read_token"]
