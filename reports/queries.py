"""The day's queries: each report step reads the database, stores its result for one UTC day
and returns it as plain data (`reports.figures`).

Reconciliation's SQL is in `reports.reconciliation`, completeness in `reports.completeness`.
Each step writes idempotently: a rerun deletes that day's rows and inserts them again in the
same database transaction, so a reader sees either the old or the new figures, never a mix,
and a day whose data shrank (retention) loses its stale keys. Which clock defines "the day"
for each figure is explained in `reports.day`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from reports.completeness import read_completeness
from reports.day import day_bounds
from reports.errors import ReportError
from reports.figures import (
    RULE_QUALITY_COLUMNS,
    AlertAnalysis,
    AmountBucket,
    HourVolume,
    ReportFigures,
    SummaryRow,
    TopEntry,
    dimension_order,
)
from reports.reconciliation import read_reconciliation
from reports.scoring import score_day
from utils import verdicts
from utils.database import Database
from utils.money import MINOR_UNITS, RateTable
from utils.rule_quality import RULE_SCENARIO, RuleScore

log = logging.getLogger(__name__)

TOP_N = 10
_SUMMARY_COLUMNS = (
    "dimension, key, txn_count, amount_sum, alert_count, amount_base_sum, base_currency, converted_by_report"
)


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


# The day's transactions (event time), each with its amount in the base currency: as stored, or,
# for rows stored before amount_base existed (migration 010), converted here with the run's rate
# table, to the base currency's minor unit, as validation would; `converted` marks those.
_DAY_BASE_CTE = """rates AS (
    SELECT * FROM unnest(%(codes)s::text[], %(factors)s::numeric[]) AS r (currency, factor)
), day_base AS (
    SELECT t.transaction_id, t."timestamp", t.account_id, t.merchant, t.transaction_type,
           t.currency::text AS currency, t.country::text AS country, t.channel, t.amount,
           coalesce(t.amount_base, round(t.amount * r.factor, %(minor)s)) AS amount_base,
           (t.amount_base IS NULL)::int AS converted
    FROM transactions t LEFT JOIN rates r ON r.currency = t.currency::text
    WHERE t."timestamp" >= %(start)s AND t."timestamp" < %(end)s
)"""

# The day's transactions with their alert counts and base amounts, then one breakdown per
# grouping set. The alert rows join through the day's transactions, so alerts belong to their
# transaction's day.
_SUMMARY_SQL = f"""
WITH {_DAY_BASE_CTE}, day_alerts AS (
    SELECT a.transaction_id, a.alert_type, a.severity, d.amount, d.amount_base, d.converted
    FROM alerts a JOIN day_base d USING (transaction_id)
), per_txn AS (
    SELECT transaction_id, count(*) AS n FROM day_alerts GROUP BY transaction_id
), day_txns AS (
    SELECT d.*, coalesce(p.n, 0) AS n_alerts FROM day_base d LEFT JOIN per_txn p USING (transaction_id)
), severities AS (
    SELECT severity, transaction_id, min(amount) AS amount, min(amount_base) AS amount_base,
           min(converted) AS converted, count(*) AS n
    FROM day_alerts GROUP BY severity, transaction_id
), rows AS (
    SELECT CASE WHEN grouping(transaction_type) = 0 THEN 'transaction_type'
                WHEN grouping(currency) = 0 THEN 'currency'
                WHEN grouping(country) = 0 THEN 'country'
                WHEN grouping(channel) = 0 THEN 'channel'
                ELSE 'total' END AS dimension,
           coalesce(transaction_type, currency, country, channel, '') AS key,
           count(*) AS txn_count, coalesce(sum(amount), 0) AS amount_sum,
           coalesce(sum(n_alerts), 0) AS alert_count,
           coalesce(sum(amount_base), 0) AS amount_base_sum, coalesce(sum(converted), 0) AS converted
    FROM day_txns
    GROUP BY GROUPING SETS ((), (transaction_type), (currency), (country), (channel))
    UNION ALL
    SELECT 'alert_type', alert_type, count(*), sum(amount), count(*), sum(amount_base), sum(converted)
    FROM day_alerts GROUP BY alert_type
    UNION ALL
    SELECT 'alert_severity', severity, count(*), sum(amount), sum(n), sum(amount_base), sum(converted)
    FROM severities GROUP BY severity
    UNION ALL
    SELECT 'rejection_reason', reason, count(*), 0, 0, 0, 0 FROM rejected_transactions
    WHERE rejected_at >= %(start)s AND rejected_at < %(end)s GROUP BY reason
)
INSERT INTO daily_summary AS d (day, dimension, key, txn_count, amount_sum, alert_count,
                                amount_base_sum, base_currency, converted_by_report)
