"""The tests' model of a clean run, and how to read what Kafka holds.

`expected(settings, records)` is what one quiet consumer stores for these records: the
consumer's pure core (consumer/batch.py) over the whole stream at once, every account starting
empty and never leaving memory (unbounded cache), in partition order. Rules only read their
account's history and an account lives in one partition, so partition order is the order every
consumer sees, however often it is killed, frozen or rebalanced: a real run under faults must
store exactly this. The model applies the same per-account bounds as the consumer (count, and
age relative to the evaluated event), so eviction is part of what is compared.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from consumer.account_state import AccountStates
from consumer.batch import evaluate_batch, validate_records
from utils.config import Settings


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None
    timestamp_type: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(slots=True)
class Expected:
    good: dict[str, tuple[int, int]] = field(default_factory=dict)  # transaction_id -> (partition, offset)
    bad: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (partition, offset) -> raw bytes
    reasons: dict[tuple[int, int], str] = field(default_factory=dict)  # (partition, offset) -> reason
    alerts: set[tuple[str, str]] = field(default_factory=set)  # (transaction_id, alert_type)


def expected(
    s: Settings,
    *phases: Iterable[Record],
    stored: Iterable[tuple[Any, ...]] = (),
    partition_counts: Collection[int] | None = None,
) -> Expected:
    """What a clean run stores for the records of `phases`, processed one phase after the other
    (the messages of a later phase were produced after the earlier ones were all consumed, e.g.
    after partitions were added; usually there is one). `stored`: rows already in the database
    before the run (HistoryRow order), the accounts' history at the start. `partition_counts`:
    the topic's partition counts, where a key may be (None: placements are not checked)."""
    cs = s.consumer
    states = AccountStates(cs.state_max_events_per_account, cs.state_history_hours * 3600.0)
    rows = list(stored)
    states.load({r[0] for r in rows}, rows)
    exp = Expected()
    for group in phases:
        by_tp: dict[TopicPartition, list[Record]] = defaultdict(list)
        for r in sorted(group, key=lambda r: (r.partition, r.offset)):
            by_tp[TopicPartition(s.kafka.topic, r.partition)].append(r)
        batch = validate_records(by_tp, s.validation, s.rules.rate_table(), partition_counts=partition_counts)
        states.load(states.missing(batch.accounts()), [])
        evaluate_batch(batch, states, s.rules)
        for rej in batch.rejections:
            exp.bad[(rej.partition, rej.offset)] = rej.raw
            exp.reasons[(rej.partition, rej.offset)] = rej.reason
        for t in batch.txns:
            exp.good[t.transaction_id] = (t.kafka_partition, t.kafka_offset)
        exp.alerts.update((a.transaction_id, a.alert_type) for a in batch.alerts)
    return exp


def read_topic(s: Settings, topic: str, timeout: float = 120.0) -> list[Record]:
    """Every record of `topic`, ordered by (partition, offset)."""
    c = KafkaConsumer(
        bootstrap_servers=s.kafka.bootstrap_servers,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
        client_id="txmon-test-reader",
    )
    try:
        deadline = time.monotonic() + timeout
        while not (parts := c.partitions_for_topic(topic)):
            assert time.monotonic() < deadline, f"no metadata for {topic}"
            time.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        out: list[Record] = []
        while any(c.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"reading {topic} took over {timeout:.0f}s"
            for tp, recs in c.poll(timeout_ms=500).items():
                out.extend(
                    Record(
                        tp.partition,
                        r.offset,
                        r.key,
                        r.value,
                        r.timestamp,
                        r.timestamp_type,
                        tuple(r.headers or ()),
                    )
                    for r in recs
                )
    finally:
        c.close()
    return sorted(out, key=lambda r: (r.partition, r.offset))
