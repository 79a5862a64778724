"""The day's queries: each report step reads the database, stores its result for one UTC day
and returns it as plain data (`reports.figures`).

Each step writes idempotently: a rerun deletes that day's rows and inserts them again in the
same database transaction, so a reader sees either the old or the new figures, never a mix,
and a day whose data shrank (retention) loses its stale keys. Which clock defines "the day"
for each figure is explained in `reports.day`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from reports.day import day_bounds
from reports.errors import ReportError
from reports.figures import (
    RULE_QUALITY_COLUMNS,
    AlertAnalysis,
    AmountBucket,
    HourVolume,
    PartitionReconciliation,
    ReportFigures,
    RuleCounts,
    RuleQuality,
    SummaryRow,
    TopEntry,
    dimension_order,
)
from reports.scoring import SCENARIO_FOR_RULE, reconcile_partitions, score_rule
from utils.database import Database

log = logging.getLogger(__name__)

TOP_N = 10


@contextmanager
def _snapshot(db: Database) -> Iterator[psycopg2.extensions.cursor]:
    """One transaction that reads a consistent snapshot while the consumer keeps writing."""
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield cur


def ensure_schema(db: Database) -> None:
    """Fail with the fix when the reporting tables (migration 002) are missing."""
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT t FROM unnest(%s::text[]) AS t WHERE to_regclass(t) IS NULL",
            (["daily_summary", "rule_quality", "reconciliation", "pipeline_metrics"],),
        )
        missing = [r[0] for r in cur.fetchall()]
    if missing:
        raise ReportError(
            f"table(s) {', '.join(missing)} missing: apply the migrations as the owner role "
            "(`python -m utils.database migrate`, or start the consumer, which migrates on start)"
        )


# Day's transactions with their alert counts, then one breakdown per grouping set. The alert
# rows join through the day's transactions, so alerts belong to their transaction's day.
_SUMMARY_SQL = """
WITH day_alerts AS (
    SELECT a.transaction_id, a.alert_type, a.severity, t.amount
    FROM alerts a JOIN transactions t USING (transaction_id)
    WHERE t."timestamp" >= %(start)s AND t."timestamp" < %(end)s
), per_txn AS (
    SELECT transaction_id, count(*) AS n FROM day_alerts GROUP BY transaction_id
), day_txns AS (
    SELECT t.transaction_type, t.currency::text AS currency, t.country::text AS country, t.channel,
           t.amount, coalesce(p.n, 0) AS n_alerts
    FROM transactions t LEFT JOIN per_txn p USING (transaction_id)
    WHERE t."timestamp" >= %(start)s AND t."timestamp" < %(end)s
), severities AS (
    SELECT severity, transaction_id, min(amount) AS amount, count(*) AS n
    FROM day_alerts GROUP BY severity, transaction_id
), rows AS (
    SELECT CASE WHEN grouping(transaction_type) = 0 THEN 'transaction_type'
                WHEN grouping(currency) = 0 THEN 'currency'
                WHEN grouping(country) = 0 THEN 'country'
                WHEN grouping(channel) = 0 THEN 'channel'
                ELSE 'total' END AS dimension,
           coalesce(transaction_type, currency, country, channel, '') AS key,
           count(*) AS txn_count, coalesce(sum(amount), 0) AS amount_sum,
           coalesce(sum(n_alerts), 0) AS alert_count
    FROM day_txns
    GROUP BY GROUPING SETS ((), (transaction_type), (currency), (country), (channel))
    UNION ALL
    SELECT 'alert_type', alert_type, count(*), sum(amount), count(*) FROM day_alerts GROUP BY alert_type
    UNION ALL
    SELECT 'alert_severity', severity, count(*), sum(amount), sum(n) FROM severities GROUP BY severity
    UNION ALL
    SELECT 'rejection_reason', reason, count(*), 0, 0 FROM rejected_transactions
    WHERE rejected_at >= %(start)s AND rejected_at < %(end)s GROUP BY reason
)
INSERT INTO daily_summary AS d (day, dimension, key, txn_count, amount_sum, alert_count)
SELECT %(day)s, dimension, key, txn_count, amount_sum, alert_count FROM rows
ON CONFLICT (day, dimension, key) DO UPDATE
SET txn_count = EXCLUDED.txn_count, amount_sum = EXCLUDED.amount_sum,
    alert_count = EXCLUDED.alert_count, computed_at = now()