SELECT %(day)s, dimension, key, txn_count, amount_sum, alert_count, amount_base_sum, %(base)s, converted
FROM rows
ON CONFLICT (day, dimension, key) DO UPDATE
SET txn_count = EXCLUDED.txn_count, amount_sum = EXCLUDED.amount_sum, alert_count = EXCLUDED.alert_count,
    amount_base_sum = EXCLUDED.amount_base_sum, base_currency = EXCLUDED.base_currency,
    converted_by_report = EXCLUDED.converted_by_report, computed_at = now()
RETURNING {_SUMMARY_COLUMNS}
"""


def _rates(rates: RateTable) -> dict[str, Any]:
    """The query parameters of `_DAY_BASE_CTE`'s rates and of the base currency. Factors go in as
    text, so PostgreSQL's numeric holds the shortest decimal that is the float (0.0067, not
    0.00669999...)."""
    codes = sorted(rates.factors)
    return {
        "codes": codes,
        "factors": [repr(rates.factors[c]) for c in codes],
        "minor": MINOR_UNITS[rates.base],
        "base": rates.base,
    }


def _summary_row(row: Sequence[Any]) -> SummaryRow:
    d, k, n, s, a, base_sum, base, converted = row
    return SummaryRow(
        d,
        k,
        int(n),
        Decimal(s),
        int(a),
        None if base_sum is None else Decimal(base_sum),
        base,
        int(converted or 0),
    )


def build_daily_summary(db: Database, day: date, rates: RateTable) -> list[SummaryRow]:
    """Counts and sums by type, currency, country and channel; alerts by type and severity;
    rejections by reason. Amounts nominal and in `rates.base` (rows stored without amount_base
    converted with `rates`). Replaces the day's rows in one transaction; returns them."""
    start, end = day_bounds(day)
    with db.snapshot() as cur:
        # DELETE first: keys that no longer occur (data purged, a rule renamed) must not linger.
        # ON CONFLICT still matters: two concurrent reruns would otherwise collide on the key.
        cur.execute("DELETE FROM daily_summary WHERE day = %s", (day,))
        cur.execute(_SUMMARY_SQL, {"day": day, "start": start, "end": end, **_rates(rates)})
        rows = [_summary_row(r) for r in cur.fetchall()]
    rows.sort(key=dimension_order)
    total = next((r for r in rows if r.dimension == "total"), None)
    log.info(
        "daily summary %s: %d transactions, %d rows, %s %s in all (%d converted by the report)",
        day,
        total.txn_count if total else 0,
        len(rows),
        total.amount_base_sum if total else 0,
        rates.base,
        total.converted_by_report if total else 0,
    )
    return rows


# The day's transactions and whether any carries an incident label (the day's ground truth).
_DAY_LABELS_SQL = """
SELECT count(*), count(simulated_incident) > 0 FROM transactions
WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s
"""

# Incidents whose first message (event time) falls on the day: those with a labelled message on
# the day, then all their messages, wherever they fall, for the first one.
_DAY_INCIDENTS_SQL = """
WITH touching AS (
    SELECT DISTINCT simulated_incident FROM transactions
    WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s AND simulated_incident IS NOT NULL
)
SELECT t.simulated_incident, min(t.simulated_scenario)
FROM transactions t JOIN touching USING (simulated_incident)
GROUP BY t.simulated_incident
HAVING min(t."timestamp") >= %(start)s
"""

