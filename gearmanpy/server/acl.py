# -*- test-case-name: tests.test_acl -*-
"""Who may do what: peer identities, grants by glob on function names, the ``--acl`` file.

A peer's :class:`Identity` is its address (loopback, a unix socket, an IP in some CIDR) and,
over TLS, the names of its verified client certificate (the subject's CN and every SAN). An
:class:`Acl` holds :class:`Grant`\\ s: an identity pattern, a permission (``submit``,
``register``, ``status``, ``admin``) and a glob on function names. Each connection asks it
once for its :class:`Permissions`, which caches every answer per function name, so a
pipelining client pays for a glob match once per function, not once per packet; when the
grants change (``acl grant``, ``acl revoke``, a reload) every live connection's answers are
recomputed.

Without a file the defaults keep every gearmand client working: anyone may submit, register
and read status; ``admin`` (the commands that change or stop the server) is for loopback and
unix-socket peers only.
"""

from __future__ import annotations

import ipaddress
import tomllib
import weakref
from collections.abc import Callable, Iterable, Sequence
from fnmatch import fnmatchcase

import attrs
from twisted.logger import Logger

SUBMIT = "submit"
REGISTER = "register"
STATUS = "status"
ADMIN = "admin"
#: Every permission, in the order ``acl list`` shows them.
PERMISSIONS = (SUBMIT, REGISTER, STATUS, ADMIN)

#: Identity patterns that name no address or certificate.
ANYONE, LOOPBACK, UNIX, CERT = "anyone", "loopback", "unix", "cert:"

#: Answers one connection keeps per permission before it forgets them all (a peer naming
#: millions of functions must not grow the server without bound).
CACHE_LIMIT = 4096

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AclError(ValueError):
    """A permissions file or an ``acl`` command that cannot be understood (says why)."""


@attrs.frozen
class Identity:
    """What the server knows of a peer: where it connects from, and its certificate.

    :ivar address: its IP address (None for a unix socket, or an unknown transport).
    :ivar unix: it connected over a unix socket.
    :ivar names: the verified client certificate's CN and SANs (empty without one).
    """

    address: IPAddress | None = None
    unix: bool = False
    names: tuple[str, ...] = ()

    @classmethod
    def from_host(cls, host: str, unix: bool = False, names: Sequence[str] = ()) -> Identity:
        """The identity of a peer at ``host`` (an IP as Twisted gives it; ``::ffff:a.b.c.d``
        counts as ``a.b.c.d``)."""
        address: IPAddress | None = None
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return cls(address, unix, tuple(names))

    def with_names(self, names: Sequence[str]) -> Identity:
        """This identity, known also by a verified certificate's ``names``."""
        return attrs.evolve(self, names=tuple(names))

    @property
    def loopback(self) -> bool:
        """Connected from this host over IP (127.0.0.0/8 or ::1)."""
        return self.address is not None and self.address.is_loopback

    def __str__(self) -> str:
        """For log lines and refusals: ``cert:alice at 10.0.0.5``, ``10.0.0.5``, ``unix socket``."""
        where = "unix socket" if self.unix else str(self.address or "unknown address")
        if self.names:
            return f"cert:{self.names[0]} at {where}"
        return where


def check_pattern(who: str) -> str:
    """``who`` if it is an identity pattern :func:`matches` understands.

    :raises AclError: saying what patterns look like.
    """
    if who in (ANYONE, LOOPBACK, UNIX) or (who.startswith(CERT) and len(who) > len(CERT)):
        return who
    try:
        ipaddress.ip_network(who, strict=False)
    except ValueError:
        raise AclError(
            f"unknown identity {who!r}: expected anyone, loopback, unix, cert:NAME-GLOB, "
            "an IP address or a CIDR such as 10.0.0.0/8"
        ) from None
    return who


def matches(who: str, identity: Identity) -> bool:
    """Whether the identity pattern ``who`` (see :func:`check_pattern`) names ``identity``."""
    if who == ANYONE:
        return True
    if who == LOOPBACK:
        return identity.loopback
    if who == UNIX:
        return identity.unix
    if who.startswith(CERT):
        glob = who[len(CERT) :].lower()
        return any(fnmatchcase(name.lower(), glob) for name in identity.names)
    if identity.address is None:
        return False
    network = ipaddress.ip_network(who, strict=False)
    return network.version == identity.address.version and identity.address in network


