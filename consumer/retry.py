"""How the consumer retries database work, by what the error means (utils.database.classify):

* outage (no server, lost connection, admin shutdown): hold the work, back off, keep the group
  membership (the wait polls Kafka with every partition paused), retry until it comes back;
* conflict (serialization failure, deadlock): run the transaction again at once, a few times,
  then back off like an outage;
* statement or lock timeout: the server is up, so it is not called an outage; back off and
  retry a bounded number of times, then stop with an error that names the likely cause;
* anything else is raised: retrying cannot fix it (data errors are the caller's business).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg2.extensions

from utils.database import Database, ErrorKind, classify
from utils.errors import TxmonError

log = logging.getLogger("consumer")
T = TypeVar("T")

CONFLICT_RETRIES = 5  # serialization failures / deadlocks in a row retried at once
TIMEOUT_RETRIES = 5  # statement timeouts in a row retried with backoff before giving up


@dataclass(slots=True)
class Attempts:
    """One piece of work's retry history."""

    conflicts: int = 0
    timeouts: int = 0
    delay: float = 0.5


class DbRetry:
    def __init__(
        self,
        db: Database,
        stop_event: threading.Event,
        wait: Callable[[float], None],
        max_backoff_s: float,
    ) -> None:
        """`wait(seconds)` waits without losing the group membership."""
        self.db, self.stop_event, self.wait, self.max_backoff_s = db, stop_event, wait, max_backoff_s
        self.retries = 0

    def call(self, fn: Callable[[psycopg2.extensions.connection], T], what: str) -> T | None:
        """`fn(conn)` in one transaction, retried as its errors call for; None when asked to stop."""
        attempts = Attempts()
        while True:
            try:
                with self.db.connection() as conn:
                    return fn(conn)
            except Exception as exc:
                if not self.again(exc, attempts, what):
                    return None

    def again(self, exc: Exception, attempts: Attempts, what: str) -> bool:
        """Log and wait as `exc` calls for; True to retry, False when asked to stop. Raises what
        retrying cannot fix."""
        kind = classify(exc)
        self.retries += 1
        if kind is ErrorKind.CONFLICT and attempts.conflicts < CONFLICT_RETRIES:
            attempts.conflicts += 1
            log.info("%s: %s (%s); retrying at once", what, type(exc).__name__, str(exc).strip())
            return True
        if kind is ErrorKind.TIMEOUT:
            if attempts.timeouts >= TIMEOUT_RETRIES:
                raise TxmonError(
                    f"{what}: statement timeout {attempts.timeouts + 1} times in a row ({str(exc).strip()}). "
                    "The database is up, so this is not an outage: look for a lock held elsewhere "
                    "(pg_locks, pg_stat_activity) or raise POSTGRES_STATEMENT_TIMEOUT_MS"
                ) from exc
            attempts.timeouts += 1
            log.warning(
                "%s: statement timeout, the database is up (not an outage): %s; retry %d of %d in %.1fs",
                what, str(exc).strip(), attempts.timeouts, TIMEOUT_RETRIES, attempts.delay,
            )  # fmt: skip
        elif kind in (ErrorKind.OUTAGE, ErrorKind.CONFLICT):
            log.warning(
                "database unavailable while %s (retry in %.1fs): %s", what, attempts.delay, str(exc).strip()
            )
        else:
            raise exc
        if self.stop_event.is_set():
            return False
        self.wait(attempts.delay)
        attempts.delay = min(attempts.delay * 2, self.max_backoff_s)
        return not self.stop_event.is_set()
