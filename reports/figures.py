"""The plain data of a daily report: what SQL reads, the scoring computes and the page shows."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

# The breakdowns of the summary, in the order the report shows them.
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


@dataclass(frozen=True, slots=True)
class SummaryRow:
    dimension: str
    key: str
    txn_count: int
    amount_sum: Decimal
    alert_count: int


def dimension_order(row: SummaryRow) -> tuple[int, int, str]:
    """Sort key: dimensions in report order, the biggest keys first."""
    return (SUMMARY_DIMENSIONS.index(row.dimension), -row.txn_count, row.key)


@dataclass(frozen=True, slots=True)
class RuleCounts:
    """What SQL counts for one rule on one day; `scoring.score_rule` turns it into rates."""

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
    """One row of table `rule_quality` (its columns, in this order) and of the rules table."""

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


RULE_QUALITY_COLUMNS = [f.name for f in dataclasses.fields(RuleQuality)]


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