RETURNING dimension, key, txn_count, amount_sum, alert_count
"""


def build_daily_summary(db: Database, day: date) -> list[SummaryRow]:
    """Counts and sums by type, currency, country and channel; alerts by type and severity;
    rejections by reason. Replaces the day's rows in one transaction; returns them."""
    start, end = day_bounds(day)
    with _snapshot(db) as cur:
        # DELETE first: keys that no longer occur (data purged, a rule renamed) must not linger.
        # ON CONFLICT still matters: two concurrent reruns would otherwise collide on the key.
        cur.execute("DELETE FROM daily_summary WHERE day = %s", (day,))
        cur.execute(_SUMMARY_SQL, {"day": day, "start": start, "end": end})
        rows = [SummaryRow(d, k, int(n), Decimal(s), int(a)) for d, k, n, s, a in cur.fetchall()]
    rows.sort(key=dimension_order)
    total = next((r.txn_count for r in rows if r.dimension == "total"), 0)
    log.info("daily summary %s: %d transactions, %d rows", day, total, len(rows))
    return rows


_RULE_COUNTS_SQL = """
WITH day_txns AS (
    SELECT transaction_id, account_id, simulated_scenario FROM transactions
    WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s
), alerted AS (
    SELECT a.alert_type, d.transaction_id, d.account_id, d.simulated_scenario
    FROM alerts a JOIN day_txns d USING (transaction_id)
), rules AS (
    SELECT * FROM unnest(%(rules)s::text[], %(scenarios)s::text[]) AS r (alert_type, scenario)
    UNION
    SELECT DISTINCT alert_type, NULL FROM alerted WHERE alert_type <> ALL (%(rules)s::text[])
)
SELECT r.alert_type, r.scenario,
       count(x.transaction_id),
       count(x.transaction_id) FILTER (WHERE x.simulated_scenario = r.scenario),
       count(x.transaction_id) FILTER (WHERE x.simulated_scenario IS NOT NULL),
       count(DISTINCT x.account_id) FILTER (WHERE x.simulated_scenario = r.scenario)
FROM rules r LEFT JOIN alerted x USING (alert_type)
GROUP BY r.alert_type, r.scenario
ORDER BY r.alert_type
"""

# The day's total (grouping set ()) and the count per label in one scan.
_LABELS_SQL = """
SELECT grouping(simulated_scenario) = 1, simulated_scenario, count(*), count(DISTINCT account_id)
FROM transactions
WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s
GROUP BY GROUPING SETS ((), (simulated_scenario))
"""


def _top(
    cur: psycopg2.extensions.cursor, column: str, start: datetime, end: datetime, n: int
) -> list[TopEntry]:
    col = sql.Identifier("t", column)
    stmt = sql.SQL(
        """
        SELECT {col}, count(*), count(DISTINCT t.transaction_id), coalesce(sum(t.amount), 0),
               array_agg(DISTINCT a.alert_type ORDER BY a.alert_type)
        FROM alerts a JOIN transactions t USING (transaction_id)
        WHERE t."timestamp" >= %s AND t."timestamp" < %s AND {col} IS NOT NULL
        GROUP BY {col}
        ORDER BY count(*) DESC, {col}
        LIMIT %s
        """
    ).format(col=col)
    cur.execute(stmt, (start, end, n))
    return [
        TopEntry(name, int(a), int(t), Decimal(s), tuple(types)) for name, a, t, s, types in cur.fetchall()
    ]


