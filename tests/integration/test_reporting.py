"""Daily reporting against a real stream: producer (simulated clock) -> Kafka -> consumer -> PostgreSQL,
then every reporting step, checked against SQL written independently here and against the
producer's own labels."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from kafka import KafkaProducer

from producer.generator import DEFAULT_START
from reports import queries
from reports.figures import SummaryRow
from reports.files import write_report
from reports.scoring import SCENARIO_FOR_RULE
from tests.support import consume, generated, produce, query
from utils.config import PostgresSettings, Settings
from utils.database import Database

SEED = 17
COUNT = 4000
# The simulated clock starts at DEFAULT_START (2026-01-01 00:00 UTC) and 4,000 messages span
# about 90 minutes of event time; a few back-dated scenario legs fall on 2025-12-31.
DAY = DEFAULT_START.date()
BAD_MESSAGES = [b'{"transaction_id": "trunc', b"\xff not json", b"[]"]


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


def _expected_summary(pg: PostgresSettings, day: date) -> set[tuple[str, str, int, Decimal, int]]:
    """The summary, recomputed with a different formulation: a date cast instead of a range,
    one query per dimension, correlated alert counts."""
    out: set[tuple[str, str, int, Decimal, int]] = set()
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
            f"SELECT {column}, count(*), coalesce(sum(amount), 0), coalesce(sum({n_alerts}), 0) "
            f"FROM transactions t WHERE {on_day} " + ("" if dimension == "total" else "GROUP BY 1"),
            {"day": day},
        )
        out |= {(dimension, k, n, s, a) for k, n, s, a in rows}
    for dimension, column in (("alert_type", "a.alert_type"), ("alert_severity", "a.severity")):
        rows = query(
            pg,
            f"""SELECT {column}, count(DISTINCT t.transaction_id), count(*),
                       array_agg(t.transaction_id), array_agg(t.amount)
                FROM alerts a JOIN transactions t USING (transaction_id) WHERE {on_day} GROUP BY 1""",
            {"day": day},
        )
        for key, txns, alerts, ids, amounts in rows:
            amount = sum(dict(zip(ids, amounts, strict=True)).values(), Decimal(0))  # each transaction once
            out.add((dimension, key, txns, amount, alerts))
    rejected = query(
        pg,
        "SELECT reason, count(*) FROM rejected_transactions WHERE (rejected_at AT TIME ZONE 'UTC')::date = %s "
        "GROUP BY 1",
        (day,),
    )
    out |= {("rejection_reason", r, n, Decimal(0), 0) for r, n in rejected}
    return out


def _as_tuples(rows: list[SummaryRow]) -> set[tuple[str, str, int, Decimal, int]]:
    return {(r.dimension, r.key, r.txn_count, r.amount_sum, r.alert_count) for r in rows}


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
    s: Settings, day: date
) -> dict[str, tuple[int, int, int, float | None, float | None]]:
    """Per rule: (alerts, true positives, labelled, precision, recall) from the producer's labels."""
    stream = generated(s, COUNT, SEED)
    labels = {
        t["transaction_id"]: t["simulated_scenario"] for t in stream if t["timestamp"][:10] == day.isoformat()
    }
    alerts = [
        (tid, rule)
        for tid, rule in query(s.postgres, "SELECT transaction_id, alert_type FROM alerts")
        if tid in labels
    ]
    out: dict[str, tuple[int, int, int, float | None, float | None]] = {}
    for rule, scenario in SCENARIO_FOR_RULE.items():
        alerted = {tid for tid, r in alerts if r == rule}
        if scenario is None:
            out[rule] = (len(alerted), 0, 0, None, None)
            continue
        labelled = {tid for tid, label in labels.items() if label == scenario}
        tp = alerted & labelled
        precision = len(tp) / len(alerted) if alerted else None
        recall = len(tp) / len(labelled) if labelled else None
        out[rule] = (len(alerted), len(tp), len(labelled), precision, recall)
    return out


def _same(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a == pytest.approx(b))


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
        self.images: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        self.tables += tag == "table"


