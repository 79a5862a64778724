"""Reconciliation of one day: every offset the consumer read is either a stored transaction or a
rejected message, so a gap is a message that was lost; a restart of the offsets is said, not
merged into one range. The arithmetic is in `reports.offsets`; this is its SQL.

The day is the consumer's processing day (`processed_at` / `rejected_at`), the same clock as the
rejection table of the report, so the two always count the same rejected messages.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from reports.day import day_bounds
from reports.offsets import Offset, OffsetRun, PartitionReconciliation, reconcile
from utils.database import Database

log = logging.getLogger(__name__)

# What identifies one log of offsets: the topic and the partition (transactions carry their topic
# since migration 040), so reconciliation is per topic and partition.
_STREAM = sql.SQL("kafka_topic, kafka_partition")

_OFFSETS_SQL = sql.SQL(
    """
SELECT {stream}, kafka_offset, processed_at, true FROM transactions
WHERE processed_at >= %(start)s AND processed_at < %(end)s
UNION ALL
SELECT {stream}, kafka_offset, rejected_at, false FROM rejected_transactions
WHERE rejected_at >= %(start)s AND rejected_at < %(end)s
"""
).format(stream=_STREAM)

# The last offset each partition accounted for before the day, looked for in the day before
# (a bounded scan): the last stored row, or a rejection written after it (rejections follow the
# stored rows of their batch). Older history does not matter: a gap across a whole idle day is
# not something this can see, and the report says the first offset of the day.
_PREVIOUS_SQL = sql.SQL(
    """
WITH s AS (
    SELECT DISTINCT ON (kafka_topic, kafka_partition) kafka_topic, kafka_partition, kafka_offset, processed_at
    FROM (SELECT {stream}, kafka_offset, processed_at FROM transactions
          WHERE processed_at >= %(since)s AND processed_at < %(start)s) t
    ORDER BY kafka_topic, kafka_partition, processed_at DESC
), r AS (
    SELECT kafka_topic, kafka_partition, max(x.kafka_offset) AS kafka_offset
    FROM (SELECT {stream}, kafka_offset, rejected_at FROM rejected_transactions
          WHERE rejected_at >= %(since)s AND rejected_at < %(start)s) x
    LEFT JOIN s USING (kafka_topic, kafka_partition)
    WHERE s.processed_at IS NULL OR x.rejected_at >= s.processed_at
    GROUP BY 1, 2
)
SELECT kafka_topic, kafka_partition, greatest(s.kafka_offset, r.kafka_offset)
FROM s FULL JOIN r USING (kafka_topic, kafka_partition)
"""
).format(stream=_STREAM)


def _store(cur: psycopg2.extensions.cursor, day: date, result: list[PartitionReconciliation]) -> None:
    cur.execute("DELETE FROM reconciliation WHERE day = %s", (day,))
    rows = [
        (
            day,
            p.topic,
            p.partition,
            i,
            run.first_offset,
            run.last_offset,
            p.previous_offset,
            run.stored,
            run.rejected,
            run.missing,
            psycopg2.extras.Json([list(g) for g in run.gaps]),
            run.restarted,
        )
        for p in result
        for i, run in enumerate(p.runs)
    ]
    if rows:
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO reconciliation (day, kafka_topic, kafka_partition, run, min_offset, max_offset, "
            "previous_offset, stored, rejected, missing, gaps, restarted) VALUES %s",
            rows,
        )


def reconcile_day(db: Database, day: date) -> list[PartitionReconciliation]:
    """The day's offsets per partition, in runs, with gaps and restarts; replaces the day's rows
    of table `reconciliation` (one per partition and run) in the same transaction."""
    start, end = day_bounds(day)
    params = {"start": start, "end": end, "since": start - timedelta(days=1)}
    with db.snapshot() as cur:
        cur.execute(_OFFSETS_SQL, params)
        items = [Offset(t, int(p), int(o), at, bool(s)) for t, p, o, at, s in cur.fetchall()]
        cur.execute(_PREVIOUS_SQL, params)
        previous = {(t, int(p)): (None if o is None else int(o)) for t, p, o in cur.fetchall()}
        result = reconcile(items, previous)
        _store(cur, day, result)
    missing = sum(p.missing for p in result)
    restarts = [p.partition for p in result if p.restarts]
    if restarts:
        log.warning("reconciliation %s: offsets restarted in partitions %s (topic recreated?)", day, restarts)
    if missing:
        log.warning(
            "reconciliation %s: %d offsets missing in partitions %s",
            day,
            missing,
            [p.partition for p in result if p.missing],
        )
    else:
        log.info("reconciliation %s: %d partitions, no gaps", day, len(result))
    return result


def read_reconciliation(cur: psycopg2.extensions.cursor, day: date) -> list[PartitionReconciliation]:
    """The day's stored reconciliation, as `reconcile_day` returned it."""
    cur.execute(
        "SELECT kafka_topic, kafka_partition, previous_offset, min_offset, max_offset, stored, rejected, "
        "gaps, restarted FROM reconciliation WHERE day = %s ORDER BY kafka_topic, kafka_partition, run",
        (day,),
    )
    out: dict[tuple[str, int], PartitionReconciliation] = {}
    for topic, partition, previous, lo, hi, stored, rejected, gaps, restarted in cur.fetchall():
        p = out.setdefault((topic, partition), PartitionReconciliation(topic, partition, previous, []))
        p.runs.append(
            OffsetRun(
                lo, hi, int(stored), int(rejected), [(int(a), int(b)) for a, b in gaps], bool(restarted)
            )
        )
    return list(out.values())