def _read_analysis(cur: psycopg2.extensions.cursor, day: date, top_n: int) -> AlertAnalysis:
    start, end = day_bounds(day)
    cur.execute(_LABELS_SQL, {"start": start, "end": end})
    transactions, labels = 0, {}
    for is_total, scenario, n, accounts in cur.fetchall():
        if is_total:
            transactions = int(n)
        elif scenario is not None:
            labels[scenario] = (int(n), int(accounts))
    labels_present = bool(labels)
    cur.execute(
        _RULE_COUNTS_SQL,
        {
            "start": start,
            "end": end,
            "rules": list(SCENARIO_FOR_RULE),
            "scenarios": list(SCENARIO_FOR_RULE.values()),
        },
    )
    rules = []
    for alert_type, scenario, alerts, tp, on_fraud, detected in cur.fetchall():
        labelled, labelled_accounts = labels.get(scenario, (0, 0)) if scenario else (0, 0)
        counts = RuleCounts(
            alert_type,
            scenario,
            int(alerts),
            int(tp),
            int(on_fraud),
            labelled,
            labelled_accounts,
            int(detected),
        )
        rules.append(score_rule(counts, transactions, labels_present=labels_present))
    return AlertAnalysis(
        day=day,
        transactions=transactions,
        labels_present=labels_present,
        rules=rules,
        top_accounts=_top(cur, "account_id", start, end, top_n),
        top_merchants=_top(cur, "merchant", start, end, top_n),
    )


def analyse_alerts(db: Database, day: date, *, top_n: int = TOP_N) -> AlertAnalysis:
    """Alert rate and precision/recall per rule, top accounts and merchants by alerts.
    Replaces the day's `rule_quality` rows in one transaction."""
    with _snapshot(db) as cur:
        analysis = _read_analysis(cur, day, top_n)
        cur.execute("DELETE FROM rule_quality WHERE day = %s", (day,))
        columns = ", ".join(f'"{c}"' for c in RULE_QUALITY_COLUMNS)
        updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in RULE_QUALITY_COLUMNS[1:])
        psycopg2.extras.execute_values(
            cur,
            f"INSERT INTO rule_quality (day, {columns}) VALUES %s "
            f"ON CONFLICT (day, alert_type) DO UPDATE SET {updates}, computed_at = now()",
            [(day, *dataclasses.astuple(r)) for r in analysis.rules],
        )
    fired = sum(r.alerts for r in analysis.rules)
    log.info("alert analysis %s: %d alerts over %d rules", day, fired, len(analysis.rules))
    return analysis


_OFFSETS_SQL = """
SELECT kafka_partition, kafka_offset, true FROM transactions
WHERE processed_at >= %(start)s AND processed_at < %(end)s
UNION ALL
SELECT kafka_partition, kafka_offset, false FROM rejected_transactions
WHERE rejected_at >= %(start)s AND rejected_at < %(end)s AND (%(topic)s::text IS NULL OR kafka_topic = %(topic)s)
ORDER BY 1, 2
"""

_PREVIOUS_SQL = """
SELECT p, greatest(
    (SELECT max(kafka_offset) FROM transactions WHERE kafka_partition = p AND processed_at < %(start)s),
    (SELECT max(kafka_offset) FROM rejected_transactions
     WHERE kafka_partition = p AND rejected_at < %(start)s AND (%(topic)s::text IS NULL OR kafka_topic = %(topic)s)))
FROM unnest(%(parts)s::int[]) AS p
"""


def reconcile(db: Database, day: date, *, topic: str | None = None) -> list[PartitionReconciliation]:
    """Per partition: the offsets the consumer accounted for on `day` (stored + rejected, by its
    processing clock) and the ranges it skipped, including one across the previous midnight.
    `topic` restricts rejected rows to the pipeline's topic. Replaces the day's rows."""
    start, end = day_bounds(day)
    params: dict[str, Any] = {"start": start, "end": end, "topic": topic}
    with _snapshot(db) as cur:
        cur.execute(_OFFSETS_SQL, params)
        rows = [(int(p), int(o), bool(s)) for p, o, s in cur.fetchall()]
        partitions = sorted({p for p, _, _ in rows})
        cur.execute(_PREVIOUS_SQL, {**params, "parts": partitions})
        previous = {int(p): (None if m is None else int(m)) for p, m in cur.fetchall()}
        result = reconcile_partitions(rows, previous)
        cur.execute("DELETE FROM reconciliation WHERE day = %s", (day,))
        if result:
            psycopg2.extras.execute_values(
                cur,
                "INSERT INTO reconciliation (day, kafka_partition, min_offset, max_offset, previous_offset, "
                "stored, rejected, missing, gaps) VALUES %s ON CONFLICT (day, kafka_partition) DO UPDATE SET "
                "min_offset = EXCLUDED.min_offset, max_offset = EXCLUDED.max_offset, "
                "previous_offset = EXCLUDED.previous_offset, stored = EXCLUDED.stored, "
                "rejected = EXCLUDED.rejected, missing = EXCLUDED.missing, gaps = EXCLUDED.gaps, "
                "computed_at = now()",
                [
                    (
                        day,
                        r.partition,
                        r.min_offset,
                        r.max_offset,
                        r.previous_offset,
                        r.stored,
                        r.rejected,
                        r.missing,
                        psycopg2.extras.Json([list(g) for g in r.gaps]),
                    )
                    for r in result
                ],
            )
    missing = sum(r.missing for r in result)
    if missing:
        log.warning(
            "reconciliation %s: %d offsets missing in partitions %s",
            day,
            missing,
            [r.partition for r in result if r.gaps],
        )
    else:
        log.info("reconciliation %s: %d partitions, no gaps", day, len(result))
    return result


