"""A secured broker for the native stack (TXMON_KAFKA_SECURITY=sasl_ssl): TLS, SCRAM users, ACLs.

What it adds to stack/apache_kafka.py's broker:
- a CA and a broker certificate, made with `cryptography` on first start into `<state>/kafka-tls/`
  (a PKCS#12 key store for the broker, PEM for the CA); clients trust `ca.pem` (KAFKA_SSL_CAFILE);
- one SCRAM-SHA-512 user per service with a generated password (`<state>/kafka-users.json`, 0600):
  `broker` (inter-broker, the only super user), `admin` (topics and groups), `producer`,
  `consumer`, `health` (describe only), `console` (the DLQ replay);
- the ACL authorizer with `allow.everyone.if.no.acl.found=false`, and the ACLs of `service_acls`.

The broker's own user is written to ZooKeeper before the broker starts (Kafka's ConfigCommand,
the one step that needs ZooKeeper); the others and the ACLs are created through the broker as
that user once it answers, on every start (both are idempotent).

The Compose stack runs the same code (docs/security.md): `python -m stack.kafka_security tls`
in the one-shot `kafka-tls` service makes the certificates and the broker's TLS properties
before the broker starts, and `python -m stack.kafka_init` in `kafka-init` creates the users
(passwords from .env) and the ACLs once it answers.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack.common import render_properties, write_atomic
from utils import tls
from utils.errors import StackError

log = logging.getLogger(__name__)

SECURITY_MODES = ("plaintext", "sasl_ssl")
MECHANISM = "SCRAM-SHA-512"
BROKER_USER = "broker"
USERS = (BROKER_USER, "admin", "producer", "consumer", "health", "console")
SCRAM_ITERATIONS = 8192


def wanted_security(environ: Mapping[str, str]) -> str:
    """TXMON_KAFKA_SECURITY: plaintext (default) or sasl_ssl."""
    value = environ.get("TXMON_KAFKA_SECURITY", "").strip().lower() or "plaintext"
    if value not in SECURITY_MODES:
        raise StackError(
            f"TXMON_KAFKA_SECURITY={value!r}: use one of {', '.join(SECURITY_MODES)} (default plaintext)"
        )
    return value


# --------------------------------------------------------------------------------------------
# Who may do what (pure)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    """One ALLOW ACL: `user` may `operation` on the `resource` (topic, group, cluster) `name`."""

    user: str
    resource: str  # TOPIC, GROUP or CLUSTER
    name: str  # "*" matches every name
    operation: str  # READ, WRITE, DESCRIBE, ALL, ...


def service_acls(topic: str, dlq_topic: str, group: str) -> list[Grant]:
    """The least each service needs, and no more.

    The producer also READs its topic: it starts its simulated clock after the newest event on it
    (producer/frontier.py), without a group. The consumer reads the topic as its group and writes
    rejected messages to the dead-letter topic. Health checks (the monitoring DAG) only describe.
    The console writes a corrected rejected message back onto the topic (consumer/dlq_replay.py).
    """
    return [
        Grant("producer", "TOPIC", topic, "WRITE"),
        Grant("producer", "TOPIC", topic, "DESCRIBE"),
        Grant("producer", "TOPIC", topic, "READ"),
        Grant("consumer", "TOPIC", topic, "READ"),
        Grant("consumer", "TOPIC", topic, "DESCRIBE"),
        Grant("consumer", "GROUP", group, "READ"),
        Grant("consumer", "GROUP", group, "DESCRIBE"),
        Grant("consumer", "TOPIC", dlq_topic, "WRITE"),
        Grant("consumer", "TOPIC", dlq_topic, "DESCRIBE"),
        Grant("health", "TOPIC", topic, "DESCRIBE"),
        Grant("health", "TOPIC", dlq_topic, "DESCRIBE"),
        Grant("health", "GROUP", group, "DESCRIBE"),
        Grant("health", "CLUSTER", "kafka-cluster", "DESCRIBE"),
        Grant("console", "TOPIC", topic, "WRITE"),
        Grant("console", "TOPIC", topic, "DESCRIBE"),
        # Topic management (make topics, kafka_cleanup, tests): every topic and group, not the
        # cluster's configuration or ACLs, which stay with the broker's own user.
        Grant("admin", "TOPIC", "*", "ALL"),
        Grant("admin", "GROUP", "*", "ALL"),
        Grant("admin", "CLUSTER", "kafka-cluster", "CREATE"),
        Grant("admin", "CLUSTER", "kafka-cluster", "DESCRIBE"),
    ]


def scram_jaas(username: str, password: str) -> str:
    """The JAAS line a SCRAM client (here: the broker talking to itself) logs in with."""
    # JAAS quotes values in double quotes; our generated passwords (token_urlsafe) contain none.
    if '"' in password or "\\" in password:
        raise StackError(f"the Kafka password of {username!r} must not contain a double quote or a backslash")
    login = " ".join(
        f"{key}={json.dumps(value)}" for key, value in (("username", username), ("password", password))
    )
    return f"org.apache.kafka.common.security.scram.ScramLoginModule required {login};"


def broker_properties(host: str, port: int, tls_dir: Path, broker_password: str) -> dict[str, object]:
    """What a SASL_SSL broker adds to (and overrides in) apache_kafka.kafka_properties."""
    return {
        "listeners": f"SASL_SSL://{host}:{port}",
        "advertised.listeners": f"SASL_SSL://{host}:{port}",
        "security.inter.broker.protocol": "SASL_SSL",
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        "sasl.enabled.mechanisms": MECHANISM,
        f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": scram_jaas(
            BROKER_USER, broker_password
        ),
        **broker_tls_properties(tls_dir),
    }


def broker_tls_properties(tls_dir: Path) -> dict[str, object]:
    """The broker's key store, trust store and authorizer: the listener-independent half of
    `broker_properties`, which the Compose broker (two SASL_SSL listeners) also loads."""
    return {
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": tls_dir / "broker.p12",
        "ssl.keystore.password": _key_password(tls_dir),
        "ssl.key.password": _key_password(tls_dir),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": tls_dir / "ca.pem",
        "ssl.client.auth": "none",
        "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
        "authorizer.class.name": "kafka.security.authorizer.AclAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{BROKER_USER}",
    }


# --------------------------------------------------------------------------------------------
# ZooKeeper: SASL (DIGEST-MD5) logins only, the broker's user alone
# --------------------------------------------------------------------------------------------

ZOOKEEPER_USER = "kafka"
# What ZooKeeper adds: every session must log in (four-letter words like `ruok` still answer).
ZOOKEEPER_SASL_PROPERTIES = {
    "authProvider.sasl": "org.apache.zookeeper.server.auth.SASLAuthenticationProvider",
    "enforce.auth.enabled": "true",
    "enforce.auth.schemes": "sasl",
}


def _jaas_value(password: str) -> str:
    if '"' in password or "\\" in password:
        raise StackError("the ZooKeeper password must not contain a double quote or a backslash")
    return json.dumps(password)


def zookeeper_server_jaas(password: str) -> str:
    """ZooKeeper's JAAS file: its one user. docker/kafka-entrypoint.sh writes the same."""
    return (
        "Server {\n    org.apache.zookeeper.server.auth.DigestLoginModule required\n"
        f"    user_{ZOOKEEPER_USER}={_jaas_value(password)};\n}};\n"
    )


