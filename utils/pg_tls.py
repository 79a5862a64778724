"""PostgreSQL over TLS for the Compose stack: the server's certificate and who may connect how.

`python -m utils.pg_tls prepare` is the one-shot Compose job `postgres-tls`, run before the
server on every `up` (docker-compose.yml):
- the stack's CA (utils/tls.py) in `--ca-dir`, made on first start; its key stays there (0600);
- a server certificate for `--hostnames` (the service name `postgres`, and `localhost`,
  `127.0.0.1`, `::1` for the published port) in `--server-dir`, issued again when a name is
  missing, the CA changed, it expires within 30 days, or `--renew` asks;
- `pg_hba.conf` in `--server-dir` (the server reads it there: `-c hba_file=`), written on every
  run from the role names in the settings, so a renamed role or a volume made before TLS is
  covered at the next `up`: every network login is TLS (`hostssl`) with SCRAM, only for the
  pipeline's roles and the rules admins; a login without TLS is rejected with a line of its own;
- `ca.pem` in `--trust-dir`, the volume every client container mounts read-only
  (POSTGRES_SSLROOTCERT), and nothing else from the CA.

The job runs as uid 999, the server's own (postgres in the official image and in
docker/offline/postgres.Dockerfile), without capabilities: the server key it writes (0600) is the
server's, as PostgreSQL requires, and no other container user can read it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from utils import tls
from utils.roles import RULES_ADMIN_GROUP, SUPERUSER, RoleNames

log = logging.getLogger(__name__)

SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
HBA_FILE = "pg_hba.conf"
DEFAULT_HOSTNAMES = ("postgres", "localhost", "127.0.0.1", "::1")


def render_hba(db: str, names: RoleNames) -> str:
    """pg_hba.conf for a server reached only over TLS with SCRAM.

    - inside the container, over its Unix socket: the superuser by peer (the OS user postgres,
      `docker compose exec -u postgres postgres psql`), nobody else;
    - any network connection without TLS: rejected (a line of its own so the log says why);
    - over TLS: the pipeline's roles and the members of the rules-admin group to their database,
      the superuser (db-roles, add-rules-admin) to any; SCRAM-SHA-256 for all.
    No `host` line: a non-TLS login is refused from everywhere, the published port included.
    """
    roles = [r for r in (names.owner, names.app, names.retention, names.console) if r]
    users = ",".join(_quoted(r) for r in dict.fromkeys(roles)) + f",+{RULES_ADMIN_GROUP}"
    rows = [
        ("local", "all", SUPERUSER, "", "peer"),
        ("hostnossl", "all", "all", "all", "reject"),
        ("hostssl", _quoted(db), users, "all", "scram-sha-256"),
        ("hostssl", "all", SUPERUSER, "all", "scram-sha-256"),
    ]
    header = (
        "# Written by `python -m utils.pg_tls prepare` (the Compose job postgres-tls) on every `up`:\n"
        "# edit utils/pg_tls.py, not this file. TLS with SCRAM for every network login.\n"
        "# TYPE     DATABASE  USER  ADDRESS  METHOD\n"
    )
    return header + "".join(" ".join(f for f in row if f) + "\n" for row in rows)


def _quoted(name: str) -> str:
    # pg_hba.conf reads a double-quoted name literally (no keyword such as `all`, no `+group`).
    if '"' in name or "\n" in name:
        raise ValueError(f"role or database name {name!r} cannot be written to pg_hba.conf")
    return f'"{name}"'


def prepare(
    ca_dir: Path,
    server_dir: Path,
    trust_dir: Path,
    hostnames: tuple[str, ...],
    db: str,
    names: RoleNames,
    *,
    renew: bool = False,
) -> bool:
    """Everything the server and its clients need; True when a server certificate was issued."""
    authority = tls.ensure_authority(ca_dir)
    cert_path = server_dir / SERVER_CERT
    issued = renew or not tls.valid_for(cert_path, authority, hostnames)
    if issued:
        from cryptography.hazmat.primitives import serialization

        cert, key = tls.issue_server(authority, hostnames)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # Key first: a server started between the two writes finds an old pair or a new key
        # with the old certificate, and refuses to start rather than serve a mismatch.
        tls.write_file(server_dir / SERVER_KEY, key_pem, 0o600)
        tls.write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        log.info("issued the PostgreSQL server certificate for %s", ", ".join(hostnames))
    tls.write_file(server_dir / HBA_FILE, render_hba(db, names).encode(), 0o644)
    tls.write_file(trust_dir / tls.CA_CERT, authority.cert_pem(), 0o644)
    return issued


def main(argv: Sequence[str] | None = None) -> int:
    from utils.config import load_settings
    from utils.errors import ConfigError
    from utils.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m utils.pg_tls", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser(
        "prepare",
        help="the CA, the server certificate, pg_hba.conf and the clients' ca.pem "
        "[env: POSTGRES_DB, POSTGRES_USER, POSTGRES_MIGRATION_USER, POSTGRES_RETENTION_USER, POSTGRES_CONSOLE_USER]",
    )
    p.add_argument("--ca-dir", type=Path, required=True, help="the CA's certificate and key (kept private)")
    p.add_argument("--server-dir", type=Path, required=True, help="server.crt, server.key, pg_hba.conf")
    p.add_argument("--trust-dir", type=Path, required=True, help="where clients find ca.pem")
    p.add_argument(
        "--hostnames",
        default=",".join(DEFAULT_HOSTNAMES),
        help="comma-separated names and addresses clients connect to (default: %(default)s)",
    )
    p.add_argument("--renew", action="store_true", help="issue a new server certificate even if valid")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        hostnames = tuple(h.strip() for h in args.hostnames.split(",") if h.strip())
        pg = settings.postgres
        issued = prepare(
            args.ca_dir,
            args.server_dir,
            args.trust_dir,
            hostnames,
            pg.db,
            RoleNames.from_settings(pg),
            renew=args.renew,
        )
    except (ConfigError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"PostgreSQL TLS ready: certificate for {', '.join(hostnames)} "
        f"({'issued' if issued else 'kept'}), pg_hba.conf written, clients trust {args.trust_dir / tls.CA_CERT}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
