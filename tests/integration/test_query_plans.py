"""The queries the console, the reports and the consumer run, EXPLAINed on a day-partitioned
database with data: each reaches the rows it needs through an index or a pruned partition, never
a sequential scan of a day partition it needs nothing from (issue 23: the indexes `transactions`
keeps are the ones these plans use; docs/performance-investigations.md "What each index costs").

Three day partitions of 20,000 transactions each (event time inside the processing day), 5 %
of them alerted, ANALYZEd: large enough that an index probe beats a scan by orders of magnitude
in the planner's own costs, so the plans asserted are not a close call.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras
import pytest
from psycopg2 import sql

from console import queue, store
from consumer import storage
from reports import completeness, queries
from tests.support import query
from utils import verdicts
from utils.config import PostgresSettings
from utils.database import connect

ROWS_PER_DAY = 20_000
DAYS = (0, 1, 2)  # days ago
# One date for the fixture and the tests: each reading the clock again could straddle midnight UTC.
TODAY = datetime.now(UTC).date()
TOPIC = "transactions"
INCARNATION = uuid.UUID("00000000-0000-0000-0000-0000000000aa")


PLANS: list[dict[str, Any]] = []  # what the recording cursors saw, in order (sql, plan)


class _Recorder:
    """Records the plan of every query in PLANS before running it."""

    def execute(self, query: Any, vars: Any = None) -> None:
        text = query.as_string(self) if isinstance(query, sql.Composable) else query
        if text.lstrip().upper().startswith(("SELECT", "WITH")):
            super().execute("EXPLAIN (FORMAT JSON) " + text, vars)  # type: ignore[misc]
            row = super().fetchone()  # type: ignore[misc]
            plan = row[0] if not isinstance(row, dict) else row["QUERY PLAN"]
            PLANS.append({"sql": text, "plan": plan[0]["Plan"]})
        super().execute(query, vars)  # type: ignore[misc]


class RecordingCursor(_Recorder, psycopg2.extensions.cursor):
    pass


class RecordingDictCursor(_Recorder, psycopg2.extras.RealDictCursor):
    pass


def scans(node: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(node type, relation) of every scan in the plan."""
    if "Relation Name" in node:
        yield node["Node Type"], node["Relation Name"]
    for child in node.get("Plans", ()):
        yield from scans(child)


def indexes(node: dict[str, Any]) -> Iterator[str]:
    """The indexes the plan reads (partitions' index names: table_columns_idx)."""
    if "Index Name" in node:
        yield node["Index Name"]
    for child in node.get("Plans", ()):
        yield from indexes(child)


def used(plans: list[dict[str, Any]], fragment: str) -> bool:
    return any(fragment in name for p in plans for name in indexes(p["plan"]))