def zookeeper_client_jaas(password: str) -> str:
    """The broker's (and ConfigCommand's) login to ZooKeeper."""
    return (
        "Client {\n    org.apache.zookeeper.server.auth.DigestLoginModule required\n"
        f'    username="{ZOOKEEPER_USER}"\n    password={_jaas_value(password)};\n}};\n'
    )


def zookeeper_password(state_dir: Path) -> str:
    """The broker's ZooKeeper password (native stack): generated once, 0600, reused."""
    path = state_dir / "zookeeper-kafka.password"
    try:
        value = path.read_text().strip()
        if value:
            return value
    except OSError:
        pass
    value = secrets.token_urlsafe(32)
    state_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(path, value + "\n", mode=0o600)
    return value


# --------------------------------------------------------------------------------------------
# Secrets on disk
# --------------------------------------------------------------------------------------------


def user_passwords(state_dir: Path) -> dict[str, str]:
    """Each Kafka user's generated password: created once, 0600, reused across restarts."""
    path = state_dir / "kafka-users.json"
    try:
        data = json.loads(path.read_text())
        if all(isinstance(data.get(u), str) and data[u] for u in USERS):
            return {u: data[u] for u in USERS}
    except (OSError, ValueError):
        data = {}
    values = {u: data.get(u) or secrets.token_urlsafe(32) for u in USERS}
    state_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(values, indent=2) + "\n", mode=0o600)
    return values