def test_daily_reporting_on_a_seeded_stream(
    pipeline_settings: Settings, db: Database, tmp_path: Path
) -> None:
    s = pipeline_settings
    produce(s, COUNT, seed=SEED, start=DEFAULT_START)
    _send_bad(s)
    summary = consume(s)
    assert summary.stored == COUNT and summary.rejected == len(BAD_MESSAGES)
    queries.ensure_schema(db)

    # --- summary: equal to SQL written independently, for the event day and a processing day
    rows = queries.build_daily_summary(db, DAY)
    assert _as_tuples(rows) == _expected_summary(s.postgres, DAY)
    on_day = sum(1 for t in generated(s, COUNT, SEED) if t["timestamp"][:10] == DAY.isoformat())
    assert next(r for r in rows if r.dimension == "total").txn_count == on_day
    assert {r.dimension for r in rows} >= {"total", "transaction_type", "country", "channel", "alert_type"}
    stored = query(s.postgres, "SELECT dimension, key, txn_count, amount_sum, alert_count FROM daily_summary")
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
        today_rows = queries.build_daily_summary(db, d)
        assert _as_tuples(today_rows) == _expected_summary(s.postgres, d)
        rejected_counts.update({r.key: r.txn_count for r in today_rows if r.dimension == "rejection_reason"})
    assert sum(rejected_counts.values()) == len(BAD_MESSAGES)

    # --- alert analysis: precision and recall equal a recomputation from the producer's labels
    analysis = queries.analyse_alerts(db, DAY)
    assert analysis.labels_present and analysis.transactions == on_day
    got = {
        r.alert_type: (r.alerts, r.true_positives or 0, r.labelled or 0, r.precision, r.recall)
        for r in analysis.rules
    }
    expected = _recomputed_quality(s, DAY)
    assert got.keys() == expected.keys()
    for rule, (alerts, tp, labelled, precision, recall) in expected.items():
        assert got[rule][:3] == (alerts, tp, labelled), rule
        assert _same(got[rule][3], precision) and _same(got[rule][4], recall), rule
    assert sum(r.true_positives or 0 for r in analysis.rules) > 0  # the scenarios were caught at all
    top = query(
        s.postgres,
        """SELECT a.account_id, count(*) FROM alerts a JOIN transactions t USING (transaction_id)
           WHERE (t."timestamp" AT TIME ZONE 'UTC')::date = %s GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1""",
        (DAY,),
    )
    assert (analysis.top_accounts[0].name, analysis.top_accounts[0].alerts) == top[0]
    assert len(query(s.postgres, "SELECT 1 FROM rule_quality WHERE day = %s", (DAY,))) == len(analysis.rules)

    # --- reconciliation: every offset the consumer read is stored or rejected, no gaps
    recon = [r for d in processing_days for r in queries.reconcile(db, d, topic=s.kafka.topic)]
    assert not [r for r in recon if r.gaps]
    assert sum(r.stored for r in recon) == COUNT and sum(r.rejected for r in recon) == len(BAD_MESSAGES)
    ends = dict(query(s.postgres, "SELECT kafka_partition, max(kafka_offset) FROM transactions GROUP BY 1"))
    for r in recon:
        assert r.max_offset >= ends[r.partition]

    # --- a rerun yields identical rows
    before = {t: _stored(s.postgres, t, DAY) for t in ("daily_summary", "rule_quality")}
    before_recon = {d: _stored(s.postgres, "reconciliation", d) for d in processing_days}
    queries.build_daily_summary(db, DAY)
    queries.analyse_alerts(db, DAY)
    for d in processing_days:
        queries.reconcile(db, d, topic=s.kafka.topic)
    assert {t: _stored(s.postgres, t, DAY) for t in before} == before
    assert {d: _stored(s.postgres, "reconciliation", d) for d in processing_days} == before_recon

    # --- the report files
    figures = queries.gather_figures(db, DAY)
    assert sum(h.txn_count for h in figures.hourly) == on_day
    assert sum(b.txn_count for b in figures.amounts) == on_day
    out = write_report(DAY, figures, tmp_path)
    assert out == tmp_path / "reports" / DAY.isoformat()
    page = _Page()
    page.feed((out / "report.html").read_text())
    page.close()
    assert len(page.images) == 3 and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert page.tables >= 5
    with (out / "summary.csv").open() as f:
        csv_rows = {
            (r["dimension"], r["key"], int(r["txn_count"]), Decimal(r["amount_sum"]), int(r["alert_count"]))
            for r in csv.DictReader(f)
        }
    assert csv_rows == _as_tuples(rows)
    with (out / "alerts.csv").open() as f:
        assert {r["alert_type"] for r in csv.DictReader(f)} == set(got)
    assert json.loads((out / "figures.json").read_text())["day"] == DAY.isoformat()


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

    recon = {r.partition: r for r in queries.reconcile(db, today, topic=s.kafka.topic)}
    assert recon[first].gaps == [(10, 12)] and recon[first].missing == 3
    assert recon[second].previous_offset == 19 and recon[second].min_offset == 21
    assert recon[second].gaps == [(20, 20)]
    assert all(not r.gaps for p, r in recon.items() if p not in (first, second))
    stored = dict(
        query(s.postgres, "SELECT kafka_partition, gaps FROM reconciliation WHERE day = %s", (today,))
    )
    assert stored[first] == [[10, 12]] and stored[second] == [[20, 20]]

    # A rerun after the data changed replaces the day's summary: the deleted rows are gone from it.
    day = DEFAULT_START.date()
    rows = queries.build_daily_summary(db, day)
    assert queries.build_daily_summary(db, day) == rows
    assert _as_tuples(rows) == _expected_summary(s.postgres, day)
    assert query(s.postgres, "SELECT count(*) FROM transactions")[0][0] == 1500 - 4


def test_an_empty_day_reports_zero_and_scores_nothing(fresh_db: PostgresSettings) -> None:
    db = Database(fresh_db)
    try:
        day = date(2026, 2, 1)
        rows = queries.build_daily_summary(db, day)
        assert [(r.dimension, r.key, r.txn_count, r.alert_count) for r in rows] == [("total", "", 0, 0)]
        analysis = queries.analyse_alerts(db, day)
        assert not analysis.labels_present and analysis.transactions == 0
        assert {r.alert_type for r in analysis.rules} == set(SCENARIO_FOR_RULE)
        assert all(r.alerts == 0 and r.precision is None and r.recall is None for r in analysis.rules)
        assert queries.reconcile(db, day) == []
    finally:
        db.close()
