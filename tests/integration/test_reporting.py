"""Daily reporting against a real stream: producer (simulated clock) -> Kafka -> consumer -> PostgreSQL,
then every reporting step, checked against SQL written independently here and against the
producer's own labels."""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import kafka.errors
import psycopg2
import pytest
from kafka import KafkaProducer

from producer.generator import DEFAULT_START
from reports import queries
from reports.__main__ import build_report
from reports.figures import SummaryRow
from reports.files import write_report
from reports.page import render_page
from reports.reconciliation import reconcile_day
from stack.orchestrator import LocalStack
from tests.support import consume, generated, produce, query, scalar
from utils import schema
from utils.config import PostgresSettings, Settings
from utils.database import Database
from utils.money import MINOR_UNITS
from utils.rule_quality import RULE_SCENARIO, score_rules
from utils.schema import MIGRATIONS_DIR

SEED = 28  # a stream with journeys alerted only past midnight (the test checks it has one)
COUNT = 4000
# 4,000 messages span about 90 minutes of event time: started at 23:15, the stream crosses
# midnight, and with seed 17 five impossible journeys begin on DAY and end on NEXT_DAY.
START = datetime(2026, 1, 1, 23, 15, tzinfo=UTC)
DAY = START.date()
NEXT_DAY = DAY + timedelta(days=1)
BAD_MESSAGES = [b'{"transaction_id": "trunc', b"\xff not json", b"[]"]
RATES = Settings().rules.rate_table()


@pytest.fixture
def db(pipeline_settings: Settings) -> Iterator[Database]:
    database = Database(pipeline_settings.postgres)  # the app role, as the DAG runs
    yield database
    database.close()


def _send_bad(s: Settings) -> None:
    producer = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all")
    for value in BAD_MESSAGES:
        producer.send(s.kafka.topic, key=b"bad", value=value, partition=0)
    producer.flush()
    producer.close()


Summary = set[tuple[str, str, int, Decimal, int, Decimal | None, int]]


def _in_base(amount: Decimal, currency: str) -> Decimal:
    """`amount` converted as the report converts a row stored without amount_base (exactly)."""
    factor = Decimal(repr(RATES.factors[currency]))
    return (amount * factor).quantize(Decimal(1).scaleb(-MINOR_UNITS[RATES.base]), ROUND_HALF_UP)


def _expected_summary(pg: PostgresSettings, day: date) -> Summary:
    """The summary, recomputed with a different formulation: a date cast instead of a range,
    one query per dimension, correlated alert counts, base amounts converted here."""
    out: Summary = set()
    # The total has no GROUP BY: an empty day still has its (zero) total row.
    on_day = """("timestamp" AT TIME ZONE 'UTC')::date = %(day)s"""
    n_alerts = "(SELECT count(*) FROM alerts a WHERE a.transaction_id = t.transaction_id)"
    for dimension, column in (
        ("total", "''"),
        ("transaction_type", "transaction_type"),
        ("currency", "currency::text"),
        ("country", "country::text"),
        ("channel", "channel"),
    ):
        rows = query(
            pg,
            f"SELECT {column}, count(*), coalesce(sum(amount), 0), coalesce(sum({n_alerts}), 0), "
            "array_agg(amount), array_agg(currency::text), array_agg(amount_base) "
            f"FROM transactions t WHERE {on_day} " + ("" if dimension == "total" else "GROUP BY 1"),
            {"day": day},
        )
        for k, n, s, a, amounts, currencies, bases in rows:
            base, converted = Decimal(0), 0
            for amount, currency, stored in zip(amounts or [], currencies or [], bases or [], strict=True):
                base += stored if stored is not None else _in_base(amount, currency)
                converted += stored is None
            out.add((dimension, k, n, s, a, base, converted))
    for dimension, column in (("alert_type", "a.alert_type"), ("alert_severity", "a.severity")):
        rows = query(
            pg,
            f"""SELECT {column}, count(DISTINCT t.transaction_id), count(*), array_agg(t.transaction_id),
                       array_agg(t.amount), array_agg(coalesce(t.amount_base, -1)), array_agg(t.currency::text)
                FROM alerts a JOIN transactions t USING (transaction_id) WHERE {on_day} GROUP BY 1""",
            {"day": day},
        )
        for key, txns, alerts, ids, amounts, bases, currencies in rows:
            each = dict(zip(ids, zip(amounts, bases, currencies, strict=True), strict=True))  # each txn once
            amount = sum((x for x, _, _ in each.values()), Decimal(0))
            base = sum((b if b >= 0 else _in_base(x, c) for x, b, c in each.values()), Decimal(0))
            out.add((dimension, key, txns, amount, alerts, base, sum(b < 0 for _, b, _ in each.values())))
    rejected = query(
        pg,
        "SELECT reason, count(*) FROM rejected_transactions WHERE (rejected_at AT TIME ZONE 'UTC')::date = %s "
        "GROUP BY 1",
        (day,),
    )
    out |= {("rejection_reason", r, n, Decimal(0), 0, Decimal(0), 0) for r, n in rejected}
    return out


