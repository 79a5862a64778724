"""The partition counts a topic incarnation has had (table `topic_partition_counts`, migration 065).

A member records the count its metadata shows whenever it sets partitions up, and reads back
every count any member recorded: validation accepts a message where Kafka's default partitioner
puts its key under one of them (consumer/validation.py `wrong_partition`), so keys moved by
add-partitions stay valid in their old partition as in their new one.
"""

from __future__ import annotations

import uuid

import psycopg2.extensions

__all__ = ["record"]


def record(
    conn: psycopg2.extensions.connection, topic: str, topic_id: uuid.UUID, count: int
) -> frozenset[int]:
    """Add `count` (ignored when not positive: no metadata) and return every count recorded."""
    with conn.cursor() as cur:
        if count > 0:
            cur.execute(
                "INSERT INTO topic_partition_counts (kafka_topic, kafka_topic_id, partition_count) "
                "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (topic, str(topic_id), count),
            )
        cur.execute(
            "SELECT partition_count FROM topic_partition_counts WHERE kafka_topic = %s AND kafka_topic_id = %s",
            (topic, str(topic_id)),
        )
        return frozenset(int(n) for (n,) in cur.fetchall())
