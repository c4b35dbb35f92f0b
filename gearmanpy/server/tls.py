# -*- test-case-name: tests.test_tls -*-
"""The server's TLS: a context built from ``--ssl-*`` files that verifies client certificates.

Twisted's ``ssl:`` endpoint encrypts but cannot require or verify a client certificate.
:class:`ServerTLS` builds the OpenSSL context itself: TLS 1.2 or later, no compression, the
server's certificate chain and key, and, with a CA file, client certificates verified against
it (chain and validity dates), required unless ``optional``. :meth:`ServerTLS.reload` builds
a new context from the same files (SIGHUP): connections made from then on use it, those
already open keep theirs, so nobody is dropped. :class:`TLSServerFactory` puts a listener's
connections behind it; :func:`certificate_names` gives the verified names an ACL knows a
peer by.
"""

from __future__ import annotations

from typing import Any

import attrs
from cryptography import x509
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IProtocolFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from gearmanpy._transport import openssl_reason

#: ``--ssl-client-cert``'s values.
REQUIRED, OPTIONAL = "required", "optional"


class TLSConfigError(ValueError):
    """The TLS files cannot be used; the message says which and why, in one line."""


@attrs.frozen
class TLSFiles:
    """The files ``--ssl-certificate``, ``--ssl-key`` and ``--ssl-ca-file`` name.

    :ivar certificate: the server's certificate (PEM), its intermediates after it.
    :ivar key: its private key (PEM).
    :ivar ca: CA certificates client certificates are verified against (None: clients are
        not asked for one).
    :ivar client_cert: ``required`` (a peer without a valid certificate fails the
        handshake) or ``optional`` (one that sends a certificate must send a valid one).
    """

    certificate: str
    key: str
    ca: str | None = None
    client_cert: str = attrs.field(default=REQUIRED)

    @client_cert.validator
    def _known(self, attribute: object, value: str) -> None:
        if value not in (REQUIRED, OPTIONAL):
            raise TLSConfigError(f"--ssl-client-cert takes required or optional, not {value!r}")


def build_context(files: TLSFiles) -> SSL.Context:
    """A server context from ``files``.

    :raises TLSConfigError: naming the file that cannot be used, and why.
    """
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    steps: list[tuple[str, str, Any]] = [
        ("--ssl-certificate", files.certificate, ctx.use_certificate_chain_file),
        ("--ssl-key", files.key, ctx.use_privatekey_file),
    ]
    for option, path, use in steps:
        try:
            use(path)
        except SSL.Error as e:
            reason = openssl_reason(e)
            if "mismatch" in reason:
                break  # said below
            raise TLSConfigError(f"{option} {path}: {reason}") from None
    try:
        ctx.check_privatekey()
    except SSL.Error:
        raise TLSConfigError(
            f"--ssl-key {files.key} is not the key of --ssl-certificate {files.certificate}"
        ) from None
    if files.ca is not None:
        _verify_clients(ctx, files)
    return ctx


def _verify_clients(ctx: SSL.Context, files: TLSFiles) -> None:
    """Ask clients for a certificate and verify it against ``files.ca``."""
    assert files.ca is not None
    try:
        ctx.load_verify_locations(files.ca)
        ctx.load_client_ca(files.ca.encode())  # the CA names sent with the request
    except SSL.Error as e:
        raise TLSConfigError(f"--ssl-ca-file {files.ca}: {openssl_reason(e)}") from None
    mode = SSL.VERIFY_PEER
    if files.client_cert == REQUIRED:
        mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
    ctx.set_verify(mode, _verified)
    # Sessions are resumed only on this server's contexts (OpenSSL refuses to resume
    # a verified session without an id context).
    ctx.set_session_id(b"gearmanpy")


def _verified(connection: SSL.Connection, cert: Any, errno: int, depth: int, ok: int) -> bool:
    """OpenSSL's verdict on each certificate of the chain stands."""
    return bool(ok)


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """Makes each TLS connection's OpenSSL object, from the context in force."""

    def __init__(self, files: TLSFiles) -> None:
        """:raises TLSConfigError: as :func:`build_context`."""
        self.files = files
        self.context = build_context(files)

    @property
    def verifies_clients(self) -> bool:
        """Whether clients are asked for a certificate (a CA file was given)."""
        return self.files.ca is not None

    def reload(self) -> None:
        """Read the files again; connections from now on use them, open ones keep theirs.

        :raises TLSConfigError: (the context in force stays) if they cannot be used.
        """
        self.context = build_context(self.files)

    def serverConnectionForTLS(self, protocol: Any) -> SSL.Connection:
        """A new connection on the current context."""
        return SSL.Connection(self.context, None)


class TLSServerFactory(TLSMemoryBIOFactory):
    """TLS in front of a listener's factory; a connection the factory refuses (None) is
    closed, as a plain port does."""

    def __init__(self, tls: ServerTLS, wrapped: IProtocolFactory, clock: Any = None) -> None:
        super().__init__(tls, False, wrapped, clock)

    def buildProtocol(self, addr: Any) -> Any:
        """The TLS layer over the wrapped factory's protocol, or None if it refused."""
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None
        inner.tls_pending = True  # the server protocol starts its handshake timer
        return self.protocol(self, inner)


def certificate_names(transport: Any) -> tuple[str, ...]:
    """The verified peer certificate's subject CNs and SANs (DNS names, IP addresses, e-mail
    addresses, URIs), CN first; empty without a certificate."""
    peer = transport.getPeerCertificate() if transport is not None else None
    if peer is None:
        return ()
    cert = peer.to_cryptography()
    names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        for kind in (x509.DNSName, x509.IPAddress, x509.RFC822Name, x509.UniformResourceIdentifier):
            names.extend(str(v) for v in san.get_values_for_type(kind))  # type: ignore[type-var]
    return tuple(dict.fromkeys(names))


def handshake_failure(reason: Failure) -> str | None:
    """Why a TLS handshake failed, in OpenSSL's words; None if ``reason`` is no TLS error."""
    if reason.check(SSL.Error) and reason.value is not None:
        return openssl_reason(reason.value)
    return None
