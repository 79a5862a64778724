"""What the daily reporting DAG runs: aggregates, rule quality, reconciliation and the report files.

Each step is a plain function over a `Database` (tested without Airflow) and writes its result
idempotently for one UTC day: a rerun deletes that day's rows and inserts them again in the same
database transaction, so a reader sees either the old or the new figures, never a mix, and a day
whose data shrank (retention) loses its stale keys.

Which clock defines "the day":
* summary and rule quality: the transaction's event `timestamp` (alerts belong to their
  transaction's day), so a late-arriving transaction lands in its own day when that day is rerun;
* rejected messages: `rejected_at`, since an invalid message may carry no usable timestamp;
* reconciliation: the consumer's `processed_at` / `rejected_at`, because offsets are consumed in
  order on that clock; event time is not monotonic in offsets (the producer back-dates scenario
  legs), so event-time days would show false gaps at midnight.

The arithmetic (`score_rule`, `find_gaps`, `report_day`) and the file writer (`write_report`)
are pure and unit-tested; SQL stays in the thin functions around them.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from utils.database import Database
from utils.errors import TxmonError

log = logging.getLogger(__name__)

# The scenario label each rule is scored against. `rapid_repeat` is what the duplicate rule is
# built to catch; velocity has no scenario of its own (normal traffic stays far below it, so
# anything it raises is reported by count only).
SCENARIO_FOR_RULE: dict[str, str | None] = {
    "high_amount": "high_amount",
    "velocity": None,
    "card_testing": "card_testing",
    "amount_spike": "amount_spike",
    "impossible_travel": "impossible_travel",
    "duplicate": "rapid_repeat",
    "unusual_hour_high_value": "unusual_hour_high_value",
}

SUMMARY_DIMENSIONS = (
    "total",
    "transaction_type",
    "currency",
    "country",
    "channel",
    "alert_type",
    "alert_severity",
    "rejection_reason",
)
TOP_N = 10


class ReportError(TxmonError):
    """A report cannot be produced (bad day, missing schema); the message names the fix."""


# --------------------------------------------------------------------------- plain data


@dataclass(frozen=True, slots=True)
class SummaryRow:
    dimension: str
    key: str
    txn_count: int
    amount_sum: Decimal
    alert_count: int


@dataclass(frozen=True, slots=True)
class RuleCounts:
    """What SQL counts for one rule on one day; `score_rule` turns it into rates."""

    alert_type: str
    scenario: str | None
    alerts: int  # = alerted transactions: the schema allows one alert per rule and transaction
    true_positives: int  # alerted transactions labelled with `scenario`
    alerts_on_fraud: int  # alerted transactions labelled with any scenario
    labelled: int  # transactions of the day labelled with `scenario`
    labelled_accounts: int
    detected_accounts: int


@dataclass(frozen=True, slots=True)
class RuleQuality:
    alert_type: str
    scenario: str | None
    alerts: int
    alert_rate: float | None
    labelled: int | None
    true_positives: int | None
    false_positives: int | None
    false_negatives: int | None
    precision: float | None
    recall: float | None
    alerts_on_fraud: int | None
    precision_any_fraud: float | None
    labelled_accounts: int | None
    detected_accounts: int | None


@dataclass(frozen=True, slots=True)
class TopEntry:
    """An account or merchant ranked by the alerts on its transactions that day."""

    name: str
    alerts: int
    transactions: int
    amount_sum: Decimal
    alert_types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AlertAnalysis:
    day: date
    transactions: int
    labels_present: bool
    rules: list[RuleQuality]
    top_accounts: list[TopEntry]
    top_merchants: list[TopEntry]


@dataclass(frozen=True, slots=True)
class PartitionReconciliation:
    partition: int
    min_offset: int
    max_offset: int
    previous_offset: int | None
    stored: int
    rejected: int
    gaps: list[tuple[int, int]]

    @property
    def missing(self) -> int:
        return sum(last - first + 1 for first, last in self.gaps)


@dataclass(frozen=True, slots=True)
class HourVolume:
    hour: int  # 0-23, UTC
    txn_count: int
    amount_sum: Decimal
    alert_count: int


@dataclass(frozen=True, slots=True)
class AmountBucket:
    lower: float
    upper: float
    txn_count: int


@dataclass(frozen=True, slots=True)
class ReportFigures:
    """Everything the report shows; read back from the stored tables plus a few day queries."""

    day: date
    summary: list[SummaryRow]
    rules: list[RuleQuality]
    top_accounts: list[TopEntry]
    top_merchants: list[TopEntry]
    reconciliation: list[PartitionReconciliation]
    hourly: list[HourVolume]
    amounts: list[AmountBucket]
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


# --------------------------------------------------------------------------- pure helpers


def report_day(
    data_interval_start: datetime | None,
    override: str | date | None = None,
    *,
    run_after: datetime | None = None,
) -> date:
    """The UTC day a run reports on: an explicit override (`YYYY-MM-DD`), else its data
    interval's start, else (a manual run triggered without a logical date has no data
    interval) the last complete day before `run_after`, as the schedule would have chosen."""
    if isinstance(override, date):
        return override
    if override is not None and str(override).strip():
        try:
            return date.fromisoformat(str(override).strip())
        except ValueError:
            raise ReportError(f"day={override!r} is not a date: use YYYY-MM-DD, e.g. 2026-03-10") from None
    moment, shift = (data_interval_start, 0) if data_interval_start is not None else (run_after, 1)
    if moment is None:
        raise ReportError("this run has no data interval: trigger it with a day (YYYY-MM-DD) in its params")
    if moment.tzinfo is None:
        raise ReportError(f"{moment} has no time zone")
    return moment.astimezone(UTC).date() - timedelta(days=shift)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of `day` in UTC, as timestamps so that range scans use the indexes."""
    start = datetime.combine(day, time(0), UTC)
    return start, start + timedelta(days=1)


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def score_rule(counts: RuleCounts, transactions: int, *, labels_present: bool) -> RuleQuality:
    """Precision and recall of one rule against the producer's scenario labels.

    An alert is a true positive when its transaction carries the scenario mapped to the rule
    (SCENARIO_FOR_RULE); `precision_any_fraud` is the looser reading, counting an alert on a
    transaction of *any* scenario as deserved. Recall is per transaction: the lead-in legs of a
    scenario (the first small charges of card testing, the first of a repeated payment, the
    home leg of an impossible journey) are labelled but cannot be alerted by design, so recall
    below 1 is expected; the account counts say whether the scenario was caught at all.

    Without labels (`labels_present` False: a real stream, or none on that day) there is no
    ground truth, so every quality figure is None rather than a misleading 0.
    """
    scored = labels_present and counts.scenario is not None
    tp = counts.true_positives if scored else None
    return RuleQuality(
        alert_type=counts.alert_type,
        scenario=counts.scenario,
        alerts=counts.alerts,
        alert_rate=_ratio(counts.alerts, transactions),
        labelled=counts.labelled if scored else None,
        true_positives=tp,
        false_positives=counts.alerts - counts.true_positives if scored else None,
        false_negatives=counts.labelled - counts.true_positives if scored else None,
        precision=_ratio(counts.true_positives, counts.alerts) if scored else None,
        recall=_ratio(counts.true_positives, counts.labelled) if scored else None,
        alerts_on_fraud=counts.alerts_on_fraud if labels_present else None,
        precision_any_fraud=_ratio(counts.alerts_on_fraud, counts.alerts) if labels_present else None,
        labelled_accounts=counts.labelled_accounts if scored else None,
        detected_accounts=counts.detected_accounts if scored else None,
    )