def _key_password(tls_dir: Path) -> str:
    return (tls_dir / "broker.key.password").read_text().strip()


def ensure_certificates(tls_dir: Path, hostnames: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Path:
    """A CA and a broker certificate signed by it, for `hostnames` (DNS names or IP addresses);
    made once. Returns the CA certificate clients trust. The CA key stays in `tls_dir` (0600)
    so a certificate for a new name can be signed later; `ca.pem` is all a client needs.
    The CA and the certificate come from utils/tls.py, which makes the Compose PostgreSQL's too."""
    ca_pem = tls_dir / tls.CA_CERT
    if ca_pem.exists() and (tls_dir / "broker.p12").exists() and (tls_dir / "broker.key.password").exists():
        return ca_pem
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    authority = tls.ensure_authority(tls_dir)
    cert, key = tls.issue_server(authority, hostnames)
    # A PKCS#12 key store: Kafka's PEM key store wants an encrypted PKCS#8 key, and the JDK cannot
    # decrypt the PBES2 encryption `cryptography` writes ("PBES2 SecretKeyFactory not available").
    password = secrets.token_urlsafe(32)
    p12 = pkcs12.serialize_key_and_certificates(
        b"broker", key, cert, [authority.cert], serialization.BestAvailableEncryption(password.encode())
    )
    write_atomic(tls_dir / "broker.key.password", password + "\n", mode=0o600)
    tls.write_file(tls_dir / "broker.p12", p12, 0o600)
    log.info("made a broker certificate for %s in %s", ", ".join(hostnames), tls_dir)
    return ca_pem


# --------------------------------------------------------------------------------------------
# Users and ACLs
# --------------------------------------------------------------------------------------------


def create_broker_user(
    java_argv_prefix: list[str], zk_connect: str, password: str, *, timeout_s: float = 120.0
) -> None:
    """The broker's own SCRAM user, written to ZooKeeper before the broker starts (it needs it to
    talk to itself); Kafka's ConfigCommand is the tool that can do so without a broker."""
    argv = [
        *java_argv_prefix, "kafka.admin.ConfigCommand", "--zookeeper", zk_connect, "--alter",
        "--add-config", f"{MECHANISM}=[iterations={SCRAM_ITERATIONS},password={password}]",
        "--entity-type", "users", "--entity-name", BROKER_USER,
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-10:]
        raise StackError(
            f"could not create the broker's SCRAM user in ZooKeeper at {zk_connect} (exit {result.returncode}):\n    "
            + "\n    ".join(tail)
        )


def _alter_scram_credentials_on_controller(admin: Any, upserts: list[Any]) -> dict[str, str]:
    """Set SCRAM credentials through the controller; {user: error} for those that failed.

    A ZooKeeper-mode broker takes AlterUserScramCredentials on the active controller only; any
    other answers NOT_CONTROLLER without a message, and kafka-python 3.0.12's public
    `alter_user_scram_credentials` (which sends to any broker) reports that as success. On one
    broker that is always the controller; on three (docker-compose.cluster.yml, a native
    TXMON_KAFKA_BROKERS=3 stack with sasl_ssl) two times in three no user was created and every
    login then failed. So the request goes where kafka-python sends controller requests (it
    looks the controller up and retries once on NOT_CONTROLLER): its own routing primitive."""
    from kafka import errors as kafka_errors
    from kafka.protocol.admin import AlterUserScramCredentialsRequest

    request = AlterUserScramCredentialsRequest(
        deletions=[],
        upsertions=[(u.user, int(u.mechanism), u.iterations, u.salt, u.salted_password) for u in upserts],
    )

    def errors(response: Any) -> list[type[Exception]]:
        return [kafka_errors.for_code(r.error_code) for r in response.results]

    try:
        response = admin._manager.run(admin._send_request_to_controller, request, errors, False)
    except (RuntimeError, kafka_errors.KafkaError) as exc:  # no controller found, or it failed
        return {u.user: f"{type(exc).__name__}: {exc}" for u in upserts}
    return {
        r.user: r.error_message or kafka_errors.for_code(r.error_code).__name__
        for r in response.results
        if r.error_code
    }


def provision_users_and_acls(admin: Any, passwords: Mapping[str, str], grants: list[Grant]) -> None:
    """Every service user's SCRAM credentials and every grant, through the broker as its own user.
    Both are upserts: a restart changes nothing; a password edited in kafka-users.json is applied."""
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ResourcePattern,
        ResourceType,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    upserts = [
        UserScramCredentialUpsertion(
            user, ScramMechanism.SCRAM_SHA_512, passwords[user], iterations=SCRAM_ITERATIONS
        )
        for user in USERS
        if user != BROKER_USER
    ]
    failed = _alter_scram_credentials_on_controller(admin, upserts)
    if failed:
        raise StackError(f"could not set the Kafka users' SCRAM credentials: {failed}")
    acls = [
        ACL(
            principal=f"User:{g.user}",
            host="*",
            operation=ACLOperation[g.operation],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(ResourceType[g.resource], g.name),
        )
        for g in grants
    ]
    result = admin.create_acls(acls)
    if result.get("failed"):
        raise StackError(f"could not create the Kafka ACLs: {result['failed']}")


# --------------------------------------------------------------------------------------------
# The Compose stack's one-shot jobs (docker-compose.yml: kafka-tls, kafka-init)
# --------------------------------------------------------------------------------------------

# What the Compose broker's image runs as (docker/kafka.Dockerfile): the owner of its key store.
COMPOSE_BROKER_UID = 10001


def password_variable(user: str) -> str:
    """The .env variable holding a Compose Kafka user's password: KAFKA_<USER>_PASSWORD."""
    return f"KAFKA_{user.upper()}_PASSWORD"


def passwords_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Every user's password from KAFKA_<USER>_PASSWORD (.env); a missing one is an error that
    names its variable."""
    missing = [password_variable(u) for u in USERS if not environ.get(password_variable(u))]
    if missing:
        raise StackError(f"set {', '.join(missing)} in .env (see .env.example)")
    return {u: environ[password_variable(u)] for u in USERS}


def compose_tls(tls_dir: Path, ca_dir: Path, hostnames: tuple[str, ...], owner: int | None) -> None:
    """Certificates (once), the broker's TLS properties (every start) and a copy of the CA for the
    clients' volume. `tls_dir` holds the broker's key: it belongs to `owner`, mode 0700; `ca_dir`
    holds only the public CA certificate, readable by every client container."""
    ca = ensure_certificates(tls_dir, hostnames)
    write_atomic(
        tls_dir / "broker-tls.properties", render_properties(broker_tls_properties(tls_dir)), mode=0o600
    )
    ca_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(ca_dir / "ca.pem", ca.read_text(), mode=0o644)
    ca_dir.chmod(0o755)
    if owner is not None:
        for path in (tls_dir, *tls_dir.iterdir()):
            os.chown(path, owner, owner)
    log.info(
        "kafka-tls: certificate for %s in %s, CA in %s", ", ".join(hostnames), tls_dir, ca_dir / "ca.pem"
    )


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m stack.kafka_security", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    tls_cmd = sub.add_parser("tls", help="certificates, the broker's TLS properties and the clients' CA copy")
    tls_cmd.add_argument("--tls-dir", type=Path, required=True)
    tls_cmd.add_argument("--ca-dir", type=Path, required=True)
    tls_cmd.add_argument("--hostnames", default="kafka,localhost,127.0.0.1", help="comma-separated")
    tls_cmd.add_argument("--owner", type=int, default=None, help="uid (and gid) that gets --tls-dir")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        compose_tls(args.tls_dir, args.ca_dir, tuple(args.hostnames.split(",")), args.owner)
    except StackError as exc:
        print(f"{p.prog}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
