"""The consumer's SQL for transactions: one polled batch written idempotently in the caller's
transaction (COPY, with an idempotent staging path for replays), the rows the database refuses,
and the query that loads accounts into memory. Offsets live in consumer/offsets.py.
"""

from __future__ import annotations

import dataclasses
import io
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from consumer.positions import NIL
from utils.database import is_outage
from utils.errors import TxmonError
from utils.models import Alert, Rejection, Transaction

# The dataclass's field order; copy_rows() writes the same order (a unit test holds them together),
# then the topic's incarnation, which the batch names (consumer/positions.py).
TXN_COLUMNS = tuple(f.name for f in dataclasses.fields(Transaction) if f.init)
COPY_COLUMNS = (*TXN_COLUMNS, "kafka_topic_id")
_TXN_COLS_SQL = ", ".join(f'"{c}"' for c in COPY_COLUMNS)
_STAGE_COLS_SQL = ", ".join(f's."{c}"' for c in COPY_COLUMNS)
# The registry of stored ids (migration 090): transactions is partitioned by day, so its own
# unique keys would include the day; business-id uniqueness across days is this table's key.
_ID_COLS_SQL = "transaction_id, kafka_topic, kafka_topic_id, kafka_partition, kafka_offset"

# COPY's text format: backslash, tab, newline and carriage return must be escaped.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str | None) -> str:
    if value is None:
        return "\\N"
    # isprintable() is False for tab, newline and CR: one C scan settles nearly every value
    # without building a translated copy.
    if value.isprintable() and "\\" not in value:
        return value
    return value.translate(_COPY_ESCAPES)


class _Escaped(dict[str | None, str]):
    """value -> `_copy_text(value)`, filled on first use: one batch's merchants, categories,
    cities and topic repeat, and a dictionary hit costs less than a call per field."""

    def __missing__(self, value: str | None) -> str:
        out = self[value] = _copy_text(value)
        return out


def copy_rows(txns: Sequence[Transaction], topic_id: uuid.UUID = NIL) -> str:
    """The COPY payload for a batch of one topic incarnation: one tab-separated line per
    transaction (~2 µs per row; a join of a tuple measured ~2x faster here than one f-string
    with the same fields)."""
    esc = _copy_text  # ids: a new one every row
    seen = _Escaped()  # the texts that repeat
    null = "\\N"
    incarnation = str(topic_id)
    lines = [
        "\t".join(
            (
                esc(t.transaction_id),
                seen[t.account_id],
                t.transaction_type,
                f"{t.amount:.2f}",
                t.currency,
                t.timestamp_text or t.timestamp.isoformat(),  # the text as sent when it is exactly that
                t.channel,
                t.country,
                seen[t.merchant],
                seen[t.merchant_category],
                seen[t.city],
                null if t.latitude is None else repr(t.latitude),
                null if t.longitude is None else repr(t.longitude),
                seen[t.simulated_scenario],
                seen[t.simulated_incident],
                f"{t.amount_base:.2f}",
                str(t.schema_version),
                seen[t.kafka_topic],
                str(t.kafka_partition),
                str(t.kafka_offset),
                null if t.kafka_timestamp_ms is None else str(t.kafka_timestamp_ms),
                incarnation,
            )
        )
        for t in txns
    ]
    lines.append("")
    return "\n".join(lines)


@dataclass(slots=True)
class BatchResult:
    inserted: int = 0  # new transactions stored by this batch
    already_stored: int = 0  # the same Kafka message was stored before (a replay)
    alerts_inserted: int = 0
    rejected_inserted: int = 0
    alerts_by_type: Counter[str] = field(default_factory=Counter)  # of the alerts actually stored
    alerts_by_rule_severity: Counter[tuple[str, str]] = field(default_factory=Counter)
    inserted_at: set[tuple[int, int]] | None = None  # (partition, offset) inserted; None: every one
    write_s: float = 0.0  # the database transaction, set by the consumer
    stored_at: float = 0.0  # Unix time of the commit, set by the consumer


