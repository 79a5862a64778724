"""Baseline 2: the raw speed of each stage alone, in this process.

* Kafka read ceiling: kafka-python (with crc32c when installed) reading a topic from the start,
  decoding each value with orjson; nothing else. Partitions are assigned directly, so no group
  join is timed.
* COPY ceiling: the same rows, already parsed, written with `consumer.storage.write_batch` in
  batches of the consumer's size, one database transaction per batch, no alerts, no Kafka:
  the consumer's own write (COPY straight into the table, in a savepoint), i.e. raw COPY.
* Staging COPY ceiling: the same, through write_batch's idempotent fallback (COPY into a temp
  staging table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING), the "idempotent COPY" of
  ../shared/TECH-NOTES.md and of the issue's target.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

from consumer import storage
from consumer.validation import validate
from utils import database
from utils.config import Settings
from utils.models import Transaction


@dataclass(slots=True)
class KafkaRead:
    messages: int
    seconds: float
    records: list[tuple[int, int, bytes | None, bytes]]  # (partition, offset, key, value)

    @property
    def rate(self) -> float | None:
        return self.messages / self.seconds if self.seconds > 0 else None


def kafka_read(
    settings: Settings, expected: int, *, keep: bool = True, timeout_s: float = 120.0
) -> KafkaRead:
    """Read `expected` messages of the settings' topic from the beginning and decode them."""
    k = settings.kafka
    consumer = KafkaConsumer(
        **k.client_kwargs(),
        group_id=None,
        enable_auto_commit=False,
        max_poll_records=settings.consumer.max_poll_records,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
        client_id="txmon-bench-ceiling",
    )
    try:
        parts = sorted(consumer.partitions_for_topic(k.topic) or ())
        tps = [TopicPartition(k.topic, p) for p in parts]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[tuple[int, int, bytes | None, bytes]] = []
        loads = orjson.loads
        n = 0
        started = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        while n < expected and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500, max_records=settings.consumer.max_poll_records)
            for tp, recs in batch.items():
                for rec in recs:
                    loads(rec.value)
                    if keep:
                        records.append((tp.partition, rec.offset, rec.key, rec.value))
                n += len(recs)
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
    return KafkaRead(n, seconds, records)


def parse_rows(settings: Settings, records: list[tuple[int, int, bytes | None, bytes]]) -> list[Transaction]:
    """The records as the consumer would store them (untimed preparation for the COPY ceiling)."""
    now_ms = int(time.time() * 1000)
    out = []
    for partition, offset, key, value in records:
        item = validate(
            value,
            topic=settings.kafka.topic,
            partition=partition,
            offset=offset,
            key=key,
            limits=settings.validation,
            kafka_timestamp_ms=now_ms,
        )
        if isinstance(item, Transaction):
            out.append(item)
    return out


def copy_ceiling(settings: Settings, txns: list[Transaction], *, direct: bool = True) -> dict[str, Any]:
    """Write `txns` with write_batch in consumer-sized batches; rows/s over the whole write."""
    size = settings.consumer.max_poll_records
    db = database.Database(settings.postgres, maxconn=1)
    inserted = 0
    try:
        # Connect before the clock starts.
        with db.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
        started = time.perf_counter()
        for i in range(0, len(txns), size):
            with db.connection() as conn:
                result = storage.write_batch(conn, txns[i : i + size], [], [], direct=direct)
            inserted += result.inserted
        seconds = time.perf_counter() - started
    finally:
        db.close()
    return {
        "rows": len(txns),
        "inserted": inserted,
        "seconds": round(seconds, 3),
        "rate": len(txns) / seconds if seconds > 0 else None,
        "batch_size": size,
    }
