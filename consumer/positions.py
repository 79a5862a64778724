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
    before it (0: nothing yet), raised past `last` in the same transaction.

    Serialised per partition: the row is locked (FOR UPDATE) before it is read, so a concurrent
    batch of another group on the same positions waits for this one's commit and then finds the
    value it raised: it writes nothing twice. Since migration 090 this carries the idempotency of
    rejections and alerts (their tables are partitioned by day, so a unique key on the Kafka
    position can no longer stand alone); transaction_ids' primary key stays as a second guard for
    transactions. A partition's first batch inserts the row; two first batches meet on its
    primary key, and the later one, having waited, reads it like any other."""
    if not spans:
        return {}
    parts = sorted(spans)
    found = _lock_and_raise(cur, topic, topic_id, parts, spans)
    missing = [p for p in parts if p not in found]
    if missing:
        cur.execute(
            """INSERT INTO stored_positions (kafka_topic, kafka_topic_id, kafka_partition, next_offset)
               SELECT %(topic)s, %(tid)s, p, n FROM unnest(%(ps)s::int[], %(ns)s::bigint[]) AS m(p, n)
               ORDER BY p
               ON CONFLICT (kafka_topic, kafka_topic_id, kafka_partition) DO NOTHING
               RETURNING kafka_partition""",
            {"topic": topic, "tid": str(topic_id), "ps": missing, "ns": [spans[p][1] + 1 for p in missing]},
        )
        made = {int(r[0]) for r in cur.fetchall()}
        found.update(dict.fromkeys(made, 0))
        raced = [p for p in missing if p not in made]  # another batch made the row and committed
        if raced:
            found.update(_lock_and_raise(cur, topic, topic_id, raced, spans))
    return {p: found.get(p, 0) for p in parts}


def _lock_and_raise(
    cur: psycopg2.extensions.cursor,
    topic: str,
    topic_id: uuid.UUID,
    parts: list[int],
    spans: Mapping[int, tuple[int, int]],
) -> dict[int, int]:
    """The rows' next_offset as last committed (FOR UPDATE waits for a concurrent batch and then
    reads its version), raised past each span in the same statement; partitions without a row
    are absent."""
    cur.execute(
        """WITH before AS (
               SELECT kafka_partition, next_offset FROM stored_positions
               WHERE kafka_topic = %(topic)s AND kafka_topic_id = %(tid)s AND kafka_partition = ANY(%(ps)s)
               ORDER BY kafka_partition
               FOR UPDATE
           ), raised AS (
               UPDATE stored_positions s
               SET next_offset = greatest(b.next_offset, m.n), updated_at = clock_timestamp()
               FROM before b JOIN unnest(%(ps)s::int[], %(ns)s::bigint[]) AS m(p, n) ON m.p = b.kafka_partition
               WHERE s.kafka_topic = %(topic)s AND s.kafka_topic_id = %(tid)s
                 AND s.kafka_partition = b.kafka_partition
           )
           SELECT kafka_partition, next_offset FROM before""",
        {"topic": topic, "tid": str(topic_id), "ps": parts, "ns": [spans[p][1] + 1 for p in parts]},
    )
    return {int(p): int(n) for p, n in cur.fetchall()}


def new_from(spans: Mapping[int, tuple[int, int]], stored: Mapping[int, int]) -> dict[int, int]:
    """partition -> the first offset of the batch not stored before it, for the partitions where
    the batch stores anything (`stored`: what `claim` returned)."""
    return {p: max(first, stored[p]) for p, (first, last) in spans.items() if last >= stored[p]}
