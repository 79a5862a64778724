"""`python -m reports --day YYYY-MM-DD`: the daily report of one day without Airflow.

The same steps the transaction_reporting DAG runs as separate tasks (summary, alert analysis,
reconciliation, the report's files), in one go against the configured database; prints where
the report is. It does not wait for the day to be complete: the page says how complete it was.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from reports import queries
from reports.day import report_day
from reports.errors import ReportError
from reports.figures import ReportFigures
from reports.files import write_report
from reports.page import completeness_text
from reports.reconciliation import reconcile_day
from utils.config import Settings
from utils.database import Database, configured_database
from utils.errors import ConfigError, DatabaseUnavailable


def build_report(db: Database, settings: Settings, day: date) -> tuple[Path, ReportFigures]:
    """Every step of `day`'s report, in the DAG's order; returns report.html and the figures."""
    rates = settings.rules.rate_table()
    queries.ensure_schema(db)
    queries.build_daily_summary(db, day, rates)
    queries.analyse_alerts(db, day)
    reconcile_day(db, day)
    figures = queries.gather_figures(db, day, rates, noisy_alert_rate=settings.report.noisy_alert_rate)
    return write_report(day, figures, settings.data_dir) / "report.html", figures


def main(argv: Sequence[str] | None = None) -> int:
    from utils.logs import configure_logging

    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--day", default=None, help=f"the UTC day, YYYY-MM-DD (default: yesterday, {yesterday})"
    )
    args = parser.parse_args(argv)
    try:
        day = report_day(None, args.day) if args.day else yesterday
        with configured_database() as (settings, db):
            configure_logging(settings.log_level, settings.log_format)
            page, figures = build_report(db, settings, day)
    except (ReportError, DatabaseUnavailable, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _, completeness = completeness_text(figures.completeness, figures.transactions)
    print(f"{figures.transactions:,} transactions on {day}. {completeness}".strip())
    print(f"report: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
