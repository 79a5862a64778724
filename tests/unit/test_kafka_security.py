"""Kafka client security settings and the secured native broker's configuration (no services)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack import kafka_security
from stack.kafka_security import Grant, broker_properties, service_acls, wanted_security
from utils.config import load_settings
from utils.errors import ConfigError, StackError
from utils.kafka_net import SLOW_STEP_WARNING_S, net_client


def test_plaintext_by_default() -> None:
    k = load_settings(environ={}).kafka
    assert k.client_security() == {"security_protocol": "PLAINTEXT"}
    assert k.client_kwargs() == {
        "bootstrap_servers": ["localhost:9092"],
        "kafka_client": net_client,
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_kwargs(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    k = load_settings(
        environ={
            "KAFKA_BOOTSTRAP_SERVERS": "a:1,b:2",
            "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "KAFKA_SASL_USERNAME": "producer",
            "KAFKA_SASL_PASSWORD": "s3cret-value",
            "KAFKA_SSL_CAFILE": str(ca),
        }
    ).kafka
    assert k.client_kwargs() == {
        "bootstrap_servers": ["a:1", "b:2"],
        "kafka_client": net_client,
        "security_protocol": "SASL_SSL",
        "ssl_check_hostname": True,
        "ssl_cafile": str(ca),
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "producer",
        "sasl_plain_password": "s3cret-value",
    }
    assert "s3cret-value" not in repr(k), "the password must never reach a log line"
    other = k.as_user("consumer", "pw2").client_security()
    assert other["sasl_plain_username"] == "consumer" and other["sasl_plain_password"] == "pw2"


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_PASSWORD": "p"}, "KAFKA_SASL_USERNAME"),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": "p",
                "KAFKA_SASL_MECHANISM": "GSSAPI",
            },
            "KAFKA_SASL_MECHANISM",
        ),
        ({"KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "KAFKA_SSL_CAFILE"),
    ],
)
def test_bad_security_settings_name_the_variable(environ: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_settings(environ=environ)


def test_stack_security_mode() -> None:
    assert wanted_security({}) == "plaintext"
    assert wanted_security({"TXMON_KAFKA_SECURITY": "SASL_SSL"}) == "sasl_ssl"
    with pytest.raises(StackError, match="TXMON_KAFKA_SECURITY"):
        wanted_security({"TXMON_KAFKA_SECURITY": "kerberos"})


def _allowed(grants: list[Grant], user: str) -> set[tuple[str, str, str]]:
    return {(g.resource, g.name, g.operation) for g in grants if g.user == user}


def test_each_service_gets_only_what_it_needs() -> None:
    grants = service_acls("tx", "tx.dlq", "grp")
    assert _allowed(grants, "producer") == {
        ("TOPIC", "tx", "WRITE"),
        ("TOPIC", "tx", "DESCRIBE"),
        ("TOPIC", "tx", "READ"),
    }
    consumer = _allowed(grants, "consumer")
    assert ("TOPIC", "tx.dlq", "WRITE") in consumer and ("GROUP", "grp", "READ") in consumer
    assert ("TOPIC", "tx", "WRITE") not in consumer, "the consumer must not inject transactions"
    assert ("TOPIC", "tx.dlq", "READ") not in consumer
    assert {op for _, _, op in _allowed(grants, "health")} == {"DESCRIBE"}
    assert not any(g.user == kafka_security.BROKER_USER for g in grants), "the broker is the super user"
    assert not any(g.operation == "ALL" and g.user != "admin" for g in grants)


def test_broker_is_locked(tmp_path: Path) -> None:
    (tmp_path / "broker.key.password").write_text("kp\n")
    props = broker_properties("127.0.0.1", 9093, tmp_path, "brokerpw")
    assert props["listeners"] == "SASL_SSL://127.0.0.1:9093"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["authorizer.class.name"] == "kafka.security.authorizer.AclAuthorizer"
    assert props["super.users"] == "User:broker"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert "PLAINTEXT" not in str(props["listeners"])


def test_certificates_verify_for_the_broker_address(tmp_path: Path) -> None:
    """The CA signs a broker certificate Python's TLS accepts for 127.0.0.1 (hostname checking on)."""
    import ssl

    from cryptography.hazmat.primitives.serialization import pkcs12

    ca = kafka_security.ensure_certificates(tmp_path / "tls")
    password = (tmp_path / "tls" / "broker.key.password").read_text().strip().encode()
    key, cert, chain = pkcs12.load_key_and_certificates(
        (tmp_path / "tls" / "broker.p12").read_bytes(), password
    )
    assert key is not None and cert is not None and len(chain) == 1
    assert oct((tmp_path / "tls" / "broker.p12").stat().st_mode & 0o777) == "0o600"
    ctx = ssl.create_default_context(cafile=str(ca))
    assert ctx.check_hostname
    assert kafka_security.ensure_certificates(tmp_path / "tls") == ca  # made once, then reused
    passwords = kafka_security.user_passwords(tmp_path)
    assert set(passwords) == set(kafka_security.USERS) and all(len(p) >= 32 for p in passwords.values())
    assert kafka_security.user_passwords(tmp_path) == passwords


