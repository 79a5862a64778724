"""Day partitions (migration 090, docs/partitioning.md) against a real PostgreSQL and Kafka:

* a database with data from before 090 converted: every row in its day's partition, the ids in
  the registry, the sequences, indexes, case links and grants kept;
* a transaction_id whose first copy is stored on another day than its second is still refused as
  `duplicate_transaction_id`, end to end, and a replay stores nothing twice;
* retention drops whole day partitions (and their alerts, case links and registry rows), keeps a
  day holding a younger event, and its plan counts exactly what goes;
* the default partition's rows move into their day's partition when it is made;
* concurrent claims of the same positions by two groups are serialised (stored_positions).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest

from consumer import positions
from consumer.storage import StoredElsewhere, write_batch
from producer.generator import encode
from reports import retention
from stack.orchestrator import LocalStack
from tests.integration.test_database import _txns
from tests.integration.test_exactly_once import dense, doc, partition_of, replay_from_the_start, send_to
from tests.support import consume, execute, query, scalar
from utils import schema
from utils.config import PostgresSettings, Settings, ValidationLimits
from utils.database import Database, connect
from utils.models import Alert

DAY_PARTITIONED = ("transactions", "alerts", "rejected_transactions")


@pytest.fixture
def db(fresh_db: PostgresSettings) -> Iterator[Database]:
    database = Database(fresh_db, maxconn=3)
    yield database
    database.close()


def day_partitions(pg: PostgresSettings, parent: str) -> list[str]:
    return [r[0] for r in query(pg, "SELECT name FROM day_partitions(%s)", (parent,))]


def make_day(pg: PostgresSettings, days_ago: int) -> None:
    """The partitions of the UTC day `days_ago` days before the server's today (owner only)."""
    for parent in DAY_PARTITIONED:
        execute(
            pg,
            "SELECT partition_day(%s, (now() AT TIME ZONE 'UTC')::date - %s)",
            (parent, days_ago),
        )


def move_to_day(pg: PostgresSettings, ids: list[str], days_ago: int) -> None:
    """As if these transactions had been stored `days_ago` days ago: the rows move to that day's
    partition (an UPDATE of the partition key moves a row), their registry entries with them."""
    for table in ("transactions", "transaction_ids"):
        execute(
            pg,
            f"UPDATE {table} SET processed_at = processed_at - make_interval(days => %s) "
            "WHERE transaction_id = ANY(%s)",
            (days_ago, ids),
        )


def migrations_before(directory: Path, version: int) -> Path:
    """A directory with the migrations numbered below `version`."""
    directory.mkdir()
    for path in sorted(schema.MIGRATIONS_DIR.glob("*.sql")):
        if int(path.name[:3]) < version:
            shutil.copy(path, directory / path.name)
    return directory


# --------------------------------------------------------------------------------------------
# Migration 090 on a database with data
# --------------------------------------------------------------------------------------------


