"""A certificate authority of the stack's own and the server certificates it signs.

One piece of code for every TLS server the project runs: the native stack's Kafka broker
(stack/kafka_security.py, a PKCS#12 key store made from `issue_server`) and the Compose stack's
PostgreSQL (utils/pg_tls.py, PEM files). Keys are ECDSA P-256, signatures SHA-256, which every
client here (libpq/OpenSSL, the JDK, Python's ssl) accepts.

The CA's key never leaves the directory it was made in (0600): whoever holds `ca.pem` can check a
server, not sign one. Clients are given `ca.pem` only.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `cryptography` is imported where certificates are made, not at import time
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.x509 import Certificate

log = logging.getLogger(__name__)

# Certificates for a development or single-host stack: long enough never to expire under a
# running checkout. docs/security.md says how to rotate them sooner.
CERT_DAYS = 3650
CA_CERT = "ca.pem"
CA_KEY = "ca.key"


@dataclass(frozen=True)
class Authority:
    """A CA: its certificate and the key that signs with it."""

    cert: Certificate
    key: EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.cert.public_bytes(serialization.Encoding.PEM)


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Atomically, with `mode` from the first byte (the umask never widens a key's mode)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), mode)
        fh.write(data)
    os.replace(tmp, path)


def ensure_authority(ca_dir: Path, common_name: str = "txmon local stack CA") -> Authority:
    """The CA in `ca_dir` (`ca.pem`, `ca.key`), made on first use and loaded after that."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = ca_dir / CA_CERT, ca_dir / CA_KEY
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not the ECDSA key this module makes")
        return Authority(x509.load_pem_x509_certificate(cert_path.read_bytes()), key)
    ca_dir.mkdir(parents=True, exist_ok=True)
    ca_dir.chmod(0o700)
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_file(key_path, key_pem, 0o600)
    authority = Authority(cert, key)
    write_file(cert_path, authority.cert_pem(), 0o644)
    log.info("made a CA (%s) in %s", common_name, ca_dir)
    return authority


def subject_names(hostnames: tuple[str, ...]) -> list[object]:
    """`hostnames` as subject alternative names: IP addresses as such, the rest as DNS names
    (libpq's verify-full and Python's ssl match an IP only against an IP entry)."""
    from cryptography import x509

    names: list[object] = []
    for h in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return names


def issue_server(
    authority: Authority, hostnames: tuple[str, ...]
) -> tuple[Certificate, EllipticCurvePrivateKey]:
    """A server certificate for `hostnames` (the first is its common name), signed by `authority`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not hostnames:
        raise ValueError("a server certificate needs at least one host name")
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(subject_names(hostnames)), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )
    return cert, key


def certificate_names(cert: Certificate) -> set[str]:
    """The DNS names and IP addresses a certificate is valid for (its subject alternative names)."""
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(san.get_values_for_type(x509.DNSName)) | {
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    }


def valid_for(
    cert_path: Path, authority: Authority, hostnames: tuple[str, ...], *, min_days: int = 30
) -> bool:
    """Does the certificate at `cert_path` exist, come from `authority`, cover every one of
    `hostnames` (names are compared as written, IPs normalised) and stay valid `min_days` more?"""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    wanted = {str(ipaddress.ip_address(h)) if _is_ip(h) else h for h in hostnames}
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    try:
        cert.verify_directly_issued_by(authority.cert)  # this CA's signature, not a namesake's
    except (ValueError, TypeError, InvalidSignature):
        return False
    return wanted <= certificate_names(cert) and left > datetime.timedelta(days=min_days)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