class StoredElsewhere(TxmonError):
    """Some transaction ids of the batch are already stored from other Kafka messages (an id
    reused across batches or partitions). The rules already saw those messages, so the caller
    rolls the transaction back and prepares the batch again knowing where each id is stored."""

    def __init__(self, stored_at: dict[str, tuple[str, int, int, uuid.UUID]]) -> None:
        super().__init__(f"{len(stored_at)} transaction ids already stored from other messages")
        # transaction_id -> (topic, partition, offset, topic incarnation) of the stored row
        self.stored_at = stored_at


def _copy_in(cur: psycopg2.extensions.cursor, table: str, payload: str, prelude: bytes = b"") -> None:
    """COPY the payload into `table`; `prelude`: statements (`;`-terminated) the server runs first,
    in the same round trip (the simple query protocol runs them in order, then enters the COPY)."""
    # One read() for the whole payload: psycopg2 drops the GIL for every chunk it sends and must
    # win it back from the busy polling thread for the next read (up to the 5 ms switch interval
    # each time); at its default 8 kB chunks a 5,000-row batch paid that ~150 times.
    data = payload.encode()
    statement = prelude + f"COPY {table} ({_TXN_COLS_SQL}) FROM STDIN".encode()
    cur.copy_expert(statement.decode(), io.BytesIO(data), size=len(data) + 1)


def _copy_ids(cur: psycopg2.extensions.cursor, txns: Sequence[Transaction], topic_id: uuid.UUID) -> None:
    """Register the batch's ids with their Kafka positions (after the rows: a registry row's
    processed_at is then never before its transaction's, which retention relies on). A
    UniqueViolation here is an id stored before, by this batch's message or another."""
    esc = _copy_text
    incarnation = str(topic_id)
    lines = [
        f"{esc(t.transaction_id)}\t{esc(t.kafka_topic)}\t{incarnation}\t{t.kafka_partition}\t{t.kafka_offset}"
        for t in txns
    ]
    lines.append("")
    data = "\n".join(lines).encode()
    cur.copy_expert(f"COPY transaction_ids ({_ID_COLS_SQL}) FROM STDIN", io.BytesIO(data), size=len(data) + 1)


def _ensure_staging(cur: psycopg2.extensions.cursor) -> None:
    # Session-local, emptied by every commit: nothing leaks between batches or consumers.
    cur.execute(
        "CREATE TEMP TABLE IF NOT EXISTS txn_stage "
        "(LIKE transactions INCLUDING DEFAULTS EXCLUDING CONSTRAINTS) ON COMMIT DELETE ROWS"
    )