def _as_tuples(rows: list[SummaryRow]) -> Summary:
    assert {r.base_currency for r in rows} <= {RATES.base}
    return {
        (
            r.dimension,
            r.key,
            r.txn_count,
            r.amount_sum,
            r.alert_count,
            r.amount_base_sum,
            r.converted_by_report,
        )
        for r in rows
    }


def _stored(pg: PostgresSettings, table: str, day: date) -> list[tuple[Any, ...]]:
    """A day's rows without `computed_at`, in key order (for rerun comparisons)."""
    columns = [
        c
        for (c,) in query(
            pg,
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND column_name <> "
            "'computed_at' ORDER BY ordinal_position",
            (table,),
        )
    ]
    select = ", ".join(f'"{c}"' for c in columns)
    return query(pg, f"SELECT {select} FROM {table} WHERE day = %s ORDER BY 1, 2, 3", (day,))


def _recomputed_quality(
    s: Settings, stream: list[dict[str, Any]], day: date
) -> dict[str, tuple[int, int, int, int]]:
    """Per rule: (incidents, caught, alerts, alerts on incidents) for `day`, from the producer's
    own labels and the stored alerts, by the report's rule: incidents by the day of their first
    message and scored whole, alerts by the day of their transaction."""
    txns = {t["transaction_id"]: t for t in stream}
    first: dict[str, str] = {}
    for t in sorted(stream, key=lambda t: t["timestamp"]):
        if t["simulated_incident"]:
            first.setdefault(t["simulated_incident"], t["timestamp"][:10])
    mine = {
        t["simulated_incident"]: t["simulated_scenario"]
        for t in stream
        if first.get(t["simulated_incident"]) == day.isoformat()
    }
    alerts = [
        (rule, txns[tid]) for tid, rule in query(s.postgres, "SELECT transaction_id, alert_type FROM alerts")
    ]
    out = {}
    for rule, scenario in RULE_SCENARIO.items():
        on_day = [t for r, t in alerts if r == rule and t["timestamp"][:10] == day.isoformat()]
        caught = {
            t["simulated_incident"]
            for r, t in alerts
            if r == rule and mine.get(t["simulated_incident"]) == scenario
        }
        out[rule] = (
            sum(1 for v in mine.values() if v == scenario),
            len(caught),
            len(on_day),
            sum(1 for t in on_day if t["simulated_incident"]),
        )
    return out


def _execute(pg: PostgresSettings, statement: str, params: Any = ()) -> None:
    """A committed write as the owner role (the tests' `query` helper only reads)."""
    conn = psycopg2.connect(pg.dsn(migration=True))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
    finally:
        conn.close()


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.charts = 0
        self.tables = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.charts += tag == "svg"
        self.tables += tag == "table"


