"""Day partitions made ahead by the pipeline itself (migration 090, docs/partitioning.md).

transactions, alerts and rejected_transactions are partitioned by the day the database stores a
row (processed_at, created_at, rejected_at). The consumer asks the database, at start and then
hourly, for today's partition and the next `DAYS_AHEAD` days' (`ensure_partitions`, a SECURITY
DEFINER function the app role may call: it creates those and nothing else). So a day's partition
exists a week before its first row; should every call fail for that long, rows land in the
default partition and are moved into their day's partition when it is made.

Kept out of the batch's own transaction: creating a partition locks its parent briefly, and the
call gives up after 5 s (lock_timeout) rather than hold a batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psycopg2

from utils.database import Database
from utils.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

DAYS_AHEAD = 7
EVERY_S = 3600.0  # a day's partition is made 7 days early: hourly leaves ~170 chances
RETRY_S = 60.0  # after a failed call (a lock not granted, the server away)


class PartitionKeeper:
    """Calls ensure_partitions when due; `due` reads a monotonic clock (injectable for tests)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.next_at = 0.0  # due at once
        self.created = 0

    def maybe_ensure(self, db: Database) -> bool:
        """Make the partitions if due; True when the call ran and succeeded. Never raises for a
        database error: the batch that follows meets an outage on its own, and a partition that
        could not be made this time has days of slack."""
        now = self.clock()
        if now < self.next_at:
            return False
        try:
            with db.connection() as conn, conn.cursor() as cur:
                cur.execute("SELECT ensure_partitions(%s)", (DAYS_AHEAD,))
                row = cur.fetchone()
        except (psycopg2.Error, DatabaseUnavailable) as exc:
            self.next_at = now + RETRY_S
            log.warning("could not create the next days' partitions (retrying in %.0fs): %s", RETRY_S, exc)
            return False
        made = int(row[0]) if row else 0
        self.created += made
        if made:
            log.info("created %d day partitions (today and the next %d days)", made, DAYS_AHEAD)
        self.next_at = now + EVERY_S
        return True
