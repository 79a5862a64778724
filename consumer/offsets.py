"""Consumer offsets in PostgreSQL, the source of truth for where each partition resumes.

Table `consumer_offsets` (utils/migrations/003_exactly_once.sql) holds, per (group, topic,
partition), the next offset to read. Each batch advances it inside the batch's own transaction,
and only from the value the batch started at (`advance`): a member that lost the partition while
it was frozen or cut off finds the value moved on, and its whole batch rolls back (it is
*fenced*). Kafka's committed offsets are only a mirror for lag tools.

`plan_start` is the pure decision taken when a partition is gained: resume at the stored offset,
or refuse to read a topic that was deleted and recreated (or truncated), or skip what retention
deleted before it was read; each unusual case is logged loudly by the caller.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psycopg2.extensions

__all__ = [
    "Start",
    "StartKind",
    "Stored",
    "advance",
    "advance_with_xid",
    "commit_status",
    "create",
    "plan_start",
    "read",
]


@dataclass(frozen=True, slots=True)
class Stored:
    next_offset: int
    topic_id: uuid.UUID | None


def read(
    conn: psycopg2.extensions.connection, group: str, topic: str, partitions: Sequence[int]
) -> dict[int, Stored]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT kafka_partition, next_offset, topic_id FROM consumer_offsets "
            "WHERE consumer_group = %s AND kafka_topic = %s AND kafka_partition = ANY(%s)",
            (group, topic, list(partitions)),
        )
        return {
            p: Stored(int(n), None if tid is None else uuid.UUID(str(tid))) for p, n, tid in cur.fetchall()
        }


def create(
    conn: psycopg2.extensions.connection,
    group: str,
    topic: str,
    starts: Mapping[int, int],
    topic_id: uuid.UUID | None,
) -> None:
    """Rows for partitions that have none; a row another member made meanwhile is kept."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO consumer_offsets (consumer_group, kafka_topic, kafka_partition, next_offset, topic_id) "
            "SELECT %s, %s, p, n, %s FROM unnest(%s::int[], %s::bigint[]) AS s(p, n) "
            "ON CONFLICT (consumer_group, kafka_topic, kafka_partition) DO NOTHING",
            (group, topic, None if topic_id is None else str(topic_id), list(starts), list(starts.values())),
        )


def advance(
    cur: psycopg2.extensions.cursor,
    group: str,
    topic: str,
    moves: Mapping[int, tuple[int, int]],
    topic_id: uuid.UUID | None = None,
) -> set[int]:
    """Move each partition's offset from `start` to `end` ({partition: (start, end)}) where it
    still is `start` and was recorded for the topic incarnation `topic_id` (None, or a row
    without one: not checked); returns the partitions where it was not (fenced). Run it first in
    the batch's transaction: its row locks make a second writer of the same partition wait for
    the first to commit, after which the second finds the offset moved."""
    return advance_with_xid(cur, group, topic, moves, topic_id)[0]


def advance_with_xid(
    cur: psycopg2.extensions.cursor,
    group: str,
    topic: str,
    moves: Mapping[int, tuple[int, int]],
    topic_id: uuid.UUID | None = None,
) -> tuple[set[int], int | None]:
    """`advance`, and the transaction's id (txid_current(), for `commit_status` should the
    COMMIT's answer be lost) in the same round trip; None when no row moved."""
    parts = sorted(moves)
    tid = None if topic_id is None else str(topic_id)
    cur.execute(
        "UPDATE consumer_offsets o SET next_offset = m.next, updated_at = clock_timestamp() "
        "FROM unnest(%s::int[], %s::bigint[], %s::bigint[]) AS m(p, start, next) "
        "WHERE o.consumer_group = %s AND o.kafka_topic = %s AND o.kafka_partition = m.p "
        "AND o.next_offset = m.start "
        "AND (o.topic_id IS NULL OR %s::uuid IS NULL OR o.topic_id = %s::uuid) "
        "RETURNING o.kafka_partition, txid_current()",
        (parts, [moves[p][0] for p in parts], [moves[p][1] for p in parts], group, topic, tid, tid),
    )
    rows = cur.fetchall()
    return set(parts) - {r[0] for r in rows}, (int(rows[0][1]) if rows else None)


def commit_status(conn: psycopg2.extensions.connection, xid: int) -> str | None:
    """What became of transaction `xid` (from txid_current()): 'committed', 'aborted',
    'in progress', or None when it is too old to tell."""
    with conn.cursor() as cur:
        cur.execute("SELECT txid_status(%s)", (xid,))
        row = cur.fetchone()
    return None if row is None else row[0]


class StartKind(enum.Enum):
    RESUME = "resume"  # read from the stored offset
    SKIP_DELETED = "skip_deleted"  # retention deleted messages before they were read: start at the log start
    BLOCKED = "blocked"  # the stored offset does not belong to this topic's log: do not read


@dataclass(frozen=True, slots=True)
class Start:
    kind: StartKind
    offset: int  # where to read from (RESUME, SKIP_DELETED)
    message: str = ""


def plan_start(stored: Stored, log_start: int, log_end: int, topic_id: uuid.UUID | None, where: str) -> Start:
    """Where to read a gained partition `where` ("topic/partition") from, given its stored offset
    and the broker's log bounds. A stored offset past the log end, or a topic id other than the
    one recorded, means the topic was recreated (or its log truncated): resuming there would skip
    its new messages, so nothing is read until an operator starts the group afresh
    (docs/operations.md, Recovery procedures). Offsets before the log start were deleted by retention unread: that
    loss already happened in Kafka; the consumer says how many and goes on from the log start."""
    n = stored.next_offset
    if stored.topic_id is not None and topic_id is not None and stored.topic_id != topic_id:
        return Start(
            StartKind.BLOCKED,
            n,
            f"{where}: the topic was deleted and recreated (topic id {stored.topic_id} when the stored "
            f"offset {n} was written, {topic_id} now); not reading it: start the group afresh as docs/operations.md says (Recovery procedures)",
        )
    if n > log_end:
        return Start(
            StartKind.BLOCKED,
            n,
            f"{where}: the stored offset {n} is past the end of the log ({log_end}): the topic was "
            "recreated or its log truncated; not reading it: start the group afresh as docs/operations.md says (Recovery procedures)",
        )
    if n < log_start:
        return Start(
            StartKind.SKIP_DELETED,
            log_start,
            f"{where}: offsets {n}..{log_start - 1} were deleted by retention before this group read "
            f"them ({log_start - n} messages lost in Kafka); continuing from {log_start}",
        )
    return Start(StartKind.RESUME, n)