def write_batch(
    conn: psycopg2.extensions.connection,
    txns: Sequence[Transaction],
    alerts: Sequence[Alert],
    rejections: Sequence[Rejection],
    *,
    alert_positions: Sequence[tuple[int, int]] = (),
    rule_set_version: int | None = None,
    direct: bool = True,
    topic_id: uuid.UUID = NIL,
    stored_below: Mapping[int, int] | None = None,
    prelude: bytes = b"",
) -> BatchResult:
    """Store one polled batch idempotently inside the caller's transaction.

    Fast path: COPY straight into `transactions` and its ids into `transaction_ids` (the registry
    whose primary key keeps transaction_id unique across the day partitions, migration 090)
    inside a savepoint; in steady state no id exists yet, and this is the cheapest write
    PostgreSQL offers. If any transaction_id is already registered, the savepoint is rolled back
    and the batch goes through COPY into a temp table and `INSERT ... ON CONFLICT DO NOTHING`
    into the registry instead, storing the rows whose ids got in. A transaction_id already stored from the *same*
    Kafka message (topic, partition, offset) is a replay and a no-op; from a *different* message
    it raises `StoredElsewhere` (the caller rolls back). The transactions of one batch carry
    distinct ids: the consumer rejects an id reused within a batch before the rules see it.
    Alerts are written only for the transactions this batch actually inserted (registered), so a
    replay can never add a second alert: that, not a unique key, keeps one alert per rule and
    transaction (docs/partitioning.md); `alert_positions[i]` is the (partition, offset) of the message that
    raised `alerts[i]`, `rule_set_version` the rule-set version that raised them (None: the
    environment's settings). `direct=False` skips the fast path (the benchmark's staging-table
    ceiling, and tests of that path).

    Every message is of the topic incarnation `topic_id` (consumer/positions.py). With
    `stored_below` (partition -> offset, what `positions.claim` found), messages below it were
    stored or rejected before (their rows may have gone with retention since): they are counted
    as already stored and written nowhere, nor are their alerts.

    `prelude`: one statement of the caller's (rule_set_applied's INSERT) to run first; it goes
    in the same round trip as the COPY where there is one.
    """
    result = BatchResult()
    inserted_at: set[tuple[int, int]] | None = None  # None: every transaction was inserted
    if stored_below and any(o > 0 for o in stored_below.values()):
        below = stored_below
        kept = [t for t in txns if t.kafka_offset >= below.get(t.kafka_partition, 0)]
        if len(kept) != len(txns):
            result.already_stored += len(txns) - len(kept)
            inserted_at = {(t.kafka_partition, t.kafka_offset) for t in kept}
            txns = kept
        rejections = [r for r in rejections if r.offset >= below.get(r.partition, 0)]
    with conn.cursor() as cur:
        if prelude and not (txns and direct):
            cur.execute(prelude)
            prelude = b""
        if txns:
            payload = copy_rows(txns, topic_id)
            if direct:
                # The savepoint is opened in the COPY's round trip and never released: the
                # COMMIT ends it with the transaction (RELEASE would cost a round trip for nothing).
                try:
                    _copy_in(cur, "transactions", payload, prelude + b";SAVEPOINT direct_copy;")
                    _copy_ids(cur, txns, topic_id)
                    result.inserted = len(txns)
                except psycopg2.errors.UniqueViolation:
                    cur.execute("ROLLBACK TO SAVEPOINT direct_copy")
                    direct = False
            if not direct:
                inserted_at = _insert_via_staging(cur, txns, payload, result, topic_id)
                result.inserted = len(inserted_at)
        if inserted_at is None:
            stored_alerts = list(alerts)
        else:
            stored_alerts = [a for a, at in zip(alerts, alert_positions, strict=True) if at in inserted_at]
        result.inserted_at = inserted_at
        result.alerts_by_rule_severity.update((a.alert_type, a.severity) for a in stored_alerts)
        for (rule, _severity), n in result.alerts_by_rule_severity.items():
            result.alerts_by_type[rule] += n
        if stored_alerts:
            # An alert carries its transaction's merchant and amount: the console filters the
            # queue by them on `alerts` (migration 091), so `transactions` needs no index on either.
            by_id = {t.transaction_id: t for t in txns}
            psycopg2.extras.execute_values(
                cur,
                "INSERT INTO alerts (transaction_id, account_id, alert_type, severity, alert_message, details, "
                "rule_set_version, merchant, amount) VALUES %s",
                [
                    (
                        a.transaction_id,
                        a.account_id,
                        a.alert_type,
                        a.severity,
                        a.message,
                        orjson.dumps(a.details).decode(),
                        rule_set_version,
                        *_merchant_amount(by_id.get(a.transaction_id)),
                    )
                    for a in stored_alerts
                ],
                page_size=1000,
            )
            result.alerts_inserted = cur.rowcount
        if rejections:
            result.rejected_inserted = insert_rejections(cur, rejections, topic_id)
    return result


def _merchant_amount(txn: Transaction | None) -> tuple[str | None, str | None]:
    """The alert's copy of its transaction's merchant and amount (the amount as COPY writes it)."""
    if txn is None:  # an alert on a transaction outside the batch: nothing to copy
        return None, None
    return txn.merchant, f"{txn.amount:.2f}"


_VANISHED_RETRIES = 3  # rounds for rows deleted between the INSERT and the look-up of its conflicts


