"""Kafka with SASL/SCRAM over TLS and ACLs (the native stack's TXMON_KAFKA_SECURITY=sasl_ssl).

A secured broker of its own (tests/conftest.py `secured_kafka_stack`): the pipeline runs end to
end with each service's own user; a client without credentials, or with a wrong password, reads
and writes nothing; each service is refused, by name, whatever its ACLs do not allow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any

import kafka.errors as kafka_errors
import pytest
from kafka.admin import ACL, ACLOperation, ACLPermissionType, ResourcePattern, ResourceType

from stack.orchestrator import LocalStack
from tests.support import consume, generated, produce, query, scalar
from tests.support import kafka_end_offsets as _end_offsets
from tests.support import kafka_read as _read
from tests.support import kafka_send as _send
from utils.config import KafkaSettings, PostgresSettings, Settings
from utils.errors import KafkaAuthenticationError
from utils.kafka_cleanup import KafkaAdminError, admin_client, group_lag

TOPIC, DLQ, GROUP = "transactions", "transactions.dlq", "transaction-processor"


@pytest.fixture(scope="module")
def users(secured_kafka_stack: LocalStack) -> dict[str, KafkaSettings]:
    """Each service's settings, and the pipeline's topics (made by the admin user)."""
    out = {u: secured_kafka_stack.kafka_user(u) for u in ("admin", "producer", "consumer", "health")}
    with contextlib.closing(admin_client(out["admin"])) as admin:
        admin.create_topics(
            {
                TOPIC: {"num_partitions": 3, "replication_factor": 1},
                DLQ: {"num_partitions": 1, "replication_factor": 1},
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# The pipeline, secured
# --------------------------------------------------------------------------------------------


def test_pipeline_runs_end_to_end_with_each_services_own_user(
    users: dict[str, KafkaSettings], fresh_db: PostgresSettings
) -> None:
    n = 600
    base = Settings()
    topics: dict[str, Any] = {
        "topic": TOPIC,
        "dlq_topic": DLQ,
        "consumer_group": GROUP,
        "topic_partitions": 3,
    }
    as_producer = dataclasses.replace(
        base, kafka=dataclasses.replace(users["producer"], **topics), postgres=fresh_db
    )
    as_consumer = dataclasses.replace(
        base,
        kafka=dataclasses.replace(users["consumer"], **topics),
        postgres=fresh_db,
        consumer=dataclasses.replace(base.consumer, session_timeout_ms=6000, poll_timeout_ms=200),
    )
    produce(as_producer, n, seed=19)
    summary = consume(as_consumer)
    assert summary.stored == n and summary.rejected == 0, summary.as_dict()
    ids = {r[0] for r in query(fresh_db, "SELECT transaction_id FROM transactions")}
    assert ids == {t["transaction_id"] for t in generated(as_producer, n, seed=19)}
    assert scalar(fresh_db, "SELECT count(*) FROM alerts") > 0
    # Health checks see the group's progress with describe rights only.
    lag = group_lag(dataclasses.replace(users["health"], **topics), GROUP)
    assert sum(r.end_offset for r in lag if r.topic == TOPIC) == n
    assert all(r.lag == 0 for r in lag if r.topic == TOPIC)


# --------------------------------------------------------------------------------------------
# Strangers
# --------------------------------------------------------------------------------------------


def test_clients_without_credentials_read_and_write_nothing(users: dict[str, KafkaSettings]) -> None:
    _send(users["producer"].client_kwargs(), TOPIC, b'{"seen": "only by the consumer"}')
    before = _end_offsets(users["health"], TOPIC)
    assert before > 0
    bootstrap = users["admin"].bootstrap_servers
    anonymous: list[dict[str, Any]] = [
        {"bootstrap_servers": bootstrap},  # plaintext to a TLS port
        {"bootstrap_servers": bootstrap, "security_protocol": "SSL", "ssl_cafile": users["admin"].ssl_cafile},
    ]
    for kwargs in anonymous:
        with pytest.raises(kafka_errors.KafkaError):
            _send(kwargs, TOPIC, b'{"transaction_id": "injected"}')
        try:
            got = _read(kwargs, TOPIC)
        except kafka_errors.KafkaError:
            got = []
        assert got == [], f"{kwargs}: read {len(got)} messages without credentials"
    assert _end_offsets(users["health"], TOPIC) == before, "an anonymous client wrote to the topic"


def test_a_wrong_password_is_an_authentication_error(
    secured_kafka_stack: LocalStack, users: dict[str, KafkaSettings], caplog: pytest.LogCaptureFixture
) -> None:
    before = _end_offsets(users["health"], TOPIC)
    broker_log = secured_kafka_stack.log_path("kafka")
    log_start = broker_log.stat().st_size
    wrong = users["producer"].as_user("producer", "not-the-password")
    caplog.set_level(logging.ERROR, logger="kafka")
    with pytest.raises(kafka_errors.KafkaError):
        _send(wrong.client_kwargs(), TOPIC, b'{"transaction_id": "guessed-first"}')
    with pytest.raises(kafka_errors.KafkaError):
        _read(users["consumer"].as_user("consumer", "nope").client_kwargs(), TOPIC, group=GROUP)
    # Our clients say what is wrong whenever kafka-python reports the broker's answer (it may
    # instead see only the disconnect that follows it: then this is the plain bootstrap error).
    with pytest.raises((KafkaAuthenticationError, KafkaAdminError)) as info:
        admin_client(wrong, timeout_s=4)
    if isinstance(info.value, KafkaAuthenticationError):
        assert "KAFKA_SASL_PASSWORD" in str(info.value) and "'producer'" in str(info.value)
    # The broker refused them as authentication failures, and logged each.
    with open(broker_log, "rb") as fh:
        fh.seek(log_start)
        logged = fh.read().decode("utf-8", "replace")
    assert "Failed authentication with" in logged and "invalid credentials" in logged, logged[-2000:]
    assert _end_offsets(users["health"], TOPIC) == before


# --------------------------------------------------------------------------------------------
# Each service within its ACLs
# --------------------------------------------------------------------------------------------


def _refused(action: Callable[[], object], error: type[Exception], name: str) -> None:
    with pytest.raises(error) as info:
        action()
    assert name in str(info.value), f"the refusal should name {name!r}: {info.value}"


def test_each_service_is_refused_beyond_its_acls(users: dict[str, KafkaSettings]) -> None:
    producer, consumer, health, admin = (
        users[u].client_kwargs() for u in ("producer", "consumer", "health", "admin")
    )
    topic_denied, group_denied = (
        kafka_errors.TopicAuthorizationFailedError,
        kafka_errors.GroupAuthorizationFailedError,
    )
    # The producer writes transactions; it neither writes the DLQ nor reads as a group nor deletes.
    _refused(lambda: _send(producer, DLQ, b"x"), topic_denied, DLQ)
    _refused(lambda: _read(producer, TOPIC, group="p-group"), group_denied, "p-group")
    with contextlib.closing(admin_client(users["producer"])) as a:
        _refused(functools.partial(a.delete_topics, [TOPIC]), topic_denied, "DeleteTopics")
    # The consumer reads transactions as its group and writes the DLQ; it cannot inject
    # transactions (a guessed transaction_id sent first), read the DLQ, or use another group.
    _refused(lambda: _send(consumer, TOPIC, b'{"transaction_id": "guessed"}'), topic_denied, TOPIC)
    _refused(lambda: _read(consumer, DLQ, group=GROUP), topic_denied, DLQ)
    _refused(lambda: _read(consumer, TOPIC, group="another-group"), group_denied, "another-group")
    _send(consumer, DLQ, b"a rejected message")  # what it may do
    # Health checks describe and nothing else.
    _refused(lambda: _send(health, TOPIC, b"x"), topic_denied, TOPIC)
    _refused(lambda: _read(health, TOPIC), topic_denied, TOPIC)
    with contextlib.closing(admin_client(users["health"])) as a:
        assert {t["name"] for t in a.describe_topics([TOPIC, DLQ])} == {TOPIC, DLQ}
        _refused(functools.partial(a.delete_topics, [DLQ]), topic_denied, "DeleteTopics")
        _refused(
            functools.partial(
                a.create_topics, {"health-made": {"num_partitions": 1, "replication_factor": 1}}
            ),
            kafka_errors.KafkaError,
            "health-made",
        )
    # The admin user manages topics but not the ACLs: those stay with the broker's own user.
    acl = ACL(
        "User:producer",
        "*",
        ACLOperation.ALL,
        ACLPermissionType.ALLOW,
        ResourcePattern(ResourceType.CLUSTER, "kafka-cluster"),
    )
    with contextlib.closing(admin_client(users["admin"])) as a:
        result = a.create_acls([acl])
        assert result["failed"] and not result["succeeded"], result
        assert "ClusterAuthorizationFailed" in str(result["failed"][0])
    assert admin["sasl_plain_username"] == "admin"


# --------------------------------------------------------------------------------------------
# ZooKeeper behind the broker
# --------------------------------------------------------------------------------------------


def test_zookeeper_closes_an_anonymous_session_and_the_brokers_znodes_have_acls(
    secured_kafka_stack: LocalStack, users: dict[str, KafkaSettings]
) -> None:
    import subprocess

    from stack.apache_kafka import ApacheKafka, find_java, kafka_lib_dir

    zk, broker = secured_kafka_stack.zookeeper, secured_kafka_stack.broker
    assert isinstance(broker, ApacheKafka), broker  # one broker: its home holds the JAAS login
    java = find_java(secured_kafka_stack.environ)
    lib = kafka_lib_dir(environ=secured_kafka_stack.environ)

    def zk_cli(*command: str, login: bool) -> str:
        # The broker's own login (ApacheKafka._zookeeper_login writes it).
        jaas = [f"-Djava.security.auth.login.config={broker.home / 'jaas.conf'}"]
        result = subprocess.run(
            [
                *(java, "-Xmx64m", *(jaas if login else []), "-cp", f"{lib}/*"),
                *("org.apache.zookeeper.ZooKeeperMain", "-server", f"127.0.0.1:{zk.port}", *command),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return result.stdout + result.stderr

    anonymous = zk_cli("get", "/brokers/ids/0", login=False)
    assert "Session closed because client failed to authenticate" in anonymous, anonymous[-2000:]
    acl = zk_cli("getAcl", "/config/users/broker", login=True)
    assert "'sasl,'kafka" in acl and "'world,'anyone" not in acl, acl[-2000:]