def test_daily_reporting_on_a_seeded_stream(
    pipeline_settings: Settings, db: Database, tmp_path: Path
) -> None:
    s = pipeline_settings
    produce(s, COUNT, seed=SEED, start=START)
    _send_bad(s)
    summary = consume(s)
    assert summary.stored == COUNT and summary.rejected == len(BAD_MESSAGES)
    queries.ensure_schema(db)
    stream = generated(s, COUNT, SEED, START)

    # --- summary: equal to SQL written independently, for the event day and a processing day
    rows = queries.build_daily_summary(db, DAY, RATES)
    assert _as_tuples(rows) == _expected_summary(s.postgres, DAY)
    on_day = sum(1 for t in stream if t["timestamp"][:10] == DAY.isoformat())
    total = next(r for r in rows if r.dimension == "total")
    assert total.txn_count == on_day and total.converted_by_report == 0
    assert (
        total.amount_base_sum
        == sum(  # the consumer's own conversion, stored per transaction
            (
                Decimal(repr(RATES.to_base(t["amount"], t["currency"])))
                for t in stream
                if t["timestamp"][:10] == DAY.isoformat()
            ),
            Decimal(0),
        )
    )
    assert {r.dimension for r in rows} >= {"total", "transaction_type", "country", "channel", "alert_type"}
    stored = query(
        s.postgres,
        "SELECT dimension, key, txn_count, amount_sum, alert_count, amount_base_sum, converted_by_report "
        "FROM daily_summary WHERE base_currency = %s",
        (RATES.base,),
    )
    assert set(stored) == _as_tuples(rows)

    processing_days = sorted(
        {
            d
            for (d,) in query(
                s.postgres, "SELECT DISTINCT (processed_at AT TIME ZONE 'UTC')::date FROM transactions"
            )
        }
        | {
            d
            for (d,) in query(
                s.postgres,
                "SELECT DISTINCT (rejected_at AT TIME ZONE 'UTC')::date FROM rejected_transactions",
            )
        }
    )
    rejected_counts: Counter[str] = Counter()
    for d in processing_days:
        today_rows = queries.build_daily_summary(db, d, RATES)
        assert _as_tuples(today_rows) == _expected_summary(s.postgres, d)
        rejected_counts.update({r.key: r.txn_count for r in today_rows if r.dimension == "rejection_reason"})
    assert sum(rejected_counts.values()) == len(BAD_MESSAGES)

    # --- alert analysis: per incident, equal to a recomputation from the producer's labels, on
    # every day the stream covers (a dormant account's last activity lies weeks before DAY); every
    # incident counted once, on the day of its first message
    incidents = {t["simulated_incident"]: t["simulated_scenario"] for t in stream if t["simulated_incident"]}
    stream_days = sorted({date.fromisoformat(t["timestamp"][:10]) for t in stream})
    assert DAY in stream_days and NEXT_DAY in stream_days
    analyses = {d: queries.analyse_alerts(db, d) for d in stream_days}
    for d, analysis in analyses.items():
        assert analysis.ground_truth and analysis.transactions == sum(
            1 for t in stream if t["timestamp"][:10] == d.isoformat()
        )
        got = {r.alert_type: (r.incidents, r.caught, r.alerts, r.alerts_on_incidents) for r in analysis.rules}
        assert got == _recomputed_quality(s, stream, d), d
        for r in analysis.rules:
            assert r.recall == (r.caught / r.incidents if r.incidents else None), r
            assert r.precision == (r.alerts_on_incidents / r.alerts if r.alerts else None), r
    # The days add up to the whole run as `make quality` scores it.
    run = score_rules(
        COUNT,
        incidents,
        query(
            s.postgres,
            "SELECT a.alert_type, t.simulated_incident FROM alerts a JOIN transactions t USING (transaction_id)",
        ),
    )
    for r in run:
        days = [next(x for x in a.rules if x.alert_type == r.alert_type) for a in analyses.values()]
        assert (sum(x.incidents for x in days), sum(x.caught for x in days), sum(x.alerts for x in days)) == (
            r.incidents,
            r.caught,
            r.alerts,
        ), r
    assert sum(r.caught for r in run) > 0  # the scenarios were caught at all
    # Journeys that began on DAY and were alerted only on their legs past midnight count as
    # caught on DAY: the whole incident is scored where it began.
    crossing = query(
        s.postgres,
        """SELECT t.simulated_incident FROM transactions t
           WHERE t.simulated_scenario = 'impossible_travel'
           GROUP BY 1
           HAVING (min(t."timestamp") AT TIME ZONE 'UTC')::date = %(day)s
              AND bool_and(NOT EXISTS (SELECT 1 FROM alerts a WHERE a.transaction_id = t.transaction_id
                                       AND a.alert_type = 'impossible_travel')
                           OR (t."timestamp" AT TIME ZONE 'UTC')::date = %(next)s)
              AND bool_or(EXISTS (SELECT 1 FROM alerts a WHERE a.transaction_id = t.transaction_id
                                  AND a.alert_type = 'impossible_travel'))""",
        {"day": DAY, "next": NEXT_DAY},
    )
    assert crossing, "the seeded stream no longer has a journey alerted only past midnight: pick another seed"
    travel = next(r for r in analyses[DAY].rules if r.alert_type == "impossible_travel")
    assert travel.caught >= len(crossing) and travel.recall == 1.0
    assert len(
        query(s.postgres, "SELECT 1 FROM rule_quality WHERE day = %s AND ground_truth", (DAY,))
    ) == len(RULE_SCENARIO)

    # --- reconciliation: every offset the consumer read is stored or rejected, no gaps, no restart
    recon = [p for d in processing_days for p in reconcile_day(db, d)]
    assert not [p for p in recon if p.missing or p.restarts]
    assert sum(p.stored for p in recon) == COUNT and sum(p.rejected for p in recon) == len(BAD_MESSAGES)
    ends = dict(query(s.postgres, "SELECT kafka_partition, max(kafka_offset) FROM transactions GROUP BY 1"))
    for p in recon:
        assert max(r.last_offset for r in p.runs) >= ends[p.partition]

    # --- a rerun yields identical rows
    before = {t: _stored(s.postgres, t, DAY) for t in ("daily_summary", "rule_quality")}
    before_recon = {d: _stored(s.postgres, "reconciliation", d) for d in processing_days}
    queries.build_daily_summary(db, DAY, RATES)
    queries.analyse_alerts(db, DAY)
    for d in processing_days:
        reconcile_day(db, d)
    assert {t: _stored(s.postgres, t, DAY) for t in before} == before
    assert {d: _stored(s.postgres, "reconciliation", d) for d in processing_days} == before_recon

    # --- the report files
    figures = queries.gather_figures(db, DAY, RATES)
    assert figures.rules == analyses[DAY].rules and figures.ground_truth
    assert sum(h.txn_count for h in figures.hourly) == on_day
    assert sum(h.amount_base_sum for h in figures.hourly) == total.amount_base_sum
    assert sum(b.txn_count for b in figures.amounts) == on_day
    top = query(
        s.postgres,
        """SELECT t.account_id, count(*), count(DISTINCT t.transaction_id) FROM alerts a
           JOIN transactions t USING (transaction_id)
           WHERE (t."timestamp" AT TIME ZONE 'UTC')::date = %s GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1""",
        (DAY,),
    )
    head = figures.top_accounts[0]
    assert (head.name, head.alerts, head.transactions) == top[0]
    # Each alerted transaction's amount once, however many rules alerted it.
    [(nominal, base)] = query(
        s.postgres,
        """SELECT sum(amount), sum(amount_base) FROM transactions t WHERE account_id = %s
           AND ("timestamp" AT TIME ZONE 'UTC')::date = %s
           AND EXISTS (SELECT 1 FROM alerts a WHERE a.transaction_id = t.transaction_id)""",
        (head.name, DAY),
    )
    assert (head.amount_sum, head.amount_base_sum) == (nominal, base)
    out = write_report(DAY, figures, tmp_path)
    assert out == tmp_path / "reports" / DAY.isoformat()
    page = _Page()
    page.feed((out / "report.html").read_text())
    page.close()
    assert page.charts == 3
    assert page.tables >= 5
    with (out / "summary.csv").open() as f:
        csv_rows = {
            (
                r["dimension"],
                r["key"],
                int(r["txn_count"]),
                Decimal(r["amount_sum"]),
                int(r["alert_count"]),
                Decimal(r["amount_base_sum"]),
                int(r["converted_by_report"]),
            )
            for r in csv.DictReader(f)
        }
    assert csv_rows == _as_tuples(rows)
    with (out / "alerts.csv").open() as f:
        csv_rules = {r["alert_type"]: (int(r["incidents"]), int(r["caught"])) for r in csv.DictReader(f)}
    assert csv_rules == {r.alert_type: (r.incidents, r.caught) for r in figures.rules}
    assert json.loads((out / "figures.json").read_text())["day"] == DAY.isoformat()


