"""The plain data of a daily report: what SQL reads, the scoring computes and the page shows."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

from reports.completeness import Completeness
from reports.offsets import PartitionReconciliation
from utils.money import DEFAULT_BASE
from utils.rule_quality import RuleScore
from utils.verdicts import VerdictScore

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
    amount_sum: Decimal  # nominal: one currency only in the currency breakdown
    alert_count: int
    # The same transactions in the base currency (utils/money.py), which may be added across
    # currencies; None on rows computed before migration 022.
    amount_base_sum: Decimal | None = None
    base_currency: str | None = None
    converted_by_report: int = 0  # stored without amount_base: converted by the report itself


SUMMARY_COLUMNS = [f.name for f in dataclasses.fields(SummaryRow)]


def dimension_order(row: SummaryRow) -> tuple[int, int, str]:
    """Sort key: dimensions in report order, the biggest keys first."""
    return (SUMMARY_DIMENSIONS.index(row.dimension), -row.txn_count, row.key)


# One row of table `rule_quality` and of the rules table: utils.rule_quality's RuleScore, in
# these columns, plus the day's `ground_truth` flag (ReportFigures.ground_truth).
RULE_QUALITY_COLUMNS = [f.name for f in dataclasses.fields(RuleScore)]


@dataclass(frozen=True, slots=True)
class TopEntry:
    """An account or merchant ranked by the alerts on its transactions that day."""

    name: str
    alerts: int
    transactions: int
    amount_sum: Decimal  # nominal: a sum in one currency only when `currencies` has one entry
    alert_types: tuple[str, ...]
    currencies: tuple[str, ...] = ()
    amount_base_sum: Decimal | None = None  # in the base currency, whatever `currencies` holds


@dataclass(frozen=True, slots=True)
class AlertAnalysis:
    """What the alert_analysis step stores for one day (table rule_quality)."""

    day: date
    transactions: int
    ground_truth: bool  # the day's transactions carry the simulator's incident labels
    rules: list[RuleScore]


@dataclass(frozen=True, slots=True)
class HourVolume:
    hour: int  # 0-23, UTC
    txn_count: int
    amount_base_sum: Decimal  # in ReportFigures.base_currency
    alert_count: int


@dataclass(frozen=True, slots=True)
class AmountBucket:
    """Transactions whose amount in the base currency is in [lower, upper)."""

    lower: float
    upper: float
    txn_count: int


@dataclass(frozen=True, slots=True)
class ReportFigures:
    """Everything the report shows; read back from the stored tables plus a few day queries."""

    day: date
    summary: list[SummaryRow]
    rules: list[RuleScore]
    top_accounts: list[TopEntry]
    top_merchants: list[TopEntry]
    reconciliation: list[PartitionReconciliation]
    hourly: list[HourVolume]
    amounts: list[AmountBucket]
    completeness: Completeness | None = None
    processed_on: list[tuple[date, int]] = field(
        default_factory=list
    )  # the day's transactions by processing day
    noisy_alert_rate: float = 0.05  # REPORT_NOISY_ALERT_RATE: rules alerting more often are flagged
    ground_truth: bool = False  # the rules could be scored against the simulator's incidents
    base_currency: str = DEFAULT_BASE  # BASE_CURRENCY of the run: every amount added across currencies
    # Per rule: the day's alerts in closed console cases, confirmed as fraud or not (utils/verdicts.py).
    verdicts: dict[str, VerdictScore] = field(default_factory=dict)
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def transactions(self) -> int:
        total = self.total_row
        return total.txn_count if total else 0

    def total(self, dimension: str) -> int:
        return sum(r.txn_count for r in self.summary if r.dimension == dimension)

    @property
    def total_row(self) -> SummaryRow | None:
        return next((r for r in self.summary if r.dimension == "total"), None)
