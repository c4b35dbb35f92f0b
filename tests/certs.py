"""Certificates made for the tests: a CA, a server certificate, client certificates good
and bad (another CA's, expired, without a name), written as PEM files in a directory."""

from __future__ import annotations

import datetime
import ipaddress
import os

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


@attrs.frozen
class Issued:
    """A key and its certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str) -> Issued:
    """A self-signed CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 30 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def issue(
    ca: Issued,
    cn: str | None,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    server: bool = False,
    expired: bool = False,
) -> Issued:
    """A leaf certificate signed by ``ca``."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = (NOW - 10 * DAY, NOW - DAY) if expired else (NOW - DAY, NOW + 30 * DAY)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn) if cn else x509.Name([]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=not cn)
    return Issued(key, builder.sign(ca.key, hashes.SHA256()))


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CertFiles:
    """Every certificate the TLS tests use, as files in ``directory``: ``path(name)`` for
    ``ca.pem``, ``server.pem``/``server.key`` (localhost, 127.0.0.1), and a client
    certificate and key per name: ``alice`` (CN alice, SAN alice.clients.test), ``other``
    (another CA's), ``expired``, ``worker`` (CN worker-1)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        ca, stranger = make_ca("gearmanpy test CA"), make_ca("some other CA")
        self.ca = ca
        self._write("ca.pem", cert_pem(ca.cert))
        self._write("other-ca.pem", cert_pem(stranger.cert))
        server = issue(ca, "localhost", dns=("localhost",), ips=("127.0.0.1",), server=True)
        self._pair("server", server)
        self._pair("alice", issue(ca, "alice", dns=("alice.clients.test",)))
        self._pair("worker", issue(ca, "worker-1"))
        self._pair("other", issue(stranger, "alice"))
        self._pair("expired", issue(ca, "alice", expired=True))
        self._pair("wrong-host", issue(ca, "elsewhere.test", dns=("elsewhere.test",), server=True))

    def _pair(self, name: str, issued: Issued) -> None:
        self._write(f"{name}.pem", cert_pem(issued.cert))
        self._write(f"{name}.key", key_pem(issued.key))

    def _write(self, name: str, data: bytes) -> None:
        with open(os.path.join(self.directory, name), "wb") as f:
            f.write(data)

    def path(self, name: str) -> str:
        """The file ``name`` (``ca.pem``, ``alice.key``...)."""
        return os.path.join(self.directory, name)