# Alerts counted per (rule, incident of the alerted message, on the day?): the day's alerts, and
# the alerts on the day's incidents' messages past the day (they catch, they are not the day's).
_DAY_ALERTS_SQL = """
SELECT a.alert_type, t.simulated_incident, true, count(*)
FROM alerts a JOIN transactions t USING (transaction_id)
WHERE t."timestamp" >= %(start)s AND t."timestamp" < %(end)s
GROUP BY 1, 2
UNION ALL
SELECT a.alert_type, t.simulated_incident, false, count(*)
FROM alerts a JOIN transactions t USING (transaction_id)
WHERE t.simulated_incident = ANY(%(incidents)s) AND t."timestamp" >= %(end)s
GROUP BY 1, 2
"""


def _read_analysis(cur: psycopg2.extensions.cursor, day: date) -> AlertAnalysis:
    start, end = day_bounds(day)
    bounds = {"start": start, "end": end}
    cur.execute(_DAY_LABELS_SQL, bounds)
    transactions, ground_truth = cur.fetchone()
    cur.execute(_DAY_INCIDENTS_SQL, bounds)
    incidents = dict(cur.fetchall())
    cur.execute(_DAY_ALERTS_SQL, {**bounds, "incidents": list(incidents)})
    alerts = [(a, i, bool(on_day), int(n)) for a, i, on_day, n in cur.fetchall()]
    rules = score_day(int(transactions), incidents, alerts, ground_truth=bool(ground_truth))
    return AlertAnalysis(day, int(transactions), bool(ground_truth), rules)


def analyse_alerts(db: Database, day: date) -> AlertAnalysis:
    """Each rule's incident-level figures for the day (reports/scoring.py says how a day counts
    them). Replaces the day's `rule_quality` rows in one transaction."""
    with db.snapshot() as cur:
        analysis = _read_analysis(cur, day)
        cur.execute("DELETE FROM rule_quality WHERE day = %s", (day,))
        columns = ", ".join(f'"{c}"' for c in (*RULE_QUALITY_COLUMNS, "ground_truth"))
        updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in (*RULE_QUALITY_COLUMNS[1:], "ground_truth"))
        psycopg2.extras.execute_values(
            cur,
            f"INSERT INTO rule_quality (day, {columns}) VALUES %s "
            f"ON CONFLICT (day, alert_type) DO UPDATE SET {updates}, computed_at = now()",
            [(day, *dataclasses.astuple(r), analysis.ground_truth) for r in analysis.rules],
        )
    incidents = sum(r.incidents for r in analysis.rules)
    caught = sum(r.caught for r in analysis.rules)
    log.info(
        "alert analysis %s: %d alerts over %d rules; %s",
        day,
        sum(r.alerts for r in analysis.rules),
        len(analysis.rules),
        f"{caught} of {incidents} incidents caught by their rule"
        if analysis.ground_truth
        else "no incident labels on this day",
    )
    return analysis


def _top(
    cur: psycopg2.extensions.cursor,
    column: str,
    start: datetime,
    end: datetime,
    n: int,
    rates: RateTable,
) -> list[TopEntry]:
    col = sql.Identifier("d", column)
    # One row per alert; a transaction's amount on its first row only, so a transaction that
    # two rules alerted is added once.
    stmt = sql.SQL(
        """
        WITH {day_base}, alerted AS (
            SELECT {col} AS name, d.transaction_id, a.alert_type, d.currency,
                   CASE WHEN row_number() OVER w = 1 THEN d.amount END AS amount,
                   CASE WHEN row_number() OVER w = 1 THEN d.amount_base END AS amount_base
            FROM alerts a JOIN day_base d USING (transaction_id)
            WHERE {col} IS NOT NULL
            WINDOW w AS (PARTITION BY d.transaction_id ORDER BY a.alert_type)
        )
        SELECT name, count(*), count(DISTINCT transaction_id), coalesce(sum(amount), 0),
               array_agg(DISTINCT alert_type ORDER BY alert_type),
               array_agg(DISTINCT currency ORDER BY currency), coalesce(sum(amount_base), 0)
        FROM alerted
        GROUP BY name
        ORDER BY count(*) DESC, name
        LIMIT %(n)s
        """
    ).format(col=col, day_base=sql.SQL(_DAY_BASE_CTE))
    cur.execute(stmt, {"start": start, "end": end, "n": n, **_rates(rates)})
    return [
        TopEntry(name, int(a), int(t), Decimal(s), tuple(types), tuple(cur_), Decimal(base))
        for name, a, t, s, types, cur_, base in cur.fetchall()
    ]


