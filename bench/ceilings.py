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
* psql COPY ceiling: PostgreSQL's own client loading the same rows from a file (`\\copy
  transactions (...) FROM 'file'`, one statement, one transaction, timed by psql's `\\timing`):
  the physical ceiling, with no Python at all on the client side.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
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


_TIMING = re.compile(r"^Time: ([0-9.]+) ms", re.MULTILINE)


def psql_copy_ceiling(settings: Settings, txns: list[Transaction]) -> dict[str, Any]:
    """The same rows as the COPY ceiling, written to a file in write_batch's COPY text format
    (untimed), then loaded by psql's `\\copy` in one statement; rows/s from psql's `\\timing`.
    Falls back to psycopg2's copy_expert of the same file where no psql is installed."""
    pg = settings.postgres
    with tempfile.TemporaryDirectory(prefix="txmon-psql-copy-") as tmp:
        path = Path(tmp) / "rows.copy"
        path.write_text(storage.copy_rows(txns))
        columns = ", ".join(f'"{c}"' for c in storage.COPY_COLUMNS)
        psql = shutil.which("psql")
        if psql is None:
            seconds = _copy_expert_file(settings, path, columns)
            return {
                "rows": len(txns),
                "seconds": round(seconds, 3),
                "rate": len(txns) / seconds if seconds > 0 else None,
                "client": "copy_expert",
            }
        user = pg.migration_user or pg.user
        password = pg.migration_password if pg.migration_user else pg.password
        started = time.perf_counter()
        done = subprocess.run(
            [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", pg.host, "-p", str(pg.port), "-U", user,
             "-d", pg.db, "-c", "\\timing on", "-c", f"\\copy transactions ({columns}) FROM '{path}'"],
            env={**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"},
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"psql \\copy failed ({done.returncode}): {done.stderr.strip()[:500]}")
    found = _TIMING.findall(done.stdout)
    seconds = float(found[-1]) / 1000.0 if found else wall
    return {
        "rows": len(txns),
        "seconds": round(seconds, 3),
        "process_seconds": round(wall, 3),  # with psql's start-up and connection
        "rate": len(txns) / seconds if seconds > 0 else None,
        "client": "psql",
    }


def _copy_expert_file(settings: Settings, path: Path, columns: str) -> float:
    db = database.Database(settings.postgres, maxconn=1)
    try:
        with db.connection() as conn, conn.cursor() as cur:
            started = time.perf_counter()
            with path.open("rb") as f:
                cur.copy_expert(f"COPY transactions ({columns}) FROM STDIN", f, size=1 << 20)
            conn.commit()
            seconds = time.perf_counter() - started
    finally:
        db.close()
    return seconds
