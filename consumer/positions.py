"""Which Kafka positions the database has stored, per topic incarnation (migration 060).

A topic deleted and recreated under the same name starts its offsets at 0 again, so a position
is (topic, incarnation, partition, offset), the incarnation being Kafka's topic id (KIP-516), or
`NIL` where the broker reports none. `stored_positions` holds, per (topic, incarnation,
partition), the next offset not yet stored: every position below it was stored or rejected once.
Each batch raises it in its own transaction (`claim`) and writes only what lies at or above the
value it found, so nothing below it is ever inserted again: not after retention deleted the
rows (with topic retention longer than RETENTION_DAYS), not when an operator rewinds a group,
not when a new group reads the topic from its start. Those messages are still read and
evaluated (their accounts' histories need them), but they add no row, no alert, no rejection
and no rule_set_applied line.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import psycopg2.extensions

__all__ = ["NIL", "claim", "incarnation", "new_from"]

NIL = uuid.UUID(int=0)  # the incarnation of a topic whose broker reports no topic id


def incarnation(topic_id: uuid.UUID | None) -> uuid.UUID:
    return NIL if topic_id is None else topic_id


def claim(
    cur: psycopg2.extensions.cursor, topic: str, topic_id: uuid.UUID, spans: Mapping[int, tuple[int, int]]
) -> dict[int, int]:
    """For each partition of a batch ({partition: (first, last) offset}), the next offset stored
    before it (0: nothing yet), raised past `last` in the same statement. Concurrent batches of
    two groups may both find the old value: both then write the same positions, and the
    idempotent writes (transaction_id, rejected_one_per_message) keep one of each. (A data-modifying
    WITH runs once whether or not the query reads it, and `before` sees the rows as they were.)"""
    if not spans:
        return {}
    parts = sorted(spans)
    cur.execute(
        """WITH before AS (
               SELECT kafka_partition, next_offset FROM stored_positions
               WHERE kafka_topic = %(topic)s AND kafka_topic_id = %(tid)s AND kafka_partition = ANY(%(ps)s)
           ), raised AS (
               INSERT INTO stored_positions (kafka_topic, kafka_topic_id, kafka_partition, next_offset)
               SELECT %(topic)s, %(tid)s, p, n FROM unnest(%(ps)s::int[], %(ns)s::bigint[]) AS m(p, n)
               ON CONFLICT (kafka_topic, kafka_topic_id, kafka_partition) DO UPDATE
               SET next_offset = greatest(stored_positions.next_offset, EXCLUDED.next_offset),
                   updated_at = clock_timestamp()
           )
           SELECT kafka_partition, next_offset FROM before""",
        {"topic": topic, "tid": str(topic_id), "ps": parts, "ns": [spans[p][1] + 1 for p in parts]},
    )
    found = {int(p): int(n) for p, n in cur.fetchall()}
    return {p: found.get(p, 0) for p in parts}


def new_from(spans: Mapping[int, tuple[int, int]], stored: Mapping[int, int]) -> dict[int, int]:
    """partition -> the first offset of the batch not stored before it, for the partitions where
    the batch stores anything (`stored`: what `claim` returned)."""
    return {p: max(first, stored[p]) for p, (first, last) in spans.items() if last >= stored[p]}