def test_migration_090_converts_a_database_with_data(test_stack: LocalStack, tmp_path: Path) -> None:
    before = migrations_before(tmp_path / "migrations", 90)
    upto = migrations_before(tmp_path / "upto-090", 91)
    pg = test_stack.create_database(f"txmon_test_{uuid.uuid4().hex[:10]}")
    incarnation = uuid.uuid4()
    try:
        schema.migrate(pg, before)
        with contextlib.closing(connect(pg, migration=True)) as conn, conn, conn.cursor() as cur:
            # 30 transactions stored over 3 days (10 a day), every third with an alert.
            cur.execute(
                """INSERT INTO transactions (transaction_id, account_id, transaction_type, amount, currency,
                       "timestamp", channel, country, schema_version, kafka_topic, kafka_topic_id,
                       kafka_partition, kafka_offset, processed_at)
                   SELECT 'm-' || i, 'A' || (i %% 4), 'purchase', i + 1, 'EUR',
                          now() - make_interval(days => i %% 3), 'pos', 'DE', 1, 'tx', %s, 0, i,
                          now() - make_interval(days => i %% 3)
                   FROM generate_series(0, 29) AS i""",
                (str(incarnation),),
            )
            cur.execute(
                """INSERT INTO alerts (transaction_id, account_id, alert_type, severity, alert_message, created_at)
                   SELECT transaction_id, account_id, 'high_amount', 'high', 'm', processed_at
                   FROM transactions WHERE kafka_offset % 3 = 0"""
            )
            cur.execute(
                "INSERT INTO rejected_transactions (kafka_topic, kafka_topic_id, kafka_partition, kafka_offset, reason, "
                "detail, raw_payload, rejected_at) VALUES ('tx', %s, 0, 30, 'invalid_json', 'x', 'x', now() - interval '2 days')",
                (str(incarnation),),
            )
            cur.execute(
                "INSERT INTO stored_positions (kafka_topic, kafka_topic_id, kafka_partition, next_offset) "
                "VALUES ('tx', %s, 0, 31)",
                (str(incarnation),),
            )
            cur.execute(
                "INSERT INTO topic_partition_counts (kafka_topic, kafka_topic_id, partition_count) VALUES ('tx', %s, 1)",
                (str(incarnation),),
            )
            cur.execute(
                "INSERT INTO cases (account_id, severity, due_at, created_by) VALUES ('A0', 'high', now(), 'ana') "
                "RETURNING case_id"
            )
            case_id = cur.fetchone()[0]
            cur.execute(
                "INSERT INTO case_alerts (alert_id, case_id, alert_created_at, status, attached_by) "
                "SELECT alert_id, %s, created_at, 'open', 'ana' FROM alerts ORDER BY alert_id LIMIT 2",
                (case_id,),
            )
            cur.execute("SELECT max(alert_id), max(rejected_id) FROM alerts, rejected_transactions")
            max_alert, max_rejected = cur.fetchone()
        stored_before = query(pg, "SELECT * FROM transactions ORDER BY transaction_id")
        alerts_before = query(pg, "SELECT * FROM alerts ORDER BY alert_id")

        assert schema.migrate(pg, upto) == ["090_partitioned_by_day"]

        # Every row kept, column for column, each in its processing day's partition.
        assert query(pg, "SELECT * FROM transactions ORDER BY transaction_id") == stored_before
        assert query(pg, "SELECT * FROM alerts ORDER BY alert_id") == alerts_before
        for parent, key in (("transactions", "processed_at"), ("alerts", "created_at"),
                            ("rejected_transactions", "rejected_at")):  # fmt: skip
            misplaced = scalar(
                pg,
                f"SELECT count(*) FROM {parent} "
                f"WHERE tableoid::regclass::text <> '{parent}_p' || to_char({key} AT TIME ZONE 'UTC', 'YYYYMMDD')",
            )
            assert misplaced == 0, parent
            assert scalar(pg, f"SELECT count(*) FROM ONLY {parent}_default") == 0
            assert len(day_partitions(pg, parent)) >= 8  # the days with data, today and 7 ahead
        assert scalar(pg, "SELECT count(*) FROM transaction_ids") == 30
        assert query(
            pg,
            "SELECT kafka_topic, kafka_topic_id::text, kafka_offset FROM transaction_ids WHERE transaction_id = 'm-7'",
        ) == [("tx", str(incarnation), 7)]
        assert query(pg, "SELECT kafka_topic_id::text, next_offset FROM stored_positions") == [
            (str(incarnation), 31)
        ]
        assert scalar(pg, "SELECT count(*) FROM topic_partition_counts") == 1
        assert scalar(pg, "SELECT count(*) FROM case_alerts ca JOIN alerts a USING (alert_id)") == 2
        # The sequences go on where they were.
        with contextlib.closing(connect(pg, migration=True)) as conn, conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO alerts (transaction_id, account_id, alert_type, severity, alert_message) "
                "VALUES ('m-1', 'A1', 'velocity', 'low', 'n') RETURNING alert_id"
            )
            assert cur.fetchone()[0] == max_alert + 1
            cur.execute(
                "INSERT INTO rejected_transactions (kafka_topic, kafka_partition, kafka_offset, reason, detail, "
                "raw_payload) VALUES ('tx', 0, 31, 'invalid_json', 'x', 'x') RETURNING rejected_id"
            )
            assert cur.fetchone()[0] == max_rejected + 1
        # The indexes the console, reports and consumer use, on the parent and every partition.
        indexes = {r[0] for r in query(pg, "SELECT indexname FROM pg_indexes WHERE tablename IN "
                                           "('transactions', 'alerts', 'rejected_transactions')")}  # fmt: skip
        assert {
            "transactions_transaction_id_idx", "transactions_account_incarnation_ts_idx", "transactions_ts_idx",
            "transactions_merchant_idx", "transactions_amount_idx", "transactions_incident_idx",
            "transactions_processed_at_brin", "alerts_pkey", "alerts_one_per_rule", "alerts_queue_idx",
            "alerts_queue_type_idx", "alerts_queue_severity_idx", "alerts_queue_account_idx",
            "rejected_transactions_pkey", "rejected_one_per_message", "rejected_at_idx", "rejected_reason_idx",
        } <= indexes  # fmt: skip
        today = day_partitions(pg, "transactions")[-8]
        assert scalar(pg, "SELECT count(*) FROM pg_indexes WHERE tablename = %s", (today,)) == 7
    finally:
        test_stack.drop_database(pg.db)