@attrs.frozen
class Grant:
    """``who`` may ``permission`` on the functions whose names match ``functions`` (a glob)."""

    who: str = attrs.field(converter=check_pattern)
    permission: str = attrs.field()
    functions: str = "*"

    @permission.validator
    def _known(self, attribute: object, value: str) -> None:
        if value not in PERMISSIONS:
            raise AclError(
                f"unknown permission {value!r}: expected one of {', '.join(PERMISSIONS)}"
            )


def default_grants(admin_from: Iterable[str] = ()) -> list[Grant]:
    """What applies without ``--acl``: anyone submits, registers and reads status; admin is for
    loopback and unix peers, and the identities in ``admin_from`` (``--admin-from``)."""
    grants = [Grant(ANYONE, p) for p in (SUBMIT, REGISTER, STATUS)]
    return grants + [Grant(who, ADMIN) for who in (LOOPBACK, UNIX, *admin_from)]


def _strings(value: object, where: str) -> list[str]:
    """A TOML string or list of strings, as a list."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise AclError(f"{where} must be a string or a list of strings")


def parse_acl(text: str, source: str = "the permissions file") -> list[Grant]:
    """The grants of a permissions file::

        [[grant]]
        to = ["cert:billing-*", "10.1.0.0/16"]   # who (one string or a list)
        submit = ["billing.*"]                   # globs on function names, per permission
        status = ["*"]

    :raises AclError: naming the file and what is wrong with it.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise AclError(f"{source}: {e}") from None
    unknown = set(data) - {"grant"}
    if unknown:
        raise AclError(f"{source}: unknown table {sorted(unknown)[0]!r} (expected [[grant]])")
    entries = data.get("grant", [])
    if not isinstance(entries, list):
        raise AclError(f"{source}: grant must be an array of tables ([[grant]])")
    grants: list[Grant] = []
    for n, entry in enumerate(entries, 1):
        where = f"{source}: grant #{n}"
        if not isinstance(entry, dict):
            raise AclError(f"{where} must be a table ([[grant]])")
        extra = set(entry) - {"to", *PERMISSIONS}
        if extra:
            raise AclError(f"{where}: unknown key {sorted(extra)[0]!r}")
        if "to" not in entry:
            raise AclError(f"{where}: says whom it is for with to = [...]")
        for who in _strings(entry["to"], f"{where}: to"):
            for permission in PERMISSIONS:
                for glob in _strings(entry.get(permission, []), f"{where}: {permission}"):
                    try:
                        grants.append(Grant(who, permission, glob))
                    except AclError as e:
                        raise AclError(f"{where}: {e}") from None
    return grants


