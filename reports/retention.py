"""Retention: what the data-cleanup DAG deletes once it is older than RETENTION_DAYS.

Transactions (their alerts go with them) and rejected messages in bounded batches, old
`pipeline_metrics` rows, and the report and metrics directories of expired days. The daily
aggregates (daily_summary, rule_quality, reconciliation) are kept: they are small and are what
remains of a purged day.

    python -m reports.retention [--days N]     # what the DAG runs, without Airflow
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from psycopg2 import sql

from utils.config import Settings
from utils.database import Database, configured_database
from utils.errors import DatabaseUnavailable

log = logging.getLogger(__name__)


def purge_older_than(db: Database, days: int, *, batch_size: int = 10_000) -> dict[str, int]:
    """Delete rows older than `days` in bounded batches (short locks, steady WAL).
    Alerts go with their transaction (ON DELETE CASCADE)."""
    targets = (
        ("transactions", "transaction_id", '"timestamp"'),
        ("rejected_transactions", "rejected_id", "rejected_at"),
    )
    deleted: dict[str, int] = {}
    for table, key, column in targets:
        total = 0
        stmt = sql.SQL(
            "DELETE FROM {t} WHERE {k} IN (SELECT {k} FROM {t} WHERE {c} < now() - make_interval(days => %s) "
            "LIMIT %s)"
        ).format(t=sql.Identifier(table), k=sql.Identifier(key), c=sql.SQL(column))
        while True:
            with db.connection() as conn, conn.cursor() as cur:
                cur.execute(stmt, (days, batch_size))
                n = cur.rowcount
            total += n
            if n < batch_size:
                break
        deleted[table] = total
        log.info("retention: deleted %d rows from %s older than %d days", total, table, days)
    return deleted


_DAY_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def expired_day_dirs(root: Path, cutoff: date) -> list[Path]:
    """`YYYY-MM-DD` directories under `root` for days before `cutoff`. Anything else is left
    alone: we only ever delete what our own writers named."""
    if not root.is_dir():
        return []
    out = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.is_symlink() and _DAY_DIR.match(child.name):
            try:
                day = date.fromisoformat(child.name)
            except ValueError:
                continue
            if day < cutoff:
                out.append(child)
    return out


def cleanup(db: Database, settings: Settings, *, today: date | None = None) -> dict[str, int]:
    """Delete everything older than RETENTION_DAYS (see the module's docstring); returns the
    count per table and per kind of directory."""
    days = settings.retention_days
    counts = dict(purge_older_than(db, days))
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM pipeline_metrics WHERE measured_at < now() - make_interval(days => %s)", (days,)
        )
        counts["pipeline_metrics"] = cur.rowcount
    cutoff = (today or datetime.now(UTC).date()) - timedelta(days=days)
    for kind in ("reports", "metrics"):
        expired = expired_day_dirs(Path(settings.data_dir) / kind, cutoff)
        for path in expired:
            shutil.rmtree(path)
        counts[f"{kind}_dirs"] = len(expired)
    log.info("cleanup (retention %d days): %s", days, counts)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    from utils.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m reports.retention", description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=None, help="keep this many days [env: RETENTION_DAYS]")
    args = parser.parse_args(argv)
    try:
        with configured_database() as (settings, db):
            configure_logging(settings.log_level, settings.log_format)
            if args.days is not None:
                settings = dataclasses.replace(settings, retention_days=args.days)
            counts = cleanup(db, settings)
    except DatabaseUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
