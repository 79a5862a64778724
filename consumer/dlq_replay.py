"""Replaying a rejected message: a corrected payload goes back onto the topic it came from.

    python -m consumer.dlq replay REJECTED_ID [--payload-file FILE]   (FILE '-': standard input)

The message is published with the original Kafka key (so it lands on the partition, and behind
the messages, of its account) and a header `txmon-replay-of: topic/partition/offset` naming the
rejected offset. A payload whose transaction_id is already stored is refused: replaying it could
not add anything, and a typo in the id would otherwise store a transaction twice under two ids
only if the operator meant it. The consumer then validates the replayed message like any other:
exactly-once holds, since the pipeline stores a transaction_id at most once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import psycopg2.extensions

from utils.config import KafkaSettings
from utils.errors import TxmonError

REPLAY_HEADER = "txmon-replay-of"
REPLAYED_BY_HEADER = "txmon-replayed-by"


class ReplayRefused(TxmonError):
    """The replay was understood and refused; nothing was published."""


@dataclass(frozen=True, slots=True)
class Rejected:
    rejected_id: int
    topic: str
    partition: int
    offset: int
    key: bytes | None
    payload: bytes


def shown(raw: bytes, limit: int = 4000) -> str:
    """A payload as text for people: undecodable bytes as \\x escapes, long ones cut."""
    text = raw[:limit].decode("utf-8", errors="backslashreplace")
    return text + (f" ... ({len(raw):,} bytes)" if len(raw) > limit else "")


def transaction_id_of(payload: bytes) -> str:
    """The transaction_id a replayed payload carries; refused unless it is a JSON object with one."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ReplayRefused("the payload is not JSON: correct it before replaying") from None
    tid = doc.get("transaction_id") if isinstance(doc, dict) else None
    if not isinstance(tid, str) or not tid.strip():
        raise ReplayRefused("the payload has no transaction_id: a replayed message needs one")
    return tid


def headers(r: Rejected, by: str) -> list[tuple[str, bytes]]:
    return [
        (REPLAY_HEADER, f"{r.topic}/{r.partition}/{r.offset}".encode()),
        (REPLAYED_BY_HEADER, by.encode()),
    ]


def load(conn: psycopg2.extensions.connection, rejected_id: int) -> Rejected:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT rejected_id, kafka_topic, kafka_partition, kafka_offset, message_key, raw_payload "
            "FROM rejected_transactions WHERE rejected_id = %s",
            (rejected_id,),
        )
        row = cur.fetchone()
    if row is None:
        raise ReplayRefused(f"no rejected message {rejected_id}")
    return Rejected(row[0], row[1], row[2], row[3], None if row[4] is None else bytes(row[4]), bytes(row[5]))


def is_stored(cur: psycopg2.extensions.cursor, transaction_id: str) -> bool:
    """Whether a transaction with this id is stored (an equality probe of every day partition's
    transactions_transaction_id_idx)."""
    cur.execute("SELECT 1 FROM transactions WHERE transaction_id = %s", (transaction_id,))
    return cur.fetchone() is not None


def replay(
    conn: psycopg2.extensions.connection,
    kafka: KafkaSettings,
    rejected_id: int,
    corrected: bytes = b"",
    *,
    by: str,
) -> str:
    """Publish the corrected payload (or, empty, the original) for rejected message `rejected_id`."""
    r = load(conn, rejected_id)
    payload = corrected.strip() or r.payload
    tid = transaction_id_of(payload)
    with conn.cursor() as cur:
        if is_stored(cur, tid):
            raise ReplayRefused(f"transaction {tid} is already stored: replaying it would add nothing")
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    producer = KafkaProducer(
        # With the console's own Kafka user and the broker's CA where Kafka is secured (Compose).
        **kafka.client_kwargs(),
        acks="all",
        max_block_ms=10_000,
        client_id=f"txmon-dlq-replay-{os.getpid()}",
    )
    try:
        meta = producer.send(r.topic, value=payload, key=r.key, headers=headers(r, by)).get(timeout=30)
    except KafkaError as exc:
        raise ReplayRefused(
            f"the broker refused the replay: {exc}. Is Kafka at {kafka.bootstrap_servers} up?"
        ) from exc
    finally:
        producer.close(timeout=10)
    return (
        f"replayed rejected message {rejected_id} ({r.topic}/{r.partition}/{r.offset}) as "
        f"{meta.topic}/{meta.partition}/{meta.offset}, transaction {tid}"
    )
