"""The report page: `templates/report.html.j2` rendered with Jinja2 (autoescaped) from the
figures and the charts' PNGs.

What the page says in words is decided here, in plain functions the unit tests read: the cells
of each table, the amounts (never one sum over several currencies), how complete the day was,
which rules are flagged, what reconciliation found.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from reports import units
from reports.completeness import Completeness
from reports.figures import SUMMARY_DIMENSIONS, ReportFigures, RuleQuality
from reports.offsets import OffsetRun, PartitionReconciliation
from reports.scoring import noisy_rules

TEMPLATES = Path(__file__).resolve().parent / "templates"


def cell(value: Any) -> str:
    """A value as a table cell shows it: thousands separators, money to the cent, ratios to
    three places, '–' for a figure that is not defined."""
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


def amount_text(amount: Decimal, currencies: Sequence[str]) -> str:
    """An amount with its currency, or why there is none: amounts are nominal, in each
    transaction's own currency, and are not converted, so a sum over several currencies would
    add yen to euros. (Once a base currency exists this is the one place to show it.)"""
    if len(currencies) == 1:
        return f"{amount:,.2f} {currencies[0]}"
    if not currencies:
        return "–"
    return f"not converted ({len(currencies)} currencies)"


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    value: Callable[[RuleQuality], Any]
    numeric: bool = True
    title: str = ""  # the header's tooltip


def _accounts(r: RuleQuality) -> str | None:
    if r.labelled_accounts is None:
        return None
    return f"{r.detected_accounts or 0:,} of {r.labelled_accounts:,}"


# The rules table, one place: a column more (incident-level figures) is a line more here.
RULE_COLUMNS = (
    Column("rule", lambda r: r.alert_type, numeric=False),
    Column(
        "scenario",
        lambda r: r.scenario,
        numeric=False,
        title="the simulator's label this rule is scored against",
    ),
    Column("alerts", lambda r: r.alerts),
    Column(
        "alert rate",
        lambda r: None if r.alert_rate is None else units.percent(r.alert_rate),
        title="alerts / transactions of the day",
    ),
    Column("labelled", lambda r: r.labelled, title="transactions labelled with the scenario"),
    Column("TP", lambda r: r.true_positives, title="alerted and labelled with the scenario"),
    Column("FP", lambda r: r.false_positives, title="alerted, labelled otherwise or not at all"),
    Column("FN", lambda r: r.false_negatives, title="labelled, not alerted by this rule"),
    Column("precision", lambda r: r.precision),
    Column("recall", lambda r: r.recall),
    Column(
        "precision (any fraud)",
        lambda r: r.precision_any_fraud,
        title="alerts on transactions of any scenario / alerts",
    ),
    Column("accounts detected", _accounts, title="accounts of the scenario with at least one alert"),
)


def completeness_text(c: Completeness | None, transactions: int) -> tuple[bool, str]:
    """(fine?, one paragraph): how complete the day was when the report read it."""
    if c is None:
        return True, ""
    at = f"{c.checked_at:%Y-%m-%d %H:%M} UTC"
    if not c.day_over:
        return (
            False,
            f"The day is not over: this report was made at {at} and covers what was stored until then.",
        )
    if not c.watermarks:
        return True, f"Checked at {at}: no partition stored transactions of this day."
    late = ""
    if c.late:
        last = c.last_stored_at
        if last is not None and c.late == transactions and last - c.end > timedelta(days=1):
            late = (
                f" All {transactions:,} of its transactions were stored after the day had ended (by "
                f"{last:%Y-%m-%d}): a replayed or simulated stream, not live traffic."
            )
        else:
            when = f", the last at {last:%Y-%m-%d %H:%M}" if last is not None else ""
            late = (
                f" {c.late:,} of its {transactions:,} transactions were stored after the day had ended{when}."
            )
    if c.complete:
        return True, (
            f"Complete: when the report was made ({at}), every partition that carried this day's "
            f"transactions had stored events past its end.{late}"
        )
    if len(c.behind) == len(c.watermarks):
        latest = max(w.latest_event for w in c.behind)
        head = (
            f"Possibly incomplete: when the report was made ({at}), no partition had stored an event past "
            f"this day's end; the latest stored event is from {latest:%Y-%m-%d %H:%M}. Either the stream "
            "stopped during this day (a simulated or replayed one may), or transactions are still on "
            "their way: rerun the day once the consumer has caught up."
        )
    else:
        shown = c.behind[:6]
        parts = "; ".join(f"partition {w.partition} up to {w.latest_event:%Y-%m-%d %H:%M}" for w in shown)
        more = f"; {len(c.behind) - len(shown)} more" if len(c.behind) > len(shown) else ""
        head = (
            f"Possibly incomplete: when the report was made ({at}), {len(c.behind)} of {len(c.watermarks)} "
            f"partitions had not stored any event past this day's end ({parts}{more}): transactions "
            "still on their way are missing. Rerun the day once the consumer has caught up."
        )
    return False, head + late


def run_text(run: OffsetRun, previous: int | None, first: bool) -> str:
    """What a run of offsets says beyond its numbers: a restart, or where it continued from."""
    if run.restarted:
        before = f" {previous:,}" if first and previous is not None else " the offsets before it"
        return (
            f"offsets restarted: began at {run.first_offset:,}, below{before}; the topic was "
            "recreated or its offsets reset, so this is a new log"
        )
    if first and previous is not None:
        return f"continues from {previous:,}"
    return ""


@dataclass(frozen=True, slots=True)
class ReconciliationRow:
    partition: int
    run: OffsetRun
    note: str


def reconciliation_rows(parts: Sequence[PartitionReconciliation]) -> list[ReconciliationRow]:
    return [
        ReconciliationRow(p.partition, run, run_text(run, p.previous_offset, i == 0))
        for p in parts
        for i, run in enumerate(p.runs)
    ]


@dataclass(frozen=True, slots=True)
class Totals:
    stored: int
    rejected: int
    missing: int
    restarts: int
    rejection_table: int  # the rejections table of the same report (same clock: rejected_at)

    @property
    def agree(self) -> bool:
        return self.rejected == self.rejection_table


def summary_amounts(figures: ReportFigures) -> dict[str, bool]:
    """Which summary tables show an amount column: only the currency breakdown, where each row
    is one currency. Elsewhere a row mixes currencies and its sum means nothing."""
    return {d: d == "currency" for d in SUMMARY_DIMENSIONS}


def _sections(figures: ReportFigures, charts: Mapping[str, tuple[str, str]]) -> list[tuple[str, str]]:
    """(id, title) of every section on the page, in order: the table of contents."""
    out = [("completeness", "Completeness")]
    out += [(key, title) for key, (title, _) in charts.items()]
    if figures.transactions or figures.total("rejection_reason"):
        out.append(("summary", "Summary"))
    if figures.transactions:
        out += [
            ("rules", "Rules"),
            ("top-accounts", "Top accounts by alerts"),
            ("top-merchants", "Top merchants by alerts"),
        ]
    out.append(("reconciliation", "Reconciliation"))
    return out


def breakable(text: str) -> Markup:
    """Escaped text that may wrap after an underscore (unusual_hour_high_value in a narrow
    column), instead of pushing its table past the page."""
    return Markup("_<wbr>").join(escape(part) for part in str(text).split("_"))


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt name fails the render, not a blank cell
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["cell"] = cell
    env.filters["breakable"] = breakable
    return env


def render_page(figures: ReportFigures, charts: Mapping[str, tuple[str, str]]) -> str:
    """The report as one HTML page; `charts` maps each chart's section id to (title, SVG markup),
    which goes into the page as it is: matplotlib wrote it, and escaped every text it holds."""
    parts = figures.reconciliation
    totals = Totals(
        stored=sum(p.stored for p in parts),
        rejected=sum(p.rejected for p in parts),
        missing=sum(p.missing for p in parts),
        restarts=sum(p.restarts for p in parts),
        rejection_table=figures.total("rejection_reason"),
    )
    complete_ok, complete_text = completeness_text(figures.completeness, figures.transactions)
    noisy = noisy_rules(figures.rules, figures.noisy_alert_rate)
    currencies = [r for r in figures.summary if r.dimension == "currency"]
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            figures=figures,
            charts=charts,
            sections=_sections(figures, charts),
            day=figures.day.isoformat(),
            generated_at=f"{figures.generated_at:%Y-%m-%d %H:%M} UTC",
            transactions=figures.transactions,
            alerts=sum(r.alerts for r in figures.rules),
            rejected=figures.total("rejection_reason"),
            complete_ok=complete_ok,
            complete_text=complete_text,
            dimensions=SUMMARY_DIMENSIONS,
            show_amount=summary_amounts(figures),
            n_currencies=len(currencies),
            rule_columns=RULE_COLUMNS,
            noisy=noisy,
            noisy_rate=units.percent(figures.noisy_alert_rate),
            amount_text=amount_text,
            recon_rows=reconciliation_rows(parts),
            totals=totals,
            processed_on=figures.processed_on,
            processed_elsewhere=any(d != figures.day for d, _ in figures.processed_on),
        )
    )
