"""Event time that a client cannot forge, through the real broker (docs/event-time.md).

A message's event time is accepted only near its Kafka record's timestamp (consumer/validation.py),
and the record's CreateTime is chosen by the client. What bounds it is the broker: topics the
project creates, and every topic of the brokers it runs, refuse a record stamped more than
`message.timestamp.after.max.ms` after the broker's clock. A record dated 2099 therefore never
reaches a consumer, whatever its event time says.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from kafka import KafkaProducer
from kafka.errors import InvalidTimestampError

from stack.orchestrator import StackEnv
from utils.config import KafkaSettings
from utils.kafka_cleanup import (
    TIMESTAMP_AFTER_MAX_MS,
    admin_client,
    delete_topics,
    ensure_topics,
    topic_configs,
)

FAR_FUTURE_MS = int(datetime(2099, 1, 1, tzinfo=UTC).timestamp() * 1000)
PAST_MS = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)  # fixed: no wall clock


@pytest.fixture
def producer(stack_env: StackEnv) -> Iterator[KafkaProducer]:
    p = KafkaProducer(bootstrap_servers=stack_env.kafka_bootstrap_servers, acks="all", retries=0)
    try:
        yield p
    finally:
        p.close(timeout=10)


def _refused(producer: KafkaProducer, topic: str, timestamp_ms: int) -> bool:
    future = producer.send(topic, key=b"ACC-1", value=b"{}", timestamp_ms=timestamp_ms)
    try:
        future.get(timeout=30)
    except InvalidTimestampError:
        return True
    return False


def test_topics_the_project_creates_refuse_a_far_future_record_time(
    stack_env: StackEnv, producer: KafkaProducer
) -> None:
    name = f"tx-time-{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings(
        bootstrap_servers=stack_env.kafka_bootstrap_servers, topic=name, dlq_topic=f"{name}-dlq"
    )
    admin = admin_client(stack_env.kafka_bootstrap_servers)
    try:
        ensure_topics(admin, kafka, partitions=1, replication_factor=1)
        assert topic_configs(admin, name)["message.timestamp.after.max.ms"] == str(TIMESTAMP_AFTER_MAX_MS)
        assert _refused(producer, name, FAR_FUTURE_MS)
        assert not _refused(producer, name, PAST_MS)  # backfills and replays from elsewhere pass
    finally:
        delete_topics(admin, [name, f"{name}-dlq"])
        admin.close()


def test_the_brokers_the_project_runs_bound_every_topic(
    topic_factory: Callable[..., str], producer: KafkaProducer
) -> None:
    """A topic made by someone else (or auto-created on first use) gets the broker's default."""
    topic = topic_factory("foreign", 1)
    assert _refused(producer, topic, FAR_FUTURE_MS)
    assert not _refused(producer, topic, PAST_MS)
