"""The stack's CA, the PostgreSQL server certificate and pg_hba.conf (utils/tls.py, utils/pg_tls.py).

The certificate is checked the way libpq's sslmode=verify-full checks it: a real TLS handshake
on loopback with Python's ssl (OpenSSL, as libpq), trusting only the CA, the host name checked.
"""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest

from stack import kafka_security
from utils import pg_tls, tls
from utils.roles import RoleNames

NAMES = RoleNames(owner="txmon_owner", app="txmon_app", retention="txmon_retention", console="txmon_console")
HOSTNAMES = ("postgres", "localhost", "127.0.0.1", "::1")


def _prepare(tmp_path: Path, **kwargs: object) -> bool:
    return pg_tls.prepare(
        tmp_path / "ca",
        tmp_path / "server",
        tmp_path / "trust",
        HOSTNAMES,
        "transactions",
        NAMES,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def dirs(tmp_path: Path) -> Path:
    for d in ("ca", "server", "trust"):
        (tmp_path / d).mkdir()
    return tmp_path


def handshake(server_dir: Path, cafile: Path, server_hostname: str) -> str:
    """A TLS handshake on 127.0.0.1 with the server's key pair, the client trusting only `cafile`
    and checking `server_hostname`; returns the negotiated version or raises the client's error."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_dir / pg_tls.SERVER_CERT, server_dir / pg_tls.SERVER_KEY)
    client_ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.recv(1)
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname=server_hostname) as client,
            ):
                version = client.version() or ""
                client.sendall(b"x")
                return version
        finally:
            thread.join(timeout=10)


def test_the_certificate_passes_verify_full_for_every_name_clients_use(dirs: Path) -> None:
    assert _prepare(dirs) is True
    ca = dirs / "trust" / tls.CA_CERT
    assert ca.read_bytes() == (dirs / "ca" / tls.CA_CERT).read_bytes()
    for name in ("postgres", "localhost", "127.0.0.1"):
        assert handshake(dirs / "server", ca, name).startswith("TLSv1."), name


def test_another_name_or_another_ca_is_refused(dirs: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    _prepare(dirs)
    with pytest.raises(ssl.SSLCertVerificationError, match=r"match|mismatch"):
        handshake(dirs / "server", dirs / "trust" / tls.CA_CERT, "db.example.org")
    stranger = tls.ensure_authority(tmp_path_factory.mktemp("other-ca"))
    other_ca = dirs / "other.pem"
    other_ca.write_bytes(stranger.cert_pem())
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        handshake(dirs / "server", other_ca, "localhost")


def test_keys_are_private_and_only_the_ca_certificate_is_shared(dirs: Path) -> None:
    _prepare(dirs)
    assert stat.S_IMODE((dirs / "server" / pg_tls.SERVER_KEY).stat().st_mode) == 0o600
    assert stat.S_IMODE((dirs / "ca" / tls.CA_KEY).stat().st_mode) == 0o600
    assert sorted(p.name for p in (dirs / "trust").iterdir()) == [tls.CA_CERT]
    assert "PRIVATE KEY" not in (dirs / "trust" / tls.CA_CERT).read_text()


def test_a_valid_certificate_is_kept_and_reissued_when_names_or_ca_change(dirs: Path) -> None:
    _prepare(dirs)
    cert = (dirs / "server" / pg_tls.SERVER_CERT).read_bytes()
    assert _prepare(dirs) is False and (dirs / "server" / pg_tls.SERVER_CERT).read_bytes() == cert
    assert _prepare(dirs, renew=True) is True
    renewed = (dirs / "server" / pg_tls.SERVER_CERT).read_bytes()
    assert renewed != cert
    # A new name (a host clients now use) is issued for from the same CA.
    authority = tls.ensure_authority(dirs / "ca")
    assert not tls.valid_for(dirs / "server" / pg_tls.SERVER_CERT, authority, (*HOSTNAMES, "db.internal"))
    # A new CA (its volume deleted to rotate it): the old certificate is not its, so a new one.
    for f in (dirs / "ca").iterdir():
        f.unlink()
    assert _prepare(dirs) is True
    assert handshake(dirs / "server", dirs / "trust" / tls.CA_CERT, "localhost")


def test_hba_takes_tls_with_scram_only_for_the_pipeline_and_rules_admins() -> None:
    hba = pg_tls.render_hba("transactions", NAMES)
    rows = [line.split() for line in hba.splitlines() if line and not line.startswith("#")]
    assert rows == [
        ["local", "all", "postgres", "peer"],
        ["hostnossl", "all", "all", "all", "reject"],
        [
            "hostssl",
            '"transactions"',
            '"txmon_owner","txmon_app","txmon_retention","txmon_console",+txmon_rules_admin',
            "all",
            "scram-sha-256",
        ],
        ["hostssl", "all", "postgres", "all", "scram-sha-256"],
    ]
    # No `host` line: a login without TLS matches nothing but the reject.
    assert not [r for r in rows if r[0] == "host"]
    assert all(r[-1] in ("scram-sha-256", "reject", "peer") for r in rows)


def test_hba_refuses_a_name_it_cannot_quote() -> None:
    with pytest.raises(ValueError, match=r"pg_hba\.conf"):
        pg_tls.render_hba('tx"; all', NAMES)


def test_kafka_broker_certificate_comes_from_the_same_code(tmp_path: Path) -> None:
    """stack/kafka_security.py issues the broker's key store with utils/tls.py's CA and issuer."""
    ca = kafka_security.ensure_certificates(tmp_path / "kafka-tls")
    authority = tls.ensure_authority(tmp_path / "kafka-tls")
    assert ca.read_bytes() == authority.cert_pem()