# --------------------------------------------------------------------------------------------
# Migration 091: the queue's merchant and amount filters read the alert's copies
# --------------------------------------------------------------------------------------------


def test_migration_091_copies_merchant_and_amount_onto_stored_alerts(
    test_stack: LocalStack, tmp_path: Path
) -> None:
    before = migrations_before(tmp_path / "migrations", 91)
    upto = migrations_before(tmp_path / "upto-091", 92)
    pg = test_stack.create_database(f"txmon_test_{uuid.uuid4().hex[:10]}")
    try:
        schema.migrate(pg, before)
        make_day(pg, 1)
        execute(
            pg,
            """INSERT INTO transactions (transaction_id, account_id, transaction_type, amount, currency, "timestamp",
                   channel, country, merchant, schema_version, kafka_topic, kafka_partition, kafka_offset, processed_at)
               VALUES ('a', 'A1', 'purchase', 12.50, 'EUR', now(), 'pos', 'DE', 'Shop A', 1, 'tx', 0, 0, now()),
                      ('b', 'A1', 'purchase', 900.00, 'EUR', now(), 'pos', 'DE', 'Shop B', 1, 'tx', 0, 1,
                       now() - interval '1 day'),
                      ('c', 'A2', 'transfer', 5000.00, 'EUR', now(), 'online', 'DE', NULL, 1, 'tx', 0, 2, now())""",
        )
        execute(
            pg,
            """INSERT INTO alerts (transaction_id, account_id, alert_type, severity, alert_message, created_at)
               SELECT transaction_id, account_id, 'high_amount', 'high', 'm', processed_at FROM transactions
               UNION ALL SELECT 'gone', 'A3', 'velocity', 'low', 'its transaction went', now()""",
        )

        assert schema.migrate(pg, upto) == ["091_alert_merchant_amount"]

        assert query(pg, "SELECT transaction_id, merchant, amount::text FROM alerts ORDER BY 1") == [
            ("a", "Shop A", "12.50"), ("b", "Shop B", "900.00"), ("c", None, "5000.00"), ("gone", None, None),
        ]  # fmt: skip
        indexes = {
            r[0]
            for r in query(
                pg, "SELECT indexname FROM pg_indexes WHERE tablename IN ('transactions', 'alerts')"
            )
        }
        assert {"alerts_queue_merchant_idx", "alerts_amount_idx"} <= indexes
        assert not {"transactions_merchant_idx", "transactions_amount_idx"} & indexes
        today = day_partitions(pg, "transactions")[-8]
        assert scalar(pg, "SELECT count(*) FROM pg_indexes WHERE tablename = %s", (today,)) == 5

        # The console's filters find them there, on either day.
        from console import queue, store

        with contextlib.closing(connect(pg, migration=True)) as conn:
            cur = store.new_cursor(conn)

            def page(f: queue.Filters) -> list[str]:
                return sorted(
                    r["alert_message"] + ":" + r["merchant"] for r in store.alert_page(cur, f, None)[0]
                )

            assert page(queue.Filters(merchant="Shop B")) == ["m:Shop B"]
            big = store.alert_page(cur, queue.Filters(min_amount=Decimal("100")), None)[0]
            assert [r["amount"] for r in big] == [Decimal("5000.00"), Decimal("900.00")]
            assert store.summary(cur, queue.Filters(max_amount=Decimal("1000")), ["high_amount"]).total == 2
    finally:
        test_stack.drop_database(pg.db)