def test_rows_stored_without_a_base_amount_are_converted_by_the_report(
    pipeline_settings: Settings, db: Database
) -> None:
    """Transactions stored before migration 010 have no amount_base: the report converts them
    with the run's rate table, says how many, and the day's total stays what the consumer's
    conversion gave (up to rounding of the same rate)."""
    s = pipeline_settings
    produce(s, 600, seed=29)
    assert consume(s).stored == 600
    day = DEFAULT_START.date()
    before = next(r for r in queries.build_daily_summary(db, day, RATES) if r.dimension == "total")
    _execute(s.postgres, "UPDATE transactions SET amount_base = NULL WHERE currency IN ('JPY', 'EUR', 'GBP')")
    # The day's rows: a few of the stream's lie on other days (a dormant account's last payment).
    on_day = """("timestamp" AT TIME ZONE 'UTC')::date = %s"""
    day_rows = scalar(s.postgres, f"SELECT count(*) FROM transactions WHERE {on_day}", (day,))
    old_rows = scalar(
        s.postgres, f"SELECT count(*) FROM transactions WHERE amount_base IS NULL AND {on_day}", (day,)
    )
    assert old_rows > 0 and day_rows > 590
    rows = queries.build_daily_summary(db, day, RATES)
    assert _as_tuples(rows) == _expected_summary(s.postgres, day)
    total = next(r for r in rows if r.dimension == "total")
    assert total.converted_by_report == old_rows and total.txn_count == day_rows
    assert total.amount_base_sum is not None and before.amount_base_sum is not None
    assert abs(total.amount_base_sum - before.amount_base_sum) <= Decimal("0.01") * old_rows
    assert sum(r.converted_by_report for r in rows if r.dimension == "currency") == old_rows
    figures = queries.gather_figures(db, day, RATES)
    assert sum(h.amount_base_sum for h in figures.hourly) == total.amount_base_sum
    assert (
        f"{old_rows:,} of the day's {day_rows:,} transactions were stored before amounts were converted"
        in " ".join(html.unescape(render_page(figures, {})).split())
    )


