"""Baseline 1: the consumer anyone writes first. One message -> json.loads -> INSERT -> COMMIT.

    python bench/naive_consumer.py [--max-messages N] [--max-seconds S] [--max-idle-seconds S]

Same topic, same table, same columns as the real consumer; no validation, no rules, no
batching. Kafka and PostgreSQL settings come from the environment (KAFKA_*, POSTGRES_*), as
for the pipeline. Prints one line `naive summary: stored=N elapsed=S rate=R/s` at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg2
from kafka import KafkaConsumer

from consumer.storage import TXN_COLUMNS
from utils.config import load_settings

_COLUMNS_SQL = ", ".join(f'"{c}"' for c in TXN_COLUMNS)
_INSERT = f"INSERT INTO transactions ({_COLUMNS_SQL}) VALUES ({', '.join(['%s'] * len(TXN_COLUMNS))})"


def naive_row(
    value: bytes, topic: str, partition: int, offset: int, timestamp_ms: int | None
) -> list[object]:
    """The message's fields by column name, its Kafka coordinates after them; nothing checked or
    converted (amount_base stays NULL), as the first consumer anyone writes would do."""
    msg = json.loads(value)
    coordinates = {
        "kafka_topic": topic,
        "kafka_partition": partition,
        "kafka_offset": offset,
        "kafka_timestamp_ms": timestamp_ms,
        "timestamp": datetime.fromisoformat(msg["timestamp"]),
    }
    return [coordinates[c] if c in coordinates else msg.get(c) for c in TXN_COLUMNS]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/naive_consumer.py", description=__doc__.split("\n")[0])
    p.add_argument("--max-messages", type=int, default=0, help="stop after this many (0: no limit)")
    p.add_argument(
        "--max-seconds", type=float, default=0.0, help="stop after this long consuming (0: no limit)"
    )
    p.add_argument(
        "--max-idle-seconds", type=float, default=2.0, help="stop after this long without messages"
    )
    args = p.parse_args(argv)
    settings = load_settings()
    k = settings.kafka
    conn = psycopg2.connect(settings.postgres.dsn())
    consumer = KafkaConsumer(
        k.topic,
        **k.client_kwargs(),
        group_id=k.consumer_group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        session_timeout_ms=settings.consumer.session_timeout_ms,
    )
    stored = 0
    first = last = None
    joined_at = None
    try:
        with conn.cursor() as cur:
            while True:
                records = consumer.poll(timeout_ms=500)
                now = time.monotonic()
                if joined_at is None and consumer.assignment():
                    joined_at = now
                if not records:
                    idle_since = last or joined_at
                    if idle_since is not None and now - idle_since >= args.max_idle_seconds:
                        break
                    continue
                for tp, recs in records.items():
                    for rec in recs:
                        cur.execute(
                            _INSERT, naive_row(rec.value, tp.topic, tp.partition, rec.offset, rec.timestamp)
                        )
                        conn.commit()
                        stored += 1
                first = first or time.monotonic()
                last = time.monotonic()
                if (args.max_messages and stored >= args.max_messages) or (
                    args.max_seconds and last - first >= args.max_seconds
                ):
                    break
    finally:
        consumer.close()
        conn.close()
    elapsed = (last - first) if first and last else 0.0
    rate = stored / elapsed if elapsed > 0 else 0.0
    print(f"naive summary: stored={stored} elapsed={elapsed:.1f}s rate={rate:.0f}/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