def _insert_via_staging(
    cur: psycopg2.extensions.cursor,
    txns: Sequence[Transaction],
    payload: str,
    result: BatchResult,
    topic_id: uuid.UUID,
) -> set[tuple[int, int]]:
    """The idempotent path: only rows whose transaction_id is new are inserted. Returns the
    (partition, offset) of the rows inserted; raises StoredElsewhere for ids stored elsewhere.
    "Already stored" takes the same id at the same (topic, incarnation, partition, offset): a
    recreated topic repeats positions with other messages, and an id stored at the same position
    of the old incarnation is stored elsewhere."""
    _ensure_staging(cur)
    _copy_in(cur, "txn_stage", payload)
    inserted_at: set[tuple[int, int]] = set()
    pending: list[str] | None = None  # None: every staged row
    for _ in range(_VANISHED_RETRIES):
        # The registry decides which rows are new (waiting for a concurrent batch's commit on the
        # same id, then skipping it); those rows go in with the registry row's processed_at, so
        # the two agree to the microsecond (retention deletes registry rows by it).
        cur.execute(
            f"""WITH stamp AS (SELECT clock_timestamp() AS at),
               registered AS (
                   INSERT INTO transaction_ids ({_ID_COLS_SQL}, processed_at)
                   SELECT {_ID_COLS_SQL}, (SELECT at FROM stamp) FROM txn_stage
                   WHERE %s::text[] IS NULL OR transaction_id = ANY(%s::text[])
                   ORDER BY kafka_partition, kafka_offset
                   ON CONFLICT (transaction_id) DO NOTHING
                   RETURNING transaction_id, processed_at)
               INSERT INTO transactions ({_TXN_COLS_SQL}, processed_at)
               SELECT {_STAGE_COLS_SQL}, r.processed_at FROM txn_stage s JOIN registered r USING (transaction_id)
               RETURNING kafka_partition, kafka_offset""",
            (pending, pending),
        )
        inserted_at |= {(r[0], r[1]) for r in cur.fetchall()}
        todo = txns if pending is None else [t for t in txns if t.transaction_id in set(pending)]
        missing = [t for t in todo if (t.kafka_partition, t.kafka_offset) not in inserted_at]
        if not missing:
            return inserted_at
        cur.execute(
            "SELECT transaction_id, kafka_topic, kafka_partition, kafka_offset, kafka_topic_id "
            "FROM transaction_ids WHERE transaction_id = ANY(%s)",
            ([t.transaction_id for t in missing],),
        )
        stored = {r[0]: (r[1], r[2], r[3], uuid.UUID(str(r[4]))) for r in cur.fetchall()}
        elsewhere = {}
        vanished = []
        for t in missing:
            where = stored.get(t.transaction_id)
            if where == (t.kafka_topic, t.kafka_partition, t.kafka_offset, topic_id):
                result.already_stored += 1
            elif where is not None:
                elsewhere[t.transaction_id] = where
            else:
                # The registry row that kept it out was deleted since (retention): insert it.
                vanished.append(t.transaction_id)
        if elsewhere:
            raise StoredElsewhere(elsewhere)
        if not vanished:
            return inserted_at
        pending = vanished
    raise TxmonError(
        f"{len(pending or ())} transaction ids were deleted each time they were about to be stored; "
        "is a retention job deleting new rows? (RETENTION_DAYS)"
    )


def find_unstorable(
    conn: psycopg2.extensions.connection, txns: Sequence[Transaction]
) -> list[tuple[Transaction, str]]:
    """Rows the database refuses (a constraint validation did not foresee), with the error.

    Slow (one savepoint per row), so it only runs after a batch failed with a data error: it turns
    a poison batch into rejections instead of a crash loop. Nothing is kept: every row is rolled back.
    """
    bad: list[tuple[Transaction, str]] = []
    with conn.cursor() as cur:
        _ensure_staging(cur)
        for t in txns:
            cur.execute("SAVEPOINT probe")
            try:
                cur.copy_expert(f"COPY txn_stage ({_TXN_COLS_SQL}) FROM STDIN", io.StringIO(copy_rows([t])))
                cur.execute(
                    f"INSERT INTO transactions ({_TXN_COLS_SQL}) SELECT {_TXN_COLS_SQL} FROM txn_stage"
                )
            except psycopg2.Error as exc:
                if is_outage(exc):
                    raise
                bad.append((t, f"{type(exc).__name__}: {str(exc).strip()}"[:500]))
            cur.execute("ROLLBACK TO SAVEPOINT probe")
    conn.rollback()
    return bad