def test_the_consumer_stores_the_transactions_merchant_and_amount_with_its_alert(db: Database) -> None:
    txns = _txns(3, seed=11)
    alert = Alert(txns[1].transaction_id, txns[1].account_id, "high_amount", "high", "big")
    with db.connection() as conn:
        write_batch(conn, txns, [alert], [], alert_positions=[(0, txns[1].kafka_offset)])
    amount = Decimal(f"{txns[1].amount:.2f}")
    stored = query(
        db.settings,
        "SELECT a.merchant, a.amount, t.merchant, t.amount FROM alerts a JOIN transactions t USING (transaction_id)",
    )
    assert stored == [(txns[1].merchant, amount, txns[1].merchant, amount)]


# --------------------------------------------------------------------------------------------
# transaction_id stays unique across days
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("direct", [True, False], ids=["direct-copy", "staging-table"])
def test_an_id_stored_on_another_day_is_stored_elsewhere(
    db: Database, fresh_db: PostgresSettings, direct: bool
) -> None:
    """The first copies are in a partition three days back; the same ids from other messages
    today raise StoredElsewhere with where they are stored (the consumer then rejects them as
    duplicates), and a replay of the first messages is still a no-op."""
    txns = _txns(10)
    with db.connection() as conn:
        write_batch(conn, txns, [], [])
    make_day(fresh_db, 3)
    move_to_day(fresh_db, [t.transaction_id for t in txns], 3)
    old_day = day_partitions(fresh_db, "transactions")[0]
    assert {r[0] for r in query(fresh_db, "SELECT tableoid::regclass::text FROM transactions")} == {old_day}

    moved = [dataclasses.replace(t, kafka_offset=t.kafka_offset + 100) for t in txns[:3]]
    with pytest.raises(StoredElsewhere) as caught, db.connection() as conn:
        write_batch(conn, [*moved, *_txns(5, seed=4, first_offset=500)], [], [], direct=direct)
    assert caught.value.stored_at == {
        t.transaction_id: ("t", 0, t.kafka_offset, positions.NIL) for t in txns[:3]
    }
    with db.connection() as conn:
        again = write_batch(conn, txns, [], [], direct=direct)
    assert (again.inserted, again.already_stored) == (0, 10)
    assert scalar(fresh_db, "SELECT count(*) FROM transactions") == 10