def read_acl(path: str) -> list[Grant]:
    """The grants in the file at ``path``.

    :raises AclError: if it cannot be read or understood (naming the file).
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise AclError(f"cannot read {path}: {reason}") from None
    return parse_acl(text, path)


class Acl:
    """The server's grants, shared by every connection and the admin commands.

    :ivar source: the file the grants came from (None: the defaults), re-read by :meth:`reload`.
    """

    log = Logger()

    def __init__(
        self,
        grants: Iterable[Grant] | None = None,
        *,
        source: str | None = None,
        admin_from: Sequence[str] = (),
    ) -> None:
        """
        :param grants: the grants; without them, those of ``source`` or the defaults.
        :param source: a permissions file (read now if ``grants`` is not given).
        :param admin_from: identity patterns given admin on everything besides the grants
            (``--admin-from``).
        :raises AclError: for a file that cannot be read or understood.
        """
        self.source = source
        self.admin_from = [check_pattern(who) for who in admin_from]
        self.grants: list[Grant] = []
        self._live: weakref.WeakSet[Permissions] = weakref.WeakSet()
        self.replace(self._load() if grants is None else list(grants))

    def _load(self) -> list[Grant]:
        """The file's grants (or the defaults), with ``admin_from``'s added."""
        if self.source is None:
            return default_grants(self.admin_from)
        return read_acl(self.source) + [Grant(who, ADMIN) for who in self.admin_from]

    def reload(self) -> None:
        """Read the file again (or go back to the defaults): what ``acl grant``/``revoke``
        changed is lost. On an error the grants stay as they were.

        :raises AclError: saying what is wrong.
        """
        self.replace(self._load())

    def replace(self, grants: list[Grant]) -> None:
        """Put ``grants`` in force for every connection, live ones included."""
        self.grants = grants
        for permissions in list(self._live):
            permissions.refresh()

    def grant(self, grant: Grant) -> bool:
        """Add ``grant``; False if it was there already."""
        if grant in self.grants:
            return False
        self.replace([*self.grants, grant])
        return True

    def revoke(self, grant: Grant) -> bool:
        """Remove ``grant``; False if there was no such grant."""
        if grant not in self.grants:
            return False
        self.replace([g for g in self.grants if g != grant])
        return True

    def for_peer(
        self, identity: Identity, on_change: Callable[[], None] | None = None
    ) -> Permissions:
        """The permissions of a peer with ``identity``, kept up to date as the grants change
        (``on_change`` is called after each change)."""
        permissions = Permissions(self, identity, on_change)
        self._live.add(permissions)
        return permissions

    def forget(self, permissions: Permissions) -> None:
        """A connection closed: its permissions are no longer kept up to date."""
        self._live.discard(permissions)
        permissions._on_change = None

    def globs_for(self, identity: Identity) -> dict[str, tuple[str, ...]]:
        """Per permission, the function globs granted to ``identity``."""
        globs: dict[str, list[str]] = {p: [] for p in PERMISSIONS}
        for g in self.grants:
            if matches(g.who, identity):
                globs[g.permission].append(g.functions)
        return {p: tuple(dict.fromkeys(v)) for p, v in globs.items()}


class Permissions:
    """One connection's rights: what the protocol and the admin commands ask before acting.

    Answers are cached per (permission, function name); a refusal is logged the first time
    it is given on this connection, with the identity.
    """

    __slots__ = ("_acl", "identity", "_on_change", "_globs", "_cache", "__weakref__")

    log = Logger()

    def __init__(
        self, acl: Acl, identity: Identity, on_change: Callable[[], None] | None = None
    ) -> None:
        self._acl = acl
        self.identity = identity
        self._on_change = on_change
        self._globs = acl.globs_for(identity)
        self._cache: dict[str, dict[bytes | None, bool]] = {p: {} for p in PERMISSIONS}

    def refresh(self, identity: Identity | None = None) -> None:
        """Recompute from the grants (after they changed, or the identity became known), and
        tell the connection."""
        if identity is not None:
            self.identity = identity
        self._globs = self._acl.globs_for(self.identity)
        self._cache = {p: {} for p in PERMISSIONS}
        if self._on_change is not None:
            self._on_change()

    def unrestricted(self, permission: str) -> bool:
        """Whether ``permission`` is granted on every function (nothing need be checked)."""
        return "*" in self._globs[permission]

    def allows(self, permission: str, name: bytes | None) -> bool:
        """Whether ``permission`` is granted on the function ``name`` (None: on every
        function, as the commands that name none need)."""
        cache = self._cache[permission]
        answer = cache.get(name)
        if answer is None:
            if len(cache) >= CACHE_LIMIT:
                cache.clear()
            globs = self._globs[permission]
            if name is None:
                answer = "*" in globs
            else:
                text = name.decode("utf-8", "surrogateescape")
                answer = any(fnmatchcase(text, glob) for glob in globs)
            cache[name] = answer
            if not answer:
                self.log.warn(
                    "refused {permission} on {what} to {identity} (no grant; further "
                    "refusals of the same are not logged)",
                    permission=permission,
                    what=refused_what(name),
                    identity=str(self.identity),
                )
        return answer

    def refusal(self, permission: str, name: bytes | None) -> str:
        """Why ``permission`` on ``name`` is refused, for the peer: one line."""
        return f"{permission} on {refused_what(name)} is not granted to {self.identity}"


def refused_what(name: bytes | None) -> str:
    """``function 'resize'`` or ``every function``, for messages."""
    if name is None:
        return "every function"
    text = name.decode("utf-8", "backslashreplace")
    return f"function {text!r}"
