"""A secured broker for the native stack (TXMON_KAFKA_SECURITY=sasl_ssl): TLS, SCRAM users, ACLs.

What it adds to stack/apache_kafka.py's broker:
- a CA and a broker certificate, made with `cryptography` on first start into `<state>/kafka-tls/`
  (a PKCS#12 key store for the broker, PEM for the CA); clients trust `ca.pem` (KAFKA_SSL_CAFILE);
- one SCRAM-SHA-512 user per service with a generated password (`<state>/kafka-users.json`, 0600):
  `broker` (inter-broker, the only super user), `admin` (topics and groups), `producer`,
  `consumer`, `health` (describe only);
- the ACL authorizer with `allow.everyone.if.no.acl.found=false`, and the ACLs of `service_acls`.

The broker's own user is written to ZooKeeper before the broker starts (Kafka's ConfigCommand,
the one step that needs ZooKeeper); the others and the ACLs are created through the broker as
that user once it answers, on every start (both are idempotent).
"""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack.common import write_atomic
from utils import tls
from utils.errors import StackError

log = logging.getLogger(__name__)

SECURITY_MODES = ("plaintext", "sasl_ssl")
MECHANISM = "SCRAM-SHA-512"
BROKER_USER = "broker"
USERS = (BROKER_USER, "admin", "producer", "consumer", "health")
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
        # Topic management (make topics, kafka_cleanup, tests): every topic and group, not the
        # cluster's configuration or ACLs, which stay with the broker's own user.
        Grant("admin", "TOPIC", "*", "ALL"),
        Grant("admin", "GROUP", "*", "ALL"),
        Grant("admin", "CLUSTER", "kafka-cluster", "CREATE"),
        Grant("admin", "CLUSTER", "kafka-cluster", "DESCRIBE"),
    ]


def broker_properties(host: str, port: int, tls_dir: Path, broker_password: str) -> dict[str, object]:
    """What a SASL_SSL broker adds to (and overrides in) apache_kafka.kafka_properties."""
    # JAAS quotes values in double quotes; our generated passwords (token_urlsafe) contain none.
    login = " ".join(
        f"{key}={json.dumps(value)}"
        for key, value in (("username", BROKER_USER), ("password", broker_password))
    )
    jaas = f"org.apache.kafka.common.security.scram.ScramLoginModule required {login};"
    return {
        "listeners": f"SASL_SSL://{host}:{port}",
        "advertised.listeners": f"SASL_SSL://{host}:{port}",
        "security.inter.broker.protocol": "SASL_SSL",
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        "sasl.enabled.mechanisms": MECHANISM,
        f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": jaas,
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
    failed = {u: e for u, e in admin.alter_user_scram_credentials(upserts).items() if e}
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
