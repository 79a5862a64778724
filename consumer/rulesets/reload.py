"""Running consumers follow the active rule-set version without a restart.

`RuleSetReloader.current` is the `ActiveRules` the consumer evaluates its next batch with. The
consumer asks `poll(now)` once per loop turn, before it prepares a batch: at most every
RULESET_CHECK_SECONDS it reads `rule_set_active` (one row, one index probe), and only when the
version changed does it read and check the new version and build the next `ActiveRules`. The
object is swapped whole between batches: a batch is evaluated with one version from its first
message to its last.

A version that cannot run (a document written around `publish`, or one whose windows reach past
this consumer's STATE_HISTORY_HOURS / STATE_MAX_EVENTS_PER_ACCOUNT) is refused once, with the
problems and the fix in the log, and the consumer keeps the version it runs. At start nothing
runs yet: the consumer waits for the database and begins with the active version, or with the
environment's settings when nothing was published or the active version is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import psycopg2.extensions

from consumer.rulesets import document, store
from consumer.rulesets.active import ActiveRules
from consumer.rulesets.model import StateLimits
from utils.config import RuleThresholds
from utils.database import Database
from utils.errors import DatabaseUnavailable

__all__ = ["RuleSetReloader"]

log = logging.getLogger("consumer.rulesets")

T = TypeVar("T")
DbCall = Callable[[Callable[[psycopg2.extensions.connection], T], str], T | None]


class RuleSetReloader:
    def __init__(self, db: Database, base: RuleThresholds, limits: StateLimits, check_seconds: float) -> None:
        self.db, self.base, self.limits, self.check_seconds = db, base, limits, check_seconds
        self.current = ActiveRules.environment(base)
        # The newest activation as last read, whether or not this consumer runs that version
        # (a refused version was still activated by someone): what the consumer's
        # txmon_consumer_rule_set_activated_timestamp_seconds exports, and the alert fires on.
        self.activation: store.Activation | None = None
        self._refused: int | None = None  # the version last refused, not refused again every check
        self._next_check = 0.0
        self._failing = False  # the last check could not reach the database

    def start(self, db_call: DbCall[store.Activation | None]) -> None:
        """Load the active version before the first batch, waiting for the database (`db_call`
        retries an outage until the consumer is asked to stop)."""
        active = db_call(self._read_active, "reading the active rule-set version")
        self.activation = active
        if active is not None:
            self._switch_to(active)

    def poll(self, now: float) -> ActiveRules:
        """The rules for the next batch; reads the database at most every `check_seconds`."""
        if now >= self._next_check:
            self._next_check = now + self.check_seconds
            try:
                with self.db.connection() as conn:
                    active = self._read_active(conn)
            except (DatabaseUnavailable, store.RuleSetStoreError, psycopg2.Error) as exc:
                if not self._failing:  # once per outage: the batch writes report the rest
                    log.warning(
                        "cannot check the active rule set (%s); still evaluating %s", exc, self._running()
                    )
                self._failing = True
                return self.current
            self._failing = False
            self.activation = active
            if active is None or active.version == self.current.version:
                self._refused = None
            elif active.version != self._refused:
                self._switch_to(active)
        return self.current

    @staticmethod
    def _read_active(conn: psycopg2.extensions.connection) -> store.Activation | None:
        with conn.cursor() as cur:
            return store.active_activation(cur)

    def _switch_to(self, active: store.Activation) -> None:
        old, version = self.current, active.version
        try:
            with self.db.connection() as conn, conn.cursor() as cur:
                doc, by, at, reason = store.stored(cur, version)
            rule_set = document.check_stored(doc, self.base, self.limits).published(version, by, at, reason)
        except document.RuleSetInvalid as exc:
            self._refused = version
            problems = "; ".join(f"{p.path or '(top)'}: {p.message} (fix: {p.fix})" for p in exc.problems)
            log.error(
                "rule-set version %d refused, still evaluating %s: %s. Fix: activate a valid version "
                "(`python -m consumer.rulesets activate %s --reason TEXT`) or publish a corrected set",
                version,
                self._running(),
                problems,
                old.version if old.version is not None else "N",
                extra={"rule_set_refused": version, "rule_set_version": old.version},
            )
            return
        except (DatabaseUnavailable, store.RuleSetStoreError, psycopg2.Error) as exc:
            log.warning(
                "cannot read rule-set version %d (%s); still evaluating %s", version, exc, self._running()
            )
            self._next_check = 0.0  # try again at the next batch
            return
        self.current = ActiveRules.of(rule_set, self.base)
        self._refused = None
        log.info(
            "rule set switched from %s to version %d (published by %s: %s; activated by %s: %s); %s",
            _name(old.version),
            version,
            by,
            reason,
            active.activated_by,
            active.reason,
            rule_set.summary(),
            extra={
                "rule_set_old_version": old.version,
                "rule_set_version": version,
                "rule_set_published_by": by,
                "rule_set_reason": reason,
                "rule_set_activated_by": active.activated_by,
                "rule_set_activation_reason": active.reason,
            },
        )

    def _running(self) -> str:
        return _name(self.current.version)


def _name(version: int | None) -> str:
    return "the environment's settings (ALERT_*)" if version is None else f"version {version}"