def test_reconciliation_reports_lost_offsets(pipeline_settings: Settings, db: Database) -> None:
    s = pipeline_settings
    produce(s, 1500, seed=3)
    assert consume(s).stored == 1500
    [(today,)] = query(
        s.postgres, "SELECT DISTINCT (processed_at AT TIME ZONE 'UTC')::date FROM transactions"
    )
    counts = dict(query(s.postgres, "SELECT kafka_partition, count(*) FROM transactions GROUP BY 1"))
    first, second = sorted(p for p, n in counts.items() if n > 40)[:2]

    # Three messages lost in the middle of one partition.
    _execute(
        s.postgres,
        "DELETE FROM transactions WHERE kafka_partition = %s AND kafka_offset IN (10, 11, 12)",
        (first,),
    )
    # In another, offsets up to 19 were processed "yesterday" and 20 was lost right at midnight.
    _execute(
        s.postgres,
        "UPDATE transactions SET processed_at = processed_at - interval '1 day' "
        "WHERE kafka_partition = %s AND kafka_offset < 20",
        (second,),
    )
    _execute(
        s.postgres, "DELETE FROM transactions WHERE kafka_partition = %s AND kafka_offset = 20", (second,)
    )

    recon = {p.partition: p for p in reconcile_day(db, today)}
    assert [r.gaps for r in recon[first].runs] == [[(10, 12)]] and recon[first].missing == 3
    assert recon[second].previous_offset == 19 and recon[second].runs[0].first_offset == 21
    assert [r.gaps for r in recon[second].runs] == [[(20, 20)]]
    assert all(not r.missing and not r.restarts for p, r in recon.items() if p not in (first, second))
    stored = dict(
        query(s.postgres, "SELECT kafka_partition, gaps FROM reconciliation WHERE day = %s", (today,))
    )
    assert stored[first] == [[10, 12]] and stored[second] == [[20, 20]]

    # A rerun after the data changed replaces the day's summary: the deleted rows are gone from it.
    day = DEFAULT_START.date()
    rows = queries.build_daily_summary(db, day, RATES)
    assert queries.build_daily_summary(db, day, RATES) == rows
    assert _as_tuples(rows) == _expected_summary(s.postgres, day)
    assert query(s.postgres, "SELECT count(*) FROM transactions")[0][0] == 1500 - 4


