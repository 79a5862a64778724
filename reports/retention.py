"""Retention: what the data-cleanup DAG deletes once it is older than RETENTION_DAYS.

Deleting data is an explicit decision: the `data_cleanup` DAG starts paused, and its first log
line says what it is about to delete (counted before anything goes).

* transactions (their alerts go with them) whose event time *and* processing time are both
  before the cutoff. Since migration 090 the tables are partitioned by processing day and a day
  goes whole (DETACH + DROP): once the whole day is before the cutoff, and none of its events is
  at or after it (a day holding a younger event waits, and the days after it with it:
  retention_boundary()). Rows in the default partition (docs/partitioning.md) go row by row. The event time, because reports are per event day; the processing time as
  well, so that every processing day inside the retention window keeps all its offsets and its
  reconciliation never shows gaps that retention made. That RETENTION_DAYS is at least
  VALIDATION_MAX_AGE_DAYS (`utils.config.check_retention`) means a late copy of a deleted event
  is rejected as too old instead of being stored a second time;
* rejected messages by `rejected_at` (whole days too), old `pipeline_metrics` rows by `measured_at`;
* the report and metrics directories of days before the cutoff.

The daily aggregates (daily_summary, rule_quality, reconciliation) are kept: they are small and
are what remains of a purged day. Row deletes run in bounded batches (short locks, steady WAL).

    python -m reports.retention [--days N]     # what the DAG runs, without Airflow

It logs in as the retention role (POSTGRES_RETENTION_USER), which holds no DELETE privilege: rows
go only through the database function purge_expired() (migration 070), which deletes what is older
than the database's retention policy and nothing else. The policy is the owner's to set
(`python -m utils.database migrate` writes RETENTION_DAYS); a cleanup whose RETENTION_DAYS
differs from it stops and says so, rather than deleting other than what it announced.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from psycopg2 import sql

from utils.config import Settings
from utils.database import Database, configured_database
from utils.errors import ConfigError, DatabaseUnavailable

log = logging.getLogger(__name__)

# (table, whether purge_expired deletes it in batches, the condition a row must meet to go;
# %(cutoff)s is the one instant used throughout, the same purge_expired computes, and
# %(boundary)s the table's retention_boundary(): day partitions below it go whole, rows left in
# the default partition by the row rule of migration 070)
_TARGETS = (
    (
        "transactions",
        True,
        "CASE WHEN tableoid = 'transactions_default'::regclass "
        'THEN "timestamp" < %(cutoff)s AND processed_at < %(cutoff)s ELSE processed_at < %(boundary)s END',
    ),
    (
        "rejected_transactions",
        True,
        "CASE WHEN tableoid = 'rejected_transactions_default'::regclass "
        "THEN rejected_at < %(cutoff)s ELSE rejected_at < %(boundary)s END",
    ),
    ("pipeline_metrics", False, "measured_at < %(cutoff)s"),
)
_PARTITIONED = ("transactions", "rejected_transactions")


@dataclass(frozen=True, slots=True)
class Plan:
    """What a cleanup will delete, counted before anything is deleted."""

    days: int
    cutoff: datetime
    rows: dict[str, int]
    directories: dict[str, list[Path]]

    def describe(self) -> str:
        rows = ", ".join(f"{n:,} {table}" for table, n in self.rows.items())
        dirs = ", ".join(f"{len(paths)} {kind} directories" for kind, paths in self.directories.items())
        return (
            f"retention (RETENTION_DAYS={self.days}): will delete what is older than "
            f"{self.cutoff:%Y-%m-%d %H:%M} UTC: {rows} (transactions when both their event and "
            f"processing time are older; alerts go with them), {dirs}"
        )


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


def plan(db: Database, settings: Settings) -> Plan:
    """What purge_expired will delete now: the cutoff is the server's (its clock, the owner's policy)."""
    days = settings.retention_days
    rows = {}
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT days, retention_cutoff() FROM retention_policy")
        policy_days, cutoff = cur.fetchone()
        if policy_days != days:
            raise ConfigError(
                f"RETENTION_DAYS={days} but the database keeps {policy_days} days (retention_policy, "
                "which only the owner role may change): run `python -m utils.database migrate` with "
                f"RETENTION_DAYS={days} (Compose: the db-migrate service), or set RETENTION_DAYS={policy_days}"
            )
        for table, _, condition in _TARGETS:
            boundary = None
            if table in _PARTITIONED:
                cur.execute("SELECT retention_boundary(%s)", (table,))
                boundary = cur.fetchone()[0]
            stmt = sql.SQL("SELECT count(*) FROM {} WHERE " + condition).format(sql.Identifier(table))
            cur.execute(stmt, {"cutoff": cutoff, "boundary": boundary})
            rows[table] = int(cur.fetchone()[0])
    directories = {
        kind: expired_day_dirs(Path(settings.data_dir) / kind, cutoff.date())
        for kind in ("reports", "metrics")
    }
    return Plan(days, cutoff, rows, directories)


def _delete_rows(db: Database, batch_size: int) -> dict[str, int]:
    deleted: dict[str, int] = {}
    for table, batched, _ in _TARGETS:
        total = 0
        while True:
            with db.connection() as conn, conn.cursor() as cur:
                cur.execute("SELECT purge_expired(%s, %s)", (table, batch_size))
                n = int(cur.fetchone()[0])
            total += n
            if not batched or n < batch_size:
                break
        deleted[table] = total
    return deleted


def cleanup(db: Database, settings: Settings, *, batch_size: int = 10_000) -> dict[str, int]:
    """Delete what is older than RETENTION_DAYS (see the module's docstring), logging first what
    it will delete; returns the count per table and per kind of directory."""
    the_plan = plan(db, settings)
    log.info("%s", the_plan.describe())
    counts = _delete_rows(db, batch_size)
    for kind, paths in the_plan.directories.items():
        for path in paths:
            shutil.rmtree(path)
        counts[f"{kind}_dirs"] = len(paths)
    log.info("retention: deleted %s", ", ".join(f"{k}={v:,}" for k, v in counts.items()))
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    from utils.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m reports.retention", description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=None, help="keep this many days [env: RETENTION_DAYS]")
    args = parser.parse_args(argv)
    try:
        with configured_database(retention=True) as (settings, db):
            configure_logging(settings.log_level, settings.log_format)
            if args.days is not None:
                settings = dataclasses.replace(settings, retention_days=args.days)
            counts = cleanup(db, settings)
    except (DatabaseUnavailable, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