_HOURLY_SQL = f"""
WITH {_DAY_BASE_CTE}, per_txn AS (
    SELECT a.transaction_id, count(*) AS n
    FROM alerts a JOIN day_base d USING (transaction_id)
    GROUP BY a.transaction_id
)
SELECT extract(hour FROM d."timestamp" AT TIME ZONE 'UTC')::int, count(*), coalesce(sum(d.amount_base), 0),
       coalesce(sum(p.n), 0)
FROM day_base d LEFT JOIN per_txn p USING (transaction_id)
GROUP BY 1 ORDER BY 1
"""

# Quarter-decade buckets of the base amount: amounts span cents to tens of thousands, a linear
# histogram shows one bar. A base amount that rounds to 0 (a few rupiah) joins the lowest bucket.
_AMOUNTS_SQL = f"""
WITH {_DAY_BASE_CTE}
SELECT floor(log(greatest(amount_base, 0.01)) * 4)::int AS bucket, count(*)
FROM day_base GROUP BY 1 ORDER BY 1
"""


# Which processing days the event day's transactions were stored on: reconciliation is per
# processing day, so this says where to look for them (a simulated or replayed day was processed
# on another one).
_PROCESSED_ON_SQL = """
SELECT (processed_at AT TIME ZONE 'UTC')::date, count(*)
FROM transactions WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s
GROUP BY 1 ORDER BY 1
"""


def _rule_order(score: RuleScore) -> tuple[int, str]:
    """The rules in RULE_SCENARIO's order (as `make quality` prints them), any other type after."""
    rules = list(RULE_SCENARIO)
    return (rules.index(score.alert_type) if score.alert_type in rules else len(rules), score.alert_type)


def gather_figures(
    db: Database, day: date, rates: RateTable, *, top_n: int = TOP_N, noisy_alert_rate: float = 0.05
) -> ReportFigures:
    """The report's content: the stored rows of the earlier steps plus hourly volume, the amount
    distribution, the top lists and how complete the day is, all from one snapshot. Amounts added
    across currencies are in `rates.base`."""
    start, end = day_bounds(day)
    day_base = {"start": start, "end": end, **_rates(rates)}
    with db.snapshot() as cur:
        cur.execute(f"SELECT {_SUMMARY_COLUMNS} FROM daily_summary WHERE day = %s", (day,))
        summary = sorted((_summary_row(r) for r in cur.fetchall()), key=dimension_order)
        # Rows scored before migration 022 have NULL figures: they read as a day without labels.
        cur.execute(
            """SELECT alert_type, scenario, coalesce(incidents, 0), coalesce(caught, 0), alerts,
                      coalesce(alerts_on_incidents, 0), alerts_per_1000, recall, "precision",
                      coalesce(ground_truth, false)
               FROM rule_quality WHERE day = %s""",
            (day,),
        )
        stored = cur.fetchall()
        rules = sorted((RuleScore(*row[:-1]) for row in stored), key=_rule_order)
        ground_truth = any(row[-1] for row in stored)
        recon = read_reconciliation(cur, day)
        cur.execute(_HOURLY_SQL, day_base)
        hourly = [HourVolume(int(h), int(n), Decimal(s), int(a)) for h, n, s, a in cur.fetchall()]
        cur.execute(_AMOUNTS_SQL, day_base)
        amounts = [AmountBucket(10 ** (b / 4), 10 ** ((b + 1) / 4), int(n)) for b, n in cur.fetchall()]
        top_accounts = _top(cur, "account_id", start, end, top_n, rates)
        top_merchants = _top(cur, "merchant", start, end, top_n, rates)
        completeness = read_completeness(cur, day)
        cur.execute(_PROCESSED_ON_SQL, {"start": start, "end": end})
        processed_on = [(d, int(n)) for d, n in cur.fetchall()]
        verdict_scores = verdicts.load_for_day(cur, start, end)
    return ReportFigures(
        day,
        summary,
        rules,
        top_accounts,
        top_merchants,
        recon,
        hourly,
        amounts,
        completeness=completeness,
        processed_on=processed_on,
        noisy_alert_rate=noisy_alert_rate,
        ground_truth=ground_truth,
        base_currency=rates.base,
        verdicts=verdict_scores,
    )