_HOURLY_SQL = """
WITH per_txn AS (
    SELECT a.transaction_id, count(*) AS n
    FROM alerts a JOIN transactions t USING (transaction_id)
    WHERE t."timestamp" >= %(start)s AND t."timestamp" < %(end)s
    GROUP BY a.transaction_id
)
SELECT extract(hour FROM t."timestamp" AT TIME ZONE 'UTC')::int, count(*), sum(t.amount), coalesce(sum(p.n), 0)
FROM transactions t LEFT JOIN per_txn p USING (transaction_id)
WHERE t."timestamp" >= %(start)s AND t."timestamp" < %(end)s
GROUP BY 1 ORDER BY 1
"""

# Quarter-decade buckets: amounts span 0.50 to tens of thousands, a linear histogram shows one bar.
_AMOUNTS_SQL = """
SELECT floor(log(amount) * 4)::int AS bucket, count(*)
FROM transactions WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s
GROUP BY 1 ORDER BY 1
"""


def gather_figures(db: Database, day: date, *, top_n: int = TOP_N) -> ReportFigures:
    """The report's content: the stored rows of the earlier steps plus hourly volume, the amount
    distribution and the top lists, all from one snapshot."""
    start, end = day_bounds(day)
    with _snapshot(db) as cur:
        cur.execute(
            "SELECT dimension, key, txn_count, amount_sum, alert_count FROM daily_summary WHERE day = %s",
            (day,),
        )
        summary = sorted(
            (SummaryRow(d, k, int(n), Decimal(s), int(a)) for d, k, n, s, a in cur.fetchall()),
            key=dimension_order,
        )
        columns = ", ".join(f'"{c}"' for c in RULE_QUALITY_COLUMNS)
        cur.execute(f"SELECT {columns} FROM rule_quality WHERE day = %s ORDER BY alert_type", (day,))
        rules = [RuleQuality(*row) for row in cur.fetchall()]
        cur.execute(
            "SELECT kafka_partition, min_offset, max_offset, previous_offset, stored, rejected, gaps "
            "FROM reconciliation WHERE day = %s ORDER BY kafka_partition",
            (day,),
        )
        recon = [
            PartitionReconciliation(p, lo, hi, prev, st, rj, [(int(a), int(b)) for a, b in gaps])
            for p, lo, hi, prev, st, rj, gaps in cur.fetchall()
        ]
        cur.execute(_HOURLY_SQL, {"start": start, "end": end})
        hourly = [HourVolume(int(h), int(n), Decimal(s), int(a)) for h, n, s, a in cur.fetchall()]
        cur.execute(_AMOUNTS_SQL, {"start": start, "end": end})
        amounts = [AmountBucket(10 ** (b / 4), 10 ** ((b + 1) / 4), int(n)) for b, n in cur.fetchall()]
        top_accounts = _top(cur, "account_id", start, end, top_n)
        top_merchants = _top(cur, "merchant", start, end, top_n)
    return ReportFigures(day, summary, rules, top_accounts, top_merchants, recon, hourly, amounts)