def test_an_empty_day_reports_zero_and_scores_nothing(fresh_db: PostgresSettings) -> None:
    db = Database(fresh_db)
    try:
        day = date(2026, 2, 1)
        rows = queries.build_daily_summary(db, day, RATES)
        assert [(r.dimension, r.key, r.txn_count, r.alert_count, r.amount_base_sum) for r in rows] == [
            ("total", "", 0, 0, Decimal(0))
        ]
        analysis = queries.analyse_alerts(db, day)
        assert not analysis.ground_truth and analysis.transactions == 0
        assert [r.alert_type for r in analysis.rules] == list(RULE_SCENARIO)
        assert all(
            r.alerts == r.incidents == 0 and r.precision is r.recall is r.alerts_per_1000 is None
            for r in analysis.rules
        )
        assert reconcile_day(db, day) == []
    finally:
        db.close()


def _recreate_topic(s: Settings) -> None:
    """Delete the topic and create it again under the same name: its offsets start at 0."""
    from utils.kafka_cleanup import admin_client, delete_topics

    admin = admin_client(s.kafka.bootstrap_servers)
    try:
        delete_topics(admin, [s.kafka.topic])
        deadline = time.monotonic() + 60
        while True:  # deletion is asynchronous: creating too early says the topic exists
            try:
                admin.create_topics({s.kafka.topic: {"num_partitions": 1, "replication_factor": 1}})
                return
            except kafka.errors.TopicAlreadyExistsError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        admin.close()