def test_the_console_may_only_write_the_topic() -> None:
    console = {
        (g.resource, g.name, g.operation) for g in service_acls("t", "t.dlq", "grp") if g.user == "console"
    }
    assert console == {("TOPIC", "t", "WRITE"), ("TOPIC", "t", "DESCRIBE")}


def test_compose_passwords_come_from_one_variable_per_user() -> None:
    env = {kafka_security.password_variable(u): f"pw-{u}" for u in kafka_security.USERS}
    assert kafka_security.passwords_from_env(env) == {u: f"pw-{u}" for u in kafka_security.USERS}
    del env["KAFKA_HEALTH_PASSWORD"]
    with pytest.raises(StackError, match="KAFKA_HEALTH_PASSWORD"):
        kafka_security.passwords_from_env(env)


def test_compose_tls_gives_clients_the_ca_alone(tmp_path: Path) -> None:
    tls, ca = tmp_path / "tls", tmp_path / "ca"
    kafka_security.compose_tls(tls, ca, ("kafka", "localhost", "127.0.0.1"), owner=None)
    assert [p.name for p in ca.iterdir()] == ["ca.pem"]
    assert (ca / "ca.pem").read_text() == (tls / "ca.pem").read_text()
    assert (tls / "broker-tls.properties").stat().st_mode & 0o077 == 0
    assert tls.stat().st_mode & 0o077 == 0
    text = (tls / "broker-tls.properties").read_text()
    assert f"ssl.keystore.location={tls / 'broker.p12'}" in text
    assert "allow.everyone.if.no.acl.found=false" in text
    # Run again (every `docker compose up`): the same certificate, not a new CA.
    before = (ca / "ca.pem").read_text()
    kafka_security.compose_tls(tls, ca, ("kafka", "localhost", "127.0.0.1"), owner=None)
    assert (ca / "ca.pem").read_text() == before


def test_zookeeper_logins_and_password(tmp_path: Path) -> None:
    server = kafka_security.zookeeper_server_jaas("pw_1")
    client = kafka_security.zookeeper_client_jaas("pw_1")
    assert server.startswith("Server {") and 'user_kafka="pw_1";' in server
    assert client.startswith("Client {") and 'username="kafka"' in client and 'password="pw_1";' in client
    with pytest.raises(StackError):
        kafka_security.zookeeper_client_jaas('a"b')
    first = kafka_security.zookeeper_password(tmp_path)
    assert len(first) >= 32 and kafka_security.zookeeper_password(tmp_path) == first
    assert (tmp_path / "zookeeper-kafka.password").stat().st_mode & 0o077 == 0


def test_clients_warn_only_of_event_loop_steps_of_a_second_or_more() -> None:
    """kafka-python's 0.1 s default flagged every large fetch response of a backlog as a fault."""
    factory = load_settings(environ={}).kafka.client_kwargs()["kafka_client"]
    client = factory(bootstrap_servers=["localhost:1"])  # builds its selector; connects lazily
    try:
        assert client._net.config["slow_task_threshold_secs"] == SLOW_STEP_WARNING_S == 1.0
    finally:
        client.close()