@pytest.fixture(scope="module")
def loaded(test_stack: Any) -> Iterator[PostgresSettings]:
    from utils import schema

    pg = test_stack.create_database(f"txmon_test_{uuid.uuid4().hex[:10]}")
    schema.migrate(pg)
    try:
        with contextlib.closing(connect(pg, migration=True)) as conn, conn, conn.cursor() as cur:
            for days_ago in DAYS:
                for parent in ("transactions", "alerts", "rejected_transactions"):
                    cur.execute("SELECT partition_day(%s, %s::date - %s)", (parent, TODAY, days_ago))
                # Stored over the day's first hours (UTC), events a minute before they were stored.
                cur.execute(
                    """INSERT INTO transactions (transaction_id, account_id, transaction_type, amount, currency,
                           "timestamp", channel, country, merchant, schema_version, kafka_topic, kafka_topic_id,
                           kafka_partition, kafka_offset, simulated_incident, processed_at)
                       SELECT md5(%(d)s || ':' || g)::uuid::text, 'ACC' || (g %% 2000), 'purchase',
                              1 + (g * 7919 %% 500000) / 100.0, 'USD', at - interval '1 minute', 'online', 'FR',
                              'M-' || (g * 31 %% 500), 1, %(topic)s, %(inc)s, g %% 6, %(d)s * 1000000 + g,
                              CASE WHEN g %% 100 = 0 THEN 'inc-' || %(d)s || '-' || (g / 1000) END, at
                       FROM generate_series(1, %(n)s) g,
                            LATERAL (SELECT %(today)s::date::timestamp AT TIME ZONE 'UTC'
                                            - make_interval(days => %(d)s) + g * interval '1 second' AS at) s""",
                    {
                        "d": days_ago,
                        "n": ROWS_PER_DAY,
                        "topic": TOPIC,
                        "inc": str(INCARNATION),
                        "today": TODAY,
                    },
                )
            cur.execute(
                """INSERT INTO transaction_ids (transaction_id, kafka_topic, kafka_topic_id, kafka_partition,
                       kafka_offset, processed_at)
                   SELECT transaction_id, kafka_topic, kafka_topic_id, kafka_partition, kafka_offset, processed_at
                   FROM transactions"""
            )
            cur.execute(
                """INSERT INTO alerts (transaction_id, account_id, alert_type, severity, alert_message, details,
                       created_at, merchant, amount)
                   SELECT transaction_id, account_id, 'high_amount', 'high', 'm', '{}', processed_at, merchant, amount
                   FROM transactions WHERE kafka_offset % 20 = 0"""
            )
        with contextlib.closing(connect(pg, migration=True)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("ANALYZE")
        yield pg
    finally:
        test_stack.drop_database(pg.db)


def populated(pg: PostgresSettings) -> set[str]:
    return {
        r[0]
        for r in query(
            pg,
            "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND c.reltuples > 1000 "
            "AND (c.relname LIKE 'transactions\\_p%%' OR c.relname LIKE 'alerts\\_p%%')",
        )
    }


def run(pg: PostgresSettings, calls: Any, *, dict_rows: bool) -> list[dict[str, Any]]:
    """Run `calls(cursor or conn)` with every statement's plan recorded; the plans."""
    PLANS.clear()
    with contextlib.closing(connect(pg, migration=True)) as conn:
        conn.cursor_factory = RecordingDictCursor if dict_rows else RecordingCursor
        with conn.cursor() as cur:
            calls(cur, conn)
        conn.rollback()
    assert PLANS, "no statement recorded"
    return list(PLANS)


def assert_no_seq_scan(
    plans: list[dict[str, Any]], tables: set[str], allowed: AbstractSet[str] = frozenset()
) -> None:
    for p in plans:
        seq = {rel for node, rel in scans(p["plan"]) if node == "Seq Scan" and rel in tables - allowed}
        assert not seq, f"sequential scan of {sorted(seq)} in:\n{p['sql']}"


def _some(pg: PostgresSettings, sql_text: str) -> Any:
    return query(pg, sql_text)[0][0]


# --------------------------------------------------------------------------------------------
# The console
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filters",
    [
        queue.Filters(),
        queue.Filters(merchant="M-7"),
        queue.Filters(min_amount=Decimal("4990")),
        queue.Filters(min_amount=Decimal("100"), max_amount=Decimal("101")),
        queue.Filters(rule="high_amount", severity="high", min_amount=Decimal("1000")),
        queue.Filters(account="ACC20"),
    ],
    ids=["first-page", "merchant", "amount-from", "amount-range", "rule-severity-amount", "account"],
)
def test_the_queue_and_its_counts_scan_no_day_partition(
    loaded: PostgresSettings, filters: queue.Filters
) -> None:
    tables = populated(loaded)
    plans = run(
        loaded,
        lambda cur, _conn: (
            store.alert_page(cur, filters, None),
            store.summary(cur, filters, ["high_amount"]),
        ),
        dict_rows=True,
    )
    assert_no_seq_scan(plans, tables)
    if filters.merchant:
        assert used(plans, "_merchant_created_at_alert_id_idx")  # alerts_queue_merchant_idx
    # A merchant or amount filter reads the alert's own copy: the transactions joined are the
    # page's (by id), never the filter's.
    if filters.merchant or filters.min_amount is not None:
        for p in plans:
            rels = [rel for _node, rel in scans(p["plan"])]
            if " LIMIT " not in p["sql"].upper():
                assert not any(r.startswith("transactions") for r in rels), p["sql"]


def test_an_alert_and_an_account_are_read_by_index(loaded: PostgresSettings) -> None:
    tables = populated(loaded)
    alert_id = _some(loaded, "SELECT alert_id FROM alerts ORDER BY alert_id DESC LIMIT 1")
    at = _some(loaded, "SELECT \"timestamp\" FROM transactions WHERE account_id = 'ACC20' LIMIT 1")
    plans = run(
        loaded,
        lambda cur, _conn: (
            store.alert(cur, alert_id),
            store.transactions_around(cur, "ACC20", at),
            store.recent_transactions(cur, "ACC20"),
        ),
        dict_rows=True,
    )
    assert_no_seq_scan(plans, tables)


