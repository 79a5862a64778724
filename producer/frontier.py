"""Where a simulated stream left off: the latest event time already on the topic.

A simulated run starts after it (generator.simulated_start), so consecutive runs over the same
account pool never write the same stretch of an account's history twice. The topic itself is the
state: no file to lose between containers, and a recreated topic starts afresh.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from producer.generator import MAX_LEAD, simulated_start
from utils.config import KafkaSettings

log = logging.getLogger(__name__)

__all__ = ["continue_after_topic", "topic_frontier"]


def continue_after_topic(kafka: KafkaSettings, topic: str, *, days_back: float) -> datetime:
    """Where a simulated run on `topic` starts: after its latest event (generator.simulated_start)."""
    frontier = topic_frontier(kafka, topic)
    start = simulated_start(datetime.now(UTC), frontier, days_back=days_back)
    log.info(
        "simulated clock starts at %s (%s)", start.isoformat(),
        "after the latest event on the topic" if frontier and start >= frontier
        else f"{days_back:g} days back: nothing later on the topic",
    )  # fmt: skip
    return start


def topic_frontier(kafka: KafkaSettings, topic: str, *, timeout_s: float = 10.0) -> datetime | None:
    """The newest `timestamp` among the last message of each partition of `topic`, plus MAX_LEAD
    (a simulated incident stamps its legs up to that far ahead of messages sent after it); None
    for an empty or unreadable topic. Messages that are not our JSON are ignored."""
    consumer = KafkaConsumer(
        **kafka.client_kwargs(),
        enable_auto_commit=False,
        client_id="txmon-producer-frontier",
        consumer_timeout_ms=int(timeout_s * 1000),
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return None
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        starts = consumer.beginning_offsets(tps)
        wanted = {tp for tp in tps if ends[tp] > starts[tp]}
        for tp in wanted:
            consumer.seek(tp, ends[tp] - 1)
        newest: datetime | None = None
        deadline = time.monotonic() + timeout_s
        while wanted and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    if record.offset >= ends[tp] - 1:
                        wanted.discard(tp)
                    stamp = _timestamp(record.value)
                    if stamp is not None and (newest is None or stamp > newest):
                        newest = stamp
        if wanted:
            log.warning("could not read the last message of %d partitions of %s", len(wanted), topic)
        return None if newest is None else newest + MAX_LEAD
    except KafkaError as exc:
        log.warning("cannot read where %s ends (%s): starting the simulated clock afresh", topic, exc)
        return None
    finally:
        consumer.close()


def _timestamp(value: bytes | None) -> datetime | None:
    try:
        doc = orjson.loads(value or b"")
        stamp = datetime.fromisoformat(doc["timestamp"])
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
        return None
    return stamp if stamp.tzinfo is not None else None