def find_gaps(offsets: Iterable[int], previous: int | None = None) -> list[tuple[int, int]]:
    """Inclusive ranges of offsets missing from an ascending sequence (repeats allowed).

    `previous` is the highest offset accounted for before the sequence (the day before), so a
    gap across midnight is found too. Without it the sequence is taken to start where it starts:
    a topic may legitimately begin above 0 (retention, a purge, a consumer attached later).
    Our producer is idempotent but not transactional, so a partition's offsets are contiguous;
    a transactional producer's commit markers would show up here as one-offset gaps.
    """
    gaps: list[tuple[int, int]] = []
    last = previous
    for offset in offsets:
        if last is not None and offset > last + 1:
            gaps.append((last + 1, offset - 1))
        if last is None or offset > last:
            last = offset
    return gaps


# --------------------------------------------------------------------------- database steps


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


def _dimension_order(row: SummaryRow) -> tuple[int, int, str]:
    return (SUMMARY_DIMENSIONS.index(row.dimension), -row.txn_count, row.key)


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
    rows.sort(key=_dimension_order)
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


_RULE_QUALITY_COLUMNS = [f.name for f in dataclasses.fields(RuleQuality)]


def analyse_alerts(db: Database, day: date, *, top_n: int = TOP_N) -> AlertAnalysis:
    """Alert rate and precision/recall per rule, top accounts and merchants by alerts.
    Replaces the day's `rule_quality` rows in one transaction."""
    with _snapshot(db) as cur:
        analysis = _read_analysis(cur, day, top_n)
        cur.execute("DELETE FROM rule_quality WHERE day = %s", (day,))
        columns = ", ".join(f'"{c}"' for c in _RULE_QUALITY_COLUMNS)
        updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in _RULE_QUALITY_COLUMNS[1:])
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


