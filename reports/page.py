"""The report page: `templates/report.html.j2` rendered with Jinja2 (autoescaped) from the
figures and the charts' inline SVG.

What the page says in words is decided here, in plain functions the unit tests read: the cells
of each table, the amounts (added across currencies only in the base currency), how complete the
day was, the rules' incident-level figures and which are flagged, what reconciliation found.
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
from reports.figures import SUMMARY_DIMENSIONS, ReportFigures, TopEntry
from reports.offsets import OffsetRun, PartitionReconciliation
from reports.scoring import noisy_rules
from utils.money import format_amount
from utils.rule_quality import RuleScore

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


def money(amount: Decimal | None, currency: str | None, *, code: bool = True) -> str:
    """An amount as a person reads it: "1,234.50 EUR", "150,000 JPY" (the currency's own
    decimals; without the code under a header that names it); "–" when not known."""
    if amount is None or currency is None:
        return "–"
    text = format_amount(amount, currency)
    return text if code else text.rsplit(" ", 1)[0]


def amount_text(entry: TopEntry, base: str) -> str:
    """What a top entry's transactions amount to: in the base currency, which adds any currencies,
    and as sent when they are all in one other currency. Without a base sum (figures made before
    there was one) a sum over several currencies is never shown: it would add yen to euros."""
    nominal = money(entry.amount_sum, entry.currencies[0]) if len(entry.currencies) == 1 else None
    if entry.amount_base_sum is None:
        if nominal is not None:
            return nominal
        return f"not converted ({len(entry.currencies)} currencies)" if entry.currencies else "–"
    in_base = money(entry.amount_base_sum, base)
    if entry.currencies == (base,) or not entry.currencies:
        return in_base
    if nominal is not None:
        return f"{nominal} = {in_base}"
    return f"{in_base} ({len(entry.currencies)} currencies)"


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    value: Callable[[RuleScore], Any]
    title: str = ""  # the header's tooltip
    numeric: bool = True
    scored: bool = True  # needs ground truth: left out on a day without incident labels


def _share(value: float | None) -> str | None:
    return None if value is None else units.percent(value)


# The rules table, one place: the figures and the column names of `make quality`'s table
# (utils.rule_quality.format_table), so the two read alike.
RULE_COLUMNS = (
    Column("rule", lambda r: r.alert_type, numeric=False, scored=False),
    Column(
        "scenario",
        lambda r: r.scenario,
        "the simulator's scenario this rule is built to catch",
        numeric=False,
    ),
    Column(
        "incidents",
        lambda r: r.incidents,
        "incidents of the scenario injected: their first message is on this day",
    ),
    Column(
        "caught",
        lambda r: r.caught,
        "of those, incidents with an alert of this rule on any of their messages",
    ),
    Column("recall", lambda r: _share(r.recall), "caught / incidents"),
    Column("alerts", lambda r: r.alerts, "alerts of this rule on this day's transactions", scored=False),
    Column("on incidents", lambda r: r.alerts_on_incidents, "alerts on a message of any injected incident"),
    Column("precision", lambda r: _share(r.precision), "alerts on incidents / alerts"),
    Column(
        "per 1,000 txns",
        lambda r: None if r.alerts_per_1000 is None else f"{r.alerts_per_1000:,.2f}",
        "alerts per 1,000 of this day's transactions",
        scored=False,
    ),
)


def rule_columns(ground_truth: bool) -> tuple[Column, ...]:
    """The rules table's columns: without incident labels, only what needs none."""
    return RULE_COLUMNS if ground_truth else tuple(c for c in RULE_COLUMNS if not c.scored)


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


def base_note(figures: ReportFigures) -> str:
    """How the day's amounts were added: in which currency, and which rows the report converted."""
    total = figures.total_row
    if total is None or not total.txn_count:
        return ""
    if total.amount_base_sum is None:
        return (
            "Amounts are in each transaction's own currency and are not converted: this summary was "
            "computed before the report added amounts in the base currency; rerun the day."
        )
    base = total.base_currency or figures.base_currency
    text = (
        f"Amounts added across currencies are in {base} (BASE_CURRENCY): each transaction's amount "
        "converted with the rate table the consumer used to judge it (utils/money.py, FX_RATES). "
        "The table by currency also shows each currency's own sum, as sent."
    )
    if total.converted_by_report:
        text += (
            f" {total.converted_by_report:,} of the day's {total.txn_count:,} transactions were stored "
            f"before amounts were converted (no amount_base): the report converted them to {base} "
            "with the current rate table."
        )
    return text


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
    total = figures.total_row
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
            total_amount=money(total.amount_base_sum, total.base_currency) if total else "–",
            dimensions=SUMMARY_DIMENSIONS,
            base_note=base_note(figures),
            money=money,
            ground_truth=figures.ground_truth,
            rule_columns=rule_columns(figures.ground_truth),
            noisy=noisy,
            noisy_rate=units.percent(figures.noisy_alert_rate),
            amount_text=amount_text,
            base=figures.base_currency,
            recon_rows=reconciliation_rows(parts),
            totals=totals,
            processed_on=figures.processed_on,
            processed_elsewhere=any(d != figures.day for d, _ in figures.processed_on),
        )
    )