# --------------------------------------------------------------------------------------------
# The consumer and the reports
# --------------------------------------------------------------------------------------------


def test_the_account_loads_are_index_scans(loaded: PostgresSettings) -> None:
    tables = populated(loaded)
    accounts = [f"ACC{i}" for i in range(0, 2000, 7)]
    plans = run(
        loaded,
        lambda _cur, conn: storage.load_accounts(conn, TOPIC, accounts, 50, topic_id=INCARNATION),
        dict_rows=False,
    )
    assert_no_seq_scan(plans, tables)
    assert used(plans, "_account_id_kafka_topic_kafka_topic_i")  # transactions_account_incarnation_ts_idx


def test_a_days_reports_scan_only_that_days_partition(loaded: PostgresSettings) -> None:
    tables = populated(loaded)
    day = TODAY - timedelta(days=1)
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    own = {f"transactions_p{day:%Y%m%d}", f"alerts_p{day:%Y%m%d}"}
    plans = run(
        loaded,
        lambda cur, _conn: (
            completeness.read_completeness(cur, day, now=start + timedelta(days=2)),
            queries._read_analysis(cur, day),
            verdicts.load_for_day(cur, start, start + timedelta(days=1)),
        ),
        dict_rows=False,
    )
    # The day's own partitions may be read whole: every row of them is the day's; the others'
    # event times are reached through transactions_ts_idx.
    assert_no_seq_scan(plans, tables, allowed=own)
    assert used(plans, "_timestamp_idx")


# --------------------------------------------------------------------------------------------
# Look-ups by transaction_id (migration 092: transactions_transaction_id_idx is a hash index,
# which answers equality only; each of these must still probe it, never scan a day partition)
# --------------------------------------------------------------------------------------------


def test_every_look_up_by_transaction_id_probes_its_hash_index(loaded: PostgresSettings) -> None:
    from console import workflow
    from consumer import dlq_replay
    from consumer.rulesets import backtest_db

    assert (
        _some(
            loaded,
            "SELECT am.amname FROM pg_class c JOIN pg_am am ON am.oid = c.relam "
            "WHERE c.relname = 'transactions_transaction_id_idx'",
        )
        == "hash"
    )
    tables = populated(loaded)
    alert_id, tid = query(loaded, "SELECT alert_id, transaction_id FROM alerts ORDER BY alert_id LIMIT 1")[0]
    ids = [
        r[0] for r in query(loaded, "SELECT transaction_id FROM transactions ORDER BY kafka_offset LIMIT 20")
    ]

    def calls(cur: Any, _conn: Any) -> None:
        store._transactions(cur, ids)  # the account view's rows, by id (= ANY)
        case_id = store.attach(cur, alert_id, workflow.User("plans", "analyst"), {"high": 24.0})
        assert isinstance(case_id, int)
        store.case_alerts(cur, case_id)  # the case page: its alerts joined to their transactions

    plans = run(loaded, calls, dict_rows=True)
    assert_no_seq_scan(plans, tables)
    by_id = [p for p in plans if "transaction_id = ANY" in p["sql"] or "FROM case_alerts ca JOIN" in p["sql"]]
    assert len(by_id) == 2 and all(used([p], "_transaction_id_idx") for p in by_id)

    # The DLQ replay's "already stored?" and the backtest's stored alerts of one day.
    day = TODAY - timedelta(days=1)
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    scope = backtest_db.Scope(TOPIC, start, start + timedelta(hours=1), INCARNATION)
    stored: list[bool] = []

    def probes_and_backtest(cur: Any, _conn: Any) -> None:
        stored.extend([dlq_replay.is_stored(cur, tid), dlq_replay.is_stored(cur, "not-stored")])
        backtest_db._stored_alerts(cur, scope)

    plans = run(loaded, probes_and_backtest, dict_rows=False)
    assert stored == [True, False]
    assert_no_seq_scan(plans, tables, allowed={f"transactions_p{day:%Y%m%d}", f"alerts_p{day:%Y%m%d}"})
    probes = [p for p in plans if p["sql"].startswith("SELECT 1 FROM transactions WHERE transaction_id")]
    assert len(probes) == 2 and all(used([p], "_transaction_id_idx") for p in probes)