def _reconcile_rows(
    rows: Iterable[tuple[int, int, bool]], previous: Mapping[int, int | None]
) -> list[PartitionReconciliation]:
    out: list[PartitionReconciliation] = []
    by_partition: dict[int, list[tuple[int, bool]]] = {}
    for partition, offset, stored in rows:
        by_partition.setdefault(partition, []).append((offset, stored))
    for partition, items in sorted(by_partition.items()):
        items.sort()
        offsets = [o for o, _ in items]
        n_stored = sum(1 for _, s in items if s)
        out.append(
            PartitionReconciliation(
                partition=partition,
                min_offset=offsets[0],
                max_offset=offsets[-1],
                previous_offset=previous.get(partition),
                stored=n_stored,
                rejected=len(items) - n_stored,
                gaps=find_gaps(offsets, previous.get(partition)),
            )
        )
    return out


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
        result = _reconcile_rows(rows, previous)
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
            key=_dimension_order,
        )
        columns = ", ".join(f'"{c}"' for c in _RULE_QUALITY_COLUMNS)
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


# --------------------------------------------------------------------------- report files


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def figures_to_json(figures: ReportFigures) -> str:
    data = dataclasses.asdict(figures)
    data["reconciliation"] = [{**dataclasses.asdict(r), "missing": r.missing} for r in figures.reconciliation]
    return json.dumps(data, default=_json_default, indent=2, sort_keys=True)


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    # The Agg canvas directly, not pyplot: no global figure registry, no GUI backend, and safe
    # in a worker process that renders several reports.
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def render_charts(figures: ReportFigures) -> dict[str, str]:
    """{title: base64 PNG} for volume per hour, alerts per rule and the amount distribution."""
    from matplotlib.figure import Figure  # imported here: ~1.5 s, and only the report needs it

    charts: dict[str, str] = {}

    fig = Figure(figsize=(8, 3))
    ax = fig.subplots()
    counts = {h.hour: h for h in figures.hourly}
    hours = list(range(24))
    ax.bar(
        hours,
        [counts[h].txn_count if h in counts else 0 for h in hours],
        color="#4477aa",
        label="transactions",
    )
    ax.set_xlabel("hour (UTC)")
    ax.set_ylabel("transactions")
    ax.set_xticks(hours[::2])
    alerts_ax = ax.twinx()
    alerts_ax.plot(
        hours, [counts[h].alert_count if h in counts else 0 for h in hours], color="#cc3311", marker="."
    )
    alerts_ax.set_ylabel("alerts", color="#cc3311")
    ax.set_title(f"Volume per hour, {figures.day.isoformat()}")
    charts["Volume per hour"] = _png(fig)

    fig = Figure(figsize=(8, 3))
    ax = fig.subplots()
    names = [r.alert_type for r in figures.rules]
    ax.barh(names, [r.alerts for r in figures.rules], color="#cc3311")
    ax.invert_yaxis()
    ax.set_xlabel("alerts")
    ax.set_title("Alerts per rule")
    charts["Alerts per rule"] = _png(fig)

    fig = Figure(figsize=(8, 3))
    ax = fig.subplots()
    if figures.amounts:
        lefts = [b.lower for b in figures.amounts]
        widths = [b.upper - b.lower for b in figures.amounts]
        ax.bar(lefts, [b.txn_count for b in figures.amounts], width=widths, align="edge", color="#228833")
        ax.set_xscale("log")
    ax.set_xlabel("amount (nominal, log scale)")
    ax.set_ylabel("transactions")
    ax.set_title("Amount distribution")
    charts["Amount distribution"] = _png(fig)
    return charts


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, Decimal):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, tuple | list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "none") -> str:
    """An HTML table; every cell, header included, goes through html.escape."""
    body = ["<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows]
    if not body:
        return f"<p class='empty'>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: .2em .7em; border: 1px solid #ddd; }
th { background: #f3f3f3; text-align: left; } td { text-align: right; } td:first-child { text-align: left; }
img { max-width: 100%; } .empty, .note { color: #666; } .bad { color: #b00; font-weight: bold; }
"""


def render_html(figures: ReportFigures, charts: Mapping[str, str]) -> str:
    day = figures.day.isoformat()
    total = next((r for r in figures.summary if r.dimension == "total"), None)
    missing = sum(r.missing for r in figures.reconciliation)
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(f'Transaction report {day}')}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(f'Transaction report for {day} (UTC)')}</h1>",
        "<p class='note'>"
        + html.escape(
            f"Generated {figures.generated_at.isoformat(timespec='seconds')}. "
            f"{total.txn_count if total else 0:,} transactions, "
            f"{sum(r.alerts for r in figures.rules):,} alerts, "
            f"{missing:,} offsets missing in reconciliation. Amounts are nominal (not converted)."
        )
        + "</p>",
    ]
    for title, png in charts.items():
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(f"<img alt='{html.escape(title, quote=True)}' src='data:image/png;base64,{png}'>")

    parts.append("<h2>Summary</h2>")
    for dimension in SUMMARY_DIMENSIONS:
        rows = [r for r in figures.summary if r.dimension == dimension]
        if not rows:
            continue
        label = dimension.replace("_", " ")
        parts.append(f"<h3>{html.escape(label)}</h3>")
        parts.append(
            _table(
                (label if dimension != "total" else "", "transactions", "amount", "alerts"),
                ((r.key or "all", r.txn_count, r.amount_sum, r.alert_count) for r in rows),
            )
        )

    parts.append("<h2>Rules</h2>")
    parts.append(
        "<p class='note'>"
        + html.escape(
            "Precision: alerts on transactions labelled with the rule's scenario / alerts. "
            "Recall: labelled transactions alerted / labelled (lead-in legs of a scenario cannot "
            "be alerted, so below 1 is expected). '–': not defined (no labels, no scenario, or no alerts)."
        )
        + "</p>"
    )
    parts.append(
        _table(
            (
                "rule",
                "scenario",
                "alerts",
                "alert rate",
                "labelled",
                "TP",
                "FP",
                "FN",
                "precision",
                "recall",
                "precision (any fraud)",
                "accounts detected",
            ),
            (
                (
                    r.alert_type,
                    r.scenario,
                    r.alerts,
                    r.alert_rate,
                    r.labelled,
                    r.true_positives,
                    r.false_positives,
                    r.false_negatives,
                    r.precision,
                    r.recall,
                    r.precision_any_fraud,
                    None
                    if r.labelled_accounts is None
                    else f"{r.detected_accounts} of {r.labelled_accounts}",
                )
                for r in figures.rules
            ),
        )
    )
    for title, entries in (
        ("Top accounts by alerts", figures.top_accounts),
        ("Top merchants by alerts", figures.top_merchants),
    ):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(
            _table(
                ("name", "alerts", "transactions", "amount", "rules"),
                ((e.name, e.alerts, e.transactions, e.amount_sum, e.alert_types) for e in entries),
            )
        )

    parts.append("<h2>Reconciliation</h2>")
    parts.append(
        "<p class='note'>"
        + html.escape(
            f"Offsets the consumer stored or rejected on {day} by its own clock, per partition; "
            "a gap is a message that was neither."
        )
        + "</p>"
    )
    parts.append(
        _table(
            ("partition", "first offset", "last offset", "stored", "rejected", "missing", "gaps"),
            (
                (
                    r.partition,
                    r.min_offset,
                    r.max_offset,
                    r.stored,
                    r.rejected,
                    r.missing,
                    "; ".join(f"{a}-{b}" for a, b in r.gaps) or "none",
                )
                for r in figures.reconciliation
            ),
            empty="nothing processed on this day",
        )
    )
    if missing:
        parts.append(f"<p class='bad'>{html.escape(f'{missing:,} offsets missing')}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return buf.getvalue()


def _write_atomic(path: Path, text: str) -> None:
    # A reader (the UI, a browser) never sees half a report: write aside, then rename.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def report_dir(data_dir: str | Path, day: date) -> Path:
    return Path(data_dir) / "reports" / day.isoformat()


def write_report(day: date, figures: ReportFigures, data_dir: str | Path) -> Path:
    """Write `<data_dir>/reports/<day>/` report.html (self-contained: charts as embedded PNGs),
    summary.csv, alerts.csv (one row per rule) and figures.json; returns the directory.
    A rerun replaces the files."""
    if figures.day != day:
        raise ReportError(f"figures are for {figures.day}, not {day}")
    out = report_dir(data_dir, day)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "report.html", render_html(figures, render_charts(figures)))
    _write_atomic(
        out / "summary.csv",
        _csv(
            ("day", "dimension", "key", "txn_count", "amount_sum", "alert_count"),
            ((day, r.dimension, r.key, r.txn_count, r.amount_sum, r.alert_count) for r in figures.summary),
        ),
    )
    _write_atomic(
        out / "alerts.csv",
        _csv(("day", *_RULE_QUALITY_COLUMNS), ((day, *dataclasses.astuple(r)) for r in figures.rules)),
    )
    _write_atomic(out / "figures.json", figures_to_json(figures))
    log.info("report for %s written to %s", day, out)
    return out