def test_reconciliation_reports_a_topic_reset_and_agrees_with_the_rejection_table(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """The issue's case: a topic recreated the same day. Its offsets start again at 0, and the
    report must say so rather than merge two logs into one range; its rejected count must be the
    rejection table's."""
    s = dataclasses.replace(settings_factory(1), data_dir=str(tmp_path))
    produce(s, 300, seed=41)
    _send_bad(s)  # offsets 300-302
    assert consume(s).stored == 300
    _recreate_topic(s)
    again = dataclasses.replace(
        s, kafka=dataclasses.replace(s.kafka, consumer_group=s.kafka.consumer_group + "-2")
    )
    produce(again, 200, seed=42)  # new transaction ids at offsets 0-199 of the new log
    _send_bad(again)  # offsets 200-202
    assert consume(again).stored == 200

    [(today,)] = query(
        s.postgres, "SELECT DISTINCT (processed_at AT TIME ZONE 'UTC')::date FROM transactions"
    )
    db = Database(s.postgres)
    try:
        page, figures = build_report(db, s, today)
    finally:
        db.close()
    [partition] = figures.reconciliation
    assert [
        (r.first_offset, r.last_offset, r.stored, r.rejected, r.gaps, r.restarted) for r in partition.runs
    ] == [
        (0, 302, 300, 3, [], False),
        (0, 202, 200, 3, [], True),
    ]
    rejection_table = figures.total("rejection_reason")
    assert partition.rejected == rejection_table == 2 * len(BAD_MESSAGES)
    assert partition.stored == scalar(
        s.postgres,
        "SELECT count(*) FROM transactions WHERE (processed_at AT TIME ZONE 'UTC')::date = %s",
        (today,),
    )
    stored_rows = query(
        s.postgres,
        "SELECT run, min_offset, max_offset, restarted FROM reconciliation WHERE day = %s ORDER BY run",
        (today,),
    )
    assert stored_rows == [(0, 0, 302, False), (1, 0, 202, True)]
    text = " ".join(page.read_text().split())
    assert "offsets restarted: began at 0, below the offsets before it" in text
    assert f"The rejected messages are the {rejection_table} of the summary's rejection table" in text


def test_a_database_scored_per_message_upgrades_and_says_to_rerun_the_day(
    test_stack: LocalStack, tmp_path: Path
) -> None:
    """Migration 022 on a database whose report tables hold per-message rows: the rule, its scenario
    and its alerts stay, the incident figures are unknown (NULL), and the page reads them as a day
    to rerun rather than as zeros."""
    before_022 = tmp_path / "migrations"
    before_022.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if int(path.name[:3]) < 22:
            (before_022 / path.name).write_text(path.read_text())
    pg = test_stack.create_database(f"txmon_test_{uuid.uuid4().hex[:10]}")
    try:
        schema.migrate(pg, before_022)
        day = date(2026, 2, 3)
        _execute(
            pg,
            """INSERT INTO rule_quality (day, alert_type, scenario, alerts, alert_rate, labelled, true_positives,
                   false_positives, false_negatives, "precision", recall)
               VALUES (%s, 'card_testing', 'card_testing', 12, 0.012, 40, 10, 2, 30, 0.83, 0.25)""",
            (day,),
        )
        _execute(
            pg,
            "INSERT INTO daily_summary (day, dimension, key, txn_count, amount_sum, alert_count) "
            "VALUES (%s, 'total', '', 1000, 987654.32, 12)",
            (day,),
        )
        assert "022_report_incidents_and_base_sums" in schema.migrate(pg)
        assert query(
            pg, 'SELECT alert_type, alerts, incidents, recall, "precision", ground_truth FROM rule_quality'
        ) == [("card_testing", 12, None, None, None, None)]
        db = Database(pg)
        try:
            figures = queries.gather_figures(db, day, RATES)
            [rule] = figures.rules
            assert (rule.alert_type, rule.alerts, rule.incidents, rule.recall) == (
                "card_testing",
                12,
                0,
                None,
            )
            assert not figures.ground_truth and figures.total_row is not None
            assert figures.total_row.amount_base_sum is None
            text = " ".join(html.unescape(render_page(figures, {})).split())
            assert "No incident labels on this day." in text
            assert "computed before the report added amounts in the base currency; rerun the day" in text
            # Rerunning the day replaces both with today's figures (no transactions stored here).
            queries.build_daily_summary(db, day, RATES)
            queries.analyse_alerts(db, day)
            assert query(pg, "SELECT count(*) FROM rule_quality WHERE ground_truth IS NULL") == [(0,)]
            assert query(pg, "SELECT amount_base_sum, base_currency FROM daily_summary") == [
                (Decimal(0), "USD")
            ]
        finally:
            db.close()
    finally:
        test_stack.drop_database(pg.db)
