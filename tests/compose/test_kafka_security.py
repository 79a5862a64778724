"""Kafka and ZooKeeper of the Compose stack, secured by default (docs/security.md).

On the published port, as a host client: a client without credentials, or with a wrong
password, reads and writes nothing; a service's user beyond its ACLs is refused by name.
Inside the network: ZooKeeper is not published, takes SASL logins only, and the broker's znodes
carry ACLs. The pipeline itself running on these users is test_stack.py's business (its host
producer logs in as `producer`, the consumer containers as `consumer`, Airflow as `health`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any

import kafka.errors as kafka_errors
import pytest

from deploy.compose import Project
from tests.support import kafka_end_offsets, kafka_read, kafka_send
from utils.config import KafkaSettings, Settings, load_settings
from utils.kafka_cleanup import admin_client

Users = dict[str, KafkaSettings]


@pytest.fixture(scope="module")
def topics(project: Project) -> Settings:
    return load_settings(dotenv_path=project.env_file)


def _refused(action: Any, error: type[Exception], name: str) -> None:
    with pytest.raises(error) as info:
        action()
    assert name in str(info.value), f"the refusal should name {name!r}: {info.value}"


# A topic of the test's own: the producer service writes `transactions` all the time, so only
# here do "the end offsets did not move" mean "nobody wrote".
PROBE = "txmon-compose-security-probe"


def test_strangers_on_the_published_port_read_and_write_nothing(
    project: Project, kafka_users: Users, topics: Settings
) -> None:
    admin = kafka_users["admin"]
    with contextlib.closing(admin_client(admin)) as client:
        if PROBE not in client.list_topics():
            client.create_topics({PROBE: {"num_partitions": 1, "replication_factor": 1}})
    kafka_send(admin.client_kwargs(), PROBE, b"written by the admin user")
    before = kafka_end_offsets(admin, PROBE)
    assert before > 0
    bootstrap = admin.bootstrap_servers
    strangers: dict[str, dict[str, Any]] = {
        "plaintext": {"bootstrap_servers": bootstrap},
        "TLS without a login": {
            "bootstrap_servers": bootstrap,
            "security_protocol": "SSL",
            "ssl_cafile": admin.ssl_cafile,
        },
        "wrong password": kafka_users["producer"].as_user("producer", "not-the-password").client_kwargs(),
        "unknown user": kafka_users["producer"].as_user("mallory", "a-password-of-her-own").client_kwargs(),
    }
    for who, kwargs in strangers.items():
        for topic in (PROBE, topics.kafka.topic):
            # Not acknowledged: the broker did not take it.
            with pytest.raises(kafka_errors.KafkaError):
                kafka_send(kwargs, topic, b'{"transaction_id": "injected"}', timeout_s=4)
        try:
            got = kafka_read(kwargs, PROBE, timeout_s=4)
        except kafka_errors.KafkaError:
            got = []
        assert got == [], f"{who}: read {len(got)} messages"
    assert kafka_end_offsets(admin, PROBE) == before, "a stranger wrote to the topic"
    # The broker saw the logins and refused them as authentication failures.
    logs = project.run("logs", "--no-color", "kafka", capture=True).stdout
    assert "Failed authentication with" in logs and "invalid credentials" in logs, logs[-2000:]


def test_each_services_user_is_refused_beyond_its_acls(kafka_users: Users, topics: Settings) -> None:
    topic, dlq, group = topics.kafka.topic, topics.kafka.dlq_topic, topics.kafka.consumer_group
    health, producer, consumer, console = (
        kafka_users[u].client_kwargs() for u in ("health", "producer", "consumer", "console")
    )
    denied = kafka_errors.TopicAuthorizationFailedError
    # Airflow's health checks describe and nothing else.
    _refused(lambda: kafka_send(health, topic, b'{"transaction_id": "from-airflow"}'), denied, topic)
    _refused(lambda: kafka_read(health, topic), denied, topic)
    health_settings = dataclasses.replace(kafka_users["health"], topic=topic, dlq_topic=dlq)
    with contextlib.closing(admin_client(health_settings)) as admin:
        assert {t["name"] for t in admin.describe_topics([topic, dlq])} == {topic, dlq}
        _refused(functools.partial(admin.delete_topics, [dlq]), denied, "DeleteTopics")
    # The producer writes transactions, not the dead-letter topic; the consumers cannot inject
    # transactions; the console's replay writes the topic and reads nothing.
    _refused(lambda: kafka_send(producer, dlq, b"x"), denied, dlq)
    _refused(lambda: kafka_send(consumer, topic, b'{"transaction_id": "guessed"}'), denied, topic)
    _refused(lambda: kafka_read(console, topic, group=group), kafka_errors.KafkaError, group)


def test_zookeeper_is_unpublished_and_takes_only_the_brokers_login(project: Project) -> None:
    ports = project.run("port", "zookeeper", "2181", capture=True, check=False)
    assert not ports.stdout.strip(), f"ZooKeeper is published: {ports.stdout}"

    def zk(*command: str, jaas: bool) -> str:
        """ZooKeeper's own CLI from the broker's container, with or without the broker's login."""
        login = ["-Djava.security.auth.login.config=/tmp/kafka-config/jaas.conf"] if jaas else []
        result = project.run(
            *("exec", "-T", "kafka", "java", "-Xmx64m", *login),
            *("-Dlog4j.configuration=file:/opt/kafka/config/log4j.properties", "-cp", "/opt/kafka/lib/*"),
            *("org.apache.zookeeper.ZooKeeperMain", "-server", "zookeeper:2181", *command),
            capture=True,
            check=False,
            timeout=120,
        )
        return result.stdout + result.stderr

    anonymous = zk("get", "/brokers/ids/0", jaas=False)
    assert "Session closed because client failed to authenticate" in anonymous, anonymous[-2000:]
    assert "SASL_SSL" not in anonymous, "an anonymous client read the broker's registration"
    acl = zk("getAcl", "/config/users/broker", jaas=True)
    assert "'sasl,'kafka" in acl, acl[-2000:]
    assert "'world,'anyone\n: cdrwa" not in acl.replace("\r", ""), acl[-2000:]