# What is kept of a rejected message (its first bytes; payload_bytes records the full length):
# enough to see what a producer sent wrong, and a flood of ~1 MB messages cannot fill the disk.
REJECTED_PAYLOAD_MAX_BYTES = 64 * 1024
REJECTED_KEY_MAX_BYTES = 10_000


def insert_rejections(
    cur: psycopg2.extensions.cursor, rejections: Iterable[Rejection], topic_id: uuid.UUID = NIL
) -> int:
    incarnation = str(topic_id)
    rows = [
        (
            r.topic,
            incarnation,
            r.partition,
            r.offset,
            r.reason,
            r.detail,
            r.transaction_id,
            None if r.key is None else psycopg2.Binary(r.key[:REJECTED_KEY_MAX_BYTES]),
            psycopg2.Binary(r.raw[:REJECTED_PAYLOAD_MAX_BYTES]),
            len(r.raw),
        )
        for r in rejections
    ]
    inserted = psycopg2.extras.execute_values(
        cur,
        "INSERT INTO rejected_transactions (kafka_topic, kafka_topic_id, kafka_partition, kafka_offset, reason, detail, "
        "transaction_id, message_key, raw_payload, payload_bytes) VALUES %s RETURNING 1",
        rows,
        page_size=500,
        fetch=True,  # rowcount would count the last page only
    )
    return len(inserted)


def load_accounts(
    conn: psycopg2.extensions.connection,
    topic: str,
    account_ids: Sequence[str],
    max_per_account: int,
    before: Mapping[int, int] | None = None,
    topic_id: uuid.UUID = NIL,
) -> list[tuple[Any, ...]]:
    """The newest `max_per_account` stored transactions of each account from `topic` (its
    incarnation `topic_id` only: a recreated topic's new messages never meet the old ones), in
    `consumer.account_state.HistoryRow` order, ascending per account in stream order. With
    `before` (partition -> offset), only rows below that offset of their partition: the history
    the accounts had where a bounded backtest starts (a partition not in `before` gives none).

    One query whatever the number of accounts, and bounded: per account an index scan of
    (account_id, kafka_topic, kafka_topic_id, "timestamp") that stops after `max_per_account` rows. The age bound
    applies when a rule evaluates (relative to the event evaluated: consumer/account_state.py).
    `amount_base` as the rules first saw it (rows stored before migration 010 have none: their
    amount as sent stands in).
    """
    if not account_ids:
        return []
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT a.account_id, t.transaction_id, t.amount::float8, t.merchant, t.country::text,
                   t.latitude, t.longitude, extract(epoch FROM t."timestamp")::float8 AS epoch,
                   t.currency::text, coalesce(t.amount_base, t.amount)::float8,
                   t.kafka_partition, t.kafka_offset, t.transaction_type, t.merchant_category
            FROM unnest(%(accounts)s::text[]) AS a(account_id)
            CROSS JOIN LATERAL (
                SELECT * FROM transactions t
                WHERE t.account_id = a.account_id AND t.kafka_topic = %(topic)s
                  AND t.kafka_topic_id = %(topic_id)s
                  AND (%(before_p)s::int[] IS NULL OR t.kafka_offset < (
                      SELECT b.o FROM unnest(%(before_p)s::int[], %(before_o)s::bigint[]) AS b(p, o)
                      WHERE b.p = t.kafka_partition))
                ORDER BY t."timestamp" DESC, t.kafka_partition DESC, t.kafka_offset DESC
                LIMIT %(k)s
            ) t
            ORDER BY 1, epoch, t.kafka_partition, t.kafka_offset
            """,
            {
                "accounts": list(account_ids),
                "topic": topic,
                "topic_id": str(topic_id),
                "k": max_per_account,
                "before_p": None if before is None else list(before),
                "before_o": None if before is None else list(before.values()),
            },
        )
        return cur.fetchall()