def test_a_duplicate_id_on_another_day_is_rejected_end_to_end(
    settings_factory: Callable[..., Settings],
) -> None:
    """As test_exactly_once's duplicate test, with the first copies moved to a partition three
    days back before the second copies arrive: each second copy is rejected as
    duplicate_transaction_id, and a replay of everything stores and rejects nothing more."""
    s = settings_factory(partitions=2, max_poll_records=500)
    txns = dense(200, seed=41)
    on = [[t for t in txns if partition_of(t["account_id"].encode(), 2) == p] for p in (0, 1)]
    firsts = [(i % 2, *encode(doc(on[i % 2][i // 2], transaction_id=f"dd-{i}"))) for i in range(20)]
    seconds = [
        (1 - i % 2, *encode(doc(on[1 - i % 2][10 + i // 2], transaction_id=f"dd-{i}"))) for i in range(20)
    ]
    first_at = send_to(s, firsts)
    consume(s)
    make_day(s.postgres, 3)
    move_to_day(s.postgres, [f"dd-{i}" for i in range(20)], 3)
    second_at = send_to(s, seconds)
    consume(s)
    replay_from_the_start(s)
    consume(s)
    stored = {
        tid: (p, o)
        for tid, p, o in query(
            s.postgres, "SELECT transaction_id, kafka_partition, kafka_offset FROM transactions"
        )
    }
    rejected = {
        (p, o): r
        for p, o, r in query(
            s.postgres, "SELECT kafka_partition, kafka_offset, reason FROM rejected_transactions"
        )
    }
    assert stored == {f"dd-{i}": first_at[i] for i in range(20)}
    assert rejected == {at: "duplicate_transaction_id" for at in second_at}
    three_days_back = day_partitions(s.postgres, "transactions")[0]
    assert {r[0] for r in query(s.postgres, "SELECT tableoid::regclass::text FROM transactions")} == {
        three_days_back
    }
    today = {r[0] for r in query(s.postgres, "SELECT tableoid::regclass::text FROM rejected_transactions")}
    assert three_days_back.replace("transactions", "rejected_transactions") not in today


# --------------------------------------------------------------------------------------------
# Retention drops days
# --------------------------------------------------------------------------------------------


def _stored(pg: PostgresSettings, tid: str, days_ago: int, event_days_ago: int) -> None:
    """A transaction stored `days_ago` days back with its event `event_days_ago` days back, its
    registry entry and one alert (as the consumer writes them, at the same instant)."""
    execute(
        pg,
        """WITH at AS (SELECT now() - make_interval(days => %(d)s) AS t)
           INSERT INTO transactions (transaction_id, account_id, transaction_type, amount, currency,
               "timestamp", channel, country, schema_version, kafka_topic, kafka_partition, kafka_offset,
               processed_at)
           SELECT %(id)s, 'acct', 'purchase', 5, 'EUR', now() - make_interval(days => %(e)s), 'pos', 'DE', 1,
                  't', 0, 0, t FROM at""",
        {"id": tid, "d": days_ago, "e": event_days_ago},
    )
    execute(
        pg,
        "INSERT INTO transaction_ids (transaction_id, kafka_topic, kafka_topic_id, kafka_partition, kafka_offset, "
        "processed_at) SELECT transaction_id, kafka_topic, kafka_topic_id, 0, 0, processed_at FROM transactions "
        "WHERE transaction_id = %s",
        (tid,),
    )
    execute(
        pg,
        "INSERT INTO alerts (transaction_id, account_id, alert_type, severity, alert_message, created_at) "
        "SELECT transaction_id, 'acct', 'high_amount', 'high', 'x', processed_at FROM transactions "
        "WHERE transaction_id = %s",
        (tid,),
    )


def test_retention_drops_whole_days_and_keeps_a_day_with_a_younger_event(
    fresh_db: PostgresSettings, tmp_path: Path
) -> None:
    pg = fresh_db
    schema.set_retention_days(pg, 2)
    for days_ago in (6, 5, 4):
        make_day(pg, days_ago)
    _stored(pg, "d6", 6, 6)
    _stored(pg, "d5", 5, 5)
    _stored(pg, "d5-future", 5, 0)  # stored 5 days back with an event of today: not expired
    _stored(pg, "d4", 4, 4)
    _stored(pg, "today", 0, 0)
    execute(
        pg,
        "INSERT INTO rejected_transactions (kafka_topic, kafka_partition, kafka_offset, reason, detail, raw_payload, "
        "rejected_at) VALUES ('t', 0, 9, 'invalid_json', 'x', 'x', now() - interval '6 days'), "
        "('t', 0, 10, 'invalid_json', 'x', 'x', now())",
    )
    execute(
        pg,
        "INSERT INTO cases (account_id, severity, due_at, created_by) VALUES ('acct', 'high', now(), 'ana')",
    )
    execute(
        pg,
        "INSERT INTO case_alerts (alert_id, case_id, alert_created_at, status, attached_by) "
        "SELECT alert_id, (SELECT max(case_id) FROM cases), created_at, 'open', 'ana' FROM alerts",
    )
    days_before = day_partitions(pg, "transactions")
    settings = Settings(
        validation=ValidationLimits(max_age_days=2), postgres=pg, retention_days=2, data_dir=str(tmp_path)
    )
    ret_db = Database(pg.as_retention(), maxconn=1)
    try:
        the_plan = retention.plan(ret_db, settings)
        # Only the oldest day goes: the day after holds an event of today, so it and the days
        # after it wait (the boundary is the start of that day).
        assert the_plan.rows["transactions"] == 1
        assert the_plan.rows["rejected_transactions"] == 1
        counts = retention.cleanup(ret_db, settings)
    finally:
        ret_db.close()
    assert counts["transactions"] == 1 and counts["rejected_transactions"] == 1
    assert sorted(r[0] for r in query(pg, "SELECT transaction_id FROM transactions")) == [
        "d4", "d5", "d5-future", "today"
    ]  # fmt: skip
    assert day_partitions(pg, "transactions") == days_before[1:]
    assert sorted(r[0] for r in query(pg, "SELECT transaction_id FROM alerts")) == [
        "d4",
        "d5",
        "d5-future",
        "today",
    ]
    assert sorted(r[0] for r in query(pg, "SELECT transaction_id FROM transaction_ids")) == [
        "d4", "d5", "d5-future", "today"
    ]  # fmt: skip
    assert scalar(pg, "SELECT count(*) FROM case_alerts") == 4
    assert scalar(pg, "SELECT count(*) FROM rejected_transactions") == 1
    # Once the younger event has expired too, its day and the next go whole.
    execute(
        pg,
        "UPDATE transactions SET \"timestamp\" = now() - interval '5 days' WHERE transaction_id = 'd5-future'",
    )
    with contextlib.closing(psycopg2.connect(pg.as_retention().dsn())) as conn, conn, conn.cursor() as cur:
        cur.execute("SELECT purge_expired('transactions', 100)")
        assert cur.fetchone()[0] == 3
    assert [r[0] for r in query(pg, "SELECT transaction_id FROM transactions")] == ["today"]
    assert [r[0] for r in query(pg, "SELECT transaction_id FROM transaction_ids")] == ["today"]
    assert [r[0] for r in query(pg, "SELECT transaction_id FROM alerts")] == ["today"]
    # The freed id may be stored again, as after a row delete before 090.
    with contextlib.closing(Database(pg, maxconn=1)) as db, db.connection() as conn:
        again = dataclasses.replace(_txns(1)[0], transaction_id="d6")
        assert write_batch(conn, [again], [], []).inserted == 1


# --------------------------------------------------------------------------------------------
# Partitions made ahead, the default partition as a safety net
# --------------------------------------------------------------------------------------------


def test_rows_in_the_default_partition_move_into_their_day_when_it_is_made(
    fresh_db: PostgresSettings,
) -> None:
    pg = fresh_db
    far = 40  # days ahead: no partition yet, so the rows wait in the default partition
    _stored_ahead = """INSERT INTO transactions (transaction_id, account_id, transaction_type, amount, currency, "timestamp",
               channel, country, schema_version, kafka_topic, kafka_partition, kafka_offset, processed_at)
           VALUES ('ahead', 'acct', 'purchase', 5, 'EUR', now(), 'pos', 'DE', 1, 't', 0, 0,
                   now() + make_interval(days => %(d)s))"""
    execute(pg, _stored_ahead, {"d": far})
    execute(
        pg,
        "INSERT INTO alerts (transaction_id, account_id, alert_type, severity, alert_message, created_at) "
        "VALUES ('ahead', 'acct', 'high_amount', 'high', 'x', now() + make_interval(days => %s))",
        (far,),
    )
    execute(
        pg,
        "INSERT INTO cases (account_id, severity, due_at, created_by) VALUES ('acct', 'high', now(), 'ana')",
    )
    execute(
        pg,
        "INSERT INTO case_alerts (alert_id, case_id, alert_created_at, status, attached_by) "
        "SELECT alert_id, (SELECT max(case_id) FROM cases), created_at, 'open', 'ana' FROM alerts",
    )
    assert scalar(pg, "SELECT count(*) FROM ONLY transactions_default") == 1
    execute(pg, "SELECT partition_day('transactions', (now() AT TIME ZONE 'UTC')::date + %s)", (far,))
    execute(pg, "SELECT partition_day('alerts', (now() AT TIME ZONE 'UTC')::date + %s)", (far,))
    assert scalar(pg, "SELECT count(*) FROM ONLY transactions_default") == 0
    assert scalar(pg, "SELECT count(*) FROM ONLY alerts_default") == 0
    assert (
        scalar(pg, "SELECT tableoid::regclass::text FROM transactions")
        == day_partitions(pg, "transactions")[-1]
    )
    assert scalar(pg, "SELECT count(*) FROM case_alerts") == 1  # the case link survived the move


def test_the_app_role_may_make_partitions_ahead_and_nothing_else(fresh_db: PostgresSettings) -> None:
    with contextlib.closing(psycopg2.connect(fresh_db.dsn())) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT ensure_partitions(10)")
            assert cur.fetchone()[0] == 3 * 3  # days 8, 9 and 10 ahead were missing
            for statement in (
                "SELECT partition_day('transactions', '2001-01-01')",
                "SELECT purge_expired('transactions', 10)",
                "CREATE TABLE transactions_x PARTITION OF transactions FOR VALUES FROM ('2001-01-01') TO ('2001-01-02')",
                "DELETE FROM transaction_ids",
            ):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute(statement)
            with pytest.raises(psycopg2.errors.RaiseException):
                cur.execute("SELECT ensure_partitions(400)")


# --------------------------------------------------------------------------------------------
# stored_positions serialises two groups on the same positions
# --------------------------------------------------------------------------------------------


def test_concurrent_claims_of_the_same_positions_store_them_once(fresh_db: PostgresSettings) -> None:
    """Two groups' batches over the same offsets at once: the second waits for the first's commit
    and finds the positions stored, so it writes no rejection (nor row) a second time."""
    topic_id = uuid.uuid4()
    first = psycopg2.connect(fresh_db.dsn())
    second = psycopg2.connect(fresh_db.dsn())
    try:
        with first.cursor() as cur:  # a partition's very first batch, and one of a known partition
            positions.claim(cur, "t", topic_id, {0: (0, 9)})
        first.commit()
        with first.cursor() as cur:
            assert positions.claim(cur, "t", topic_id, {0: (10, 19), 1: (0, 4)}) == {0: 10, 1: 0}
        found: dict[int, int] = {}
        waiter = threading.Thread(
            target=lambda: found.update(
                positions.claim(second.cursor(), "t", topic_id, {0: (10, 19), 1: (0, 4)})
            )
        )
        waiter.start()
        waiter.join(1.0)
        assert waiter.is_alive(), "the second claim must wait for the first batch's commit"
        first.commit()
        waiter.join(10.0)
        second.commit()
        assert found == {0: 20, 1: 5}  # everything below was stored by the first: nothing to write
    finally:
        first.close()
        second.close()


# --------------------------------------------------------------------------------------------
# Migration 092: transactions_transaction_id_idx becomes a hash index
# --------------------------------------------------------------------------------------------


def index_methods(pg: PostgresSettings, column: str) -> dict[str, str]:
    """Every index of `transactions` and its partitions on `column` alone: name -> access method."""
    return dict(
        query(
            pg,
            """SELECT c.relname, am.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                   JOIN pg_am am ON am.oid = c.relam JOIN pg_class t ON t.oid = i.indrelid
               WHERE (t.relname = 'transactions' OR t.relname LIKE 'transactions\\_%%') AND i.indnatts = 1
                 AND pg_get_indexdef(i.indexrelid, 1, true) = %s""",
            (column,),
        )
    )


def test_migration_092_makes_the_transaction_id_index_a_hash_on_a_database_with_data(
    test_stack: LocalStack, tmp_path: Path
) -> None:
    before = migrations_before(tmp_path / "migrations", 92)
    pg = test_stack.create_database(f"txmon_test_{uuid.uuid4().hex[:10]}")
    try:
        schema.migrate(pg, before)
        for days_ago in (2, 1):
            make_day(pg, days_ago)
        db = Database(pg, maxconn=1)
        try:
            # 60 transactions stored through the consumer's write path, then spread over three days.
            txns = _txns(60)
            with db.connection() as conn:
                assert write_batch(conn, txns, [], []).inserted == 60
            move_to_day(pg, [t.transaction_id for t in txns[:20]], 2)
            move_to_day(pg, [t.transaction_id for t in txns[20:40]], 1)
            assert set(index_methods(pg, "transaction_id").values()) == {"btree"}
            stored_before = query(pg, "SELECT * FROM transactions ORDER BY transaction_id")

            assert schema.migrate(pg) == ["092_transaction_id_hash"]

            # Same rows; the index of the same name is a hash one, on the parent and every partition.
            assert query(pg, "SELECT * FROM transactions ORDER BY transaction_id") == stored_before
            methods = index_methods(pg, "transaction_id")
            assert methods["transactions_transaction_id_idx"] == "hash"
            assert set(methods.values()) == {"hash"}
            partitions = {p for p in day_partitions(pg, "transactions")} | {"transactions_default"}
            assert len(methods) == len(partitions) + 1
            # Each day's rows are found by id through it.
            with contextlib.closing(connect(pg, migration=True)) as conn, conn.cursor() as cur:
                cur.execute("SET enable_seqscan = off")
                for t in (txns[0], txns[30], txns[59]):
                    cur.execute("EXPLAIN (FORMAT JSON) SELECT * FROM transactions WHERE transaction_id = %s",
                                (t.transaction_id,))  # fmt: skip
                    assert "transaction_id_idx" in json.dumps(cur.fetchone()[0])
                    cur.execute(
                        "SELECT kafka_offset FROM transactions WHERE transaction_id = %s", (t.transaction_id,)
                    )
                    assert cur.fetchall() == [(t.kafka_offset,)]
            # Uniqueness is still the registry's: an id stored two days back, sent again by another
            # message, is refused; the same message again is a replay.
            again = dataclasses.replace(txns[5], kafka_offset=1000)
            with pytest.raises(StoredElsewhere), db.connection() as conn:
                write_batch(conn, [again], [], [])
            with db.connection() as conn:
                replay = write_batch(conn, txns[:10], [], [])
            assert (replay.inserted, replay.already_stored) == (0, 10)
            assert scalar(pg, "SELECT count(*) FROM transactions") == 60
        finally:
            db.close()
    finally:
        test_stack.drop_database(pg.db)
