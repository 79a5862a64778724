"""The backtest's I/O shell: what it reads of PostgreSQL, in one read-only snapshot.

Transactions stream through one server-side (named) cursor per partition, `itersize` rows at a
time, in offset order, so a replay of millions of rows holds only the account histories in
memory. The alerts of the scope are read whole (a few per hundred transactions).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import psycopg2.extensions
from psycopg2 import sql

from consumer import positions, storage
from consumer.rulesets import store
from consumer.rulesets.active import ActiveRules
from consumer.rulesets.backtest import (
    Outcome,
    StoredAlert,
    VersionMap,
    compare,
    replay,
    stream_order,
)
from consumer.rulesets.model import RuleSet, StateLimits
from utils.config import Settings
from utils.database import connect
from utils.models import Transaction

__all__ = ["Scope", "run_backtest"]

log = logging.getLogger("consumer.rulesets.backtest")

ITERSIZE = 5000
_PROGRESS_EVERY_S = 10.0

# Transaction's fields in its order (storage.TXN_COLUMNS), as the Python types validation made.
_CASTS = {"amount": "t.amount::float8", "currency": "t.currency::text", "country": "t.country::text"}
_COLUMNS = sql.SQL(", ").join(
    sql.SQL(_CASTS[c]) if c in _CASTS else sql.SQL("t.{}").format(sql.Identifier(c))
    for c in storage.TXN_COLUMNS
    if c != "amount_base"
)
# amount_base sits between simulated_incident and schema_version; rows from before migration 010
# have none: the amount as sent stands in, as in storage.load_accounts.
_BASE_AT = storage.TXN_COLUMNS.index("amount_base")


@dataclass(frozen=True, slots=True)
class Scope:
    """The alerts compared: those of `topic`'s transactions with event time in [since, until),
    of one incarnation of the topic (`topic_id`; None: the one stored last). A recreated topic
    repeats offsets: its incarnations are replayed apart, as the consumer evaluated them."""

    topic: str
    since: datetime | None = None
    until: datetime | None = None
    topic_id: uuid.UUID | None = None

    def params(self) -> dict[str, object]:
        incarnation = positions.incarnation(self.topic_id)
        return {"topic": self.topic, "since": self.since, "until": self.until, "topic_id": str(incarnation)}


def _latest_incarnation(cur: psycopg2.extensions.cursor, topic: str) -> uuid.UUID:
    cur.execute(
        "SELECT kafka_topic_id FROM stored_positions WHERE kafka_topic = %s ORDER BY updated_at DESC LIMIT 1",
        (topic,),
    )
    row = cur.fetchone()
    return positions.NIL if row is None else uuid.UUID(str(row[0]))


_IN_SCOPE = """(%(since)s::timestamptz IS NULL OR t."timestamp" >= %(since)s)
               AND (%(until)s::timestamptz IS NULL OR t."timestamp" < %(until)s)"""


def _spans(cur: psycopg2.extensions.cursor, scope: Scope) -> dict[int, tuple[int, int | None]]:
    """Per partition: (first offset replayed: the first message at or after `since`, or past the
    end; last offset replayed: the last message in scope, None when it has none)."""
    cur.execute(
        f"""SELECT t.kafka_partition,
                   coalesce(min(t.kafka_offset) FILTER (
                                WHERE %(since)s::timestamptz IS NULL OR t."timestamp" >= %(since)s),
                            max(t.kafka_offset) + 1),
                   max(t.kafka_offset) FILTER (WHERE {_IN_SCOPE})
            FROM transactions t WHERE t.kafka_topic = %(topic)s AND t.kafka_topic_id = %(topic_id)s
            GROUP BY t.kafka_partition""",
        scope.params(),
    )
    return {int(p): (int(first), None if last is None else int(last)) for p, first, last in cur.fetchall()}


def _stream(
    conn: psycopg2.extensions.connection, scope: Scope, partition: int, first: int, last: int
) -> Iterator[Transaction]:
    cur = conn.cursor(name=f"backtest_p{partition}")
    cur.itersize = ITERSIZE
    cur.execute(
        sql.SQL(
            "SELECT {}, coalesce(t.amount_base, t.amount)::float8 FROM transactions t "
            "WHERE t.kafka_topic = %s AND t.kafka_topic_id = %s AND t.kafka_partition = %s "
            "AND t.kafka_offset BETWEEN %s AND %s ORDER BY t.kafka_offset"
        ).format(_COLUMNS),
        (scope.topic, scope.params()["topic_id"], partition, first, last),
    )
    with contextlib.closing(cur):
        for row in cur:
            values = list(row[:-1])
            values.insert(_BASE_AT, row[-1])
            yield Transaction(*values)


def _stored_alerts(cur: psycopg2.extensions.cursor, scope: Scope) -> list[StoredAlert]:
    cur.execute(
        "SELECT a.transaction_id, a.alert_type, a.severity, a.details, a.rule_set_version, "
        "t.kafka_partition, t.kafka_offset, t.simulated_incident "
        "FROM alerts a JOIN transactions t USING (transaction_id) "
        f"WHERE t.kafka_topic = %(topic)s AND t.kafka_topic_id = %(topic_id)s AND {_IN_SCOPE}",
        scope.params(),
    )
    return [StoredAlert(*row) for row in cur.fetchall()]


def _applied(cur: psycopg2.extensions.cursor, scope: Scope) -> list[tuple[int, int, int | None]]:
    """Where the stored messages switched version, whichever group stored them (one row per
    position: consumer/rulesets/store.py record_applied_sql)."""
    cur.execute(
        "SELECT kafka_partition, first_offset, version FROM rule_set_applied "
        "WHERE kafka_topic = %(topic)s AND kafka_topic_id = %(topic_id)s",
        scope.params(),
    )
    return [(int(p), int(o), v) for p, o, v in cur.fetchall()]


@dataclass(frozen=True, slots=True)
class Run:
    outcome: Outcome
    elapsed_s: float
    versions: list[int]  # the published versions the self-check replayed (none: a candidate's run)
    conflicts: list[int]  # partitions whose stored alerts disagree on their version


def run_backtest(settings: Settings, scope: Scope, candidate: RuleSet | None) -> Run:
    """Replay `scope` with `candidate` (or, None, with the versions that ran) and compare."""
    environment = settings.rules
    limits = StateLimits.from_settings(settings.consumer)
    started = time.monotonic()
    conn = connect(settings.postgres)
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)  # one consistent snapshot
        with conn.cursor() as cur:
            if scope.topic_id is None:
                scope = dataclasses.replace(scope, topic_id=_latest_incarnation(cur, scope.topic))
            stored = _stored_alerts(cur, scope)
            spans = _spans(cur, scope)
            if candidate is not None:
                only = ActiveRules.of(candidate, environment)
                conflicts: list[int] = []
                versions: list[int] = []

                def evaluator_for(t: Transaction) -> ActiveRules:
                    return only
            else:
                vmap = VersionMap(_applied(cur, scope), stored)
                conflicts = vmap.conflicts
                evaluators: dict[int | None, ActiveRules] = {
                    None: ActiveRules.of(RuleSet.from_thresholds(environment), environment)
                }
                versions = sorted(vmap.versions())
                for v in versions:
                    evaluators[v] = ActiveRules.of(store.get(cur, v, environment), environment)
                at = vmap.at

                def evaluator_for(t: Transaction) -> ActiveRules:
                    return evaluators[at(t.kafka_partition, t.kafka_offset)]

        history: Callable[[set[str]], list[tuple[object, ...]]] | None = None
        if scope.since is not None:
            starts = {p: first for p, (first, _last) in spans.items()}

            def history(accounts: set[str]) -> list[tuple[object, ...]]:
                return storage.load_accounts(
                    conn,
                    scope.topic,
                    sorted(accounts),
                    limits.max_events,
                    starts,
                    positions.incarnation(scope.topic_id),
                )

        replayed = replay(
            stream_order(
                _stream(conn, scope, p, first, last)
                for p, (first, last) in sorted(spans.items())
                if last is not None
            ),
            evaluator_for,
            limits,
            history,
            since=None if scope.since is None else scope.since.timestamp(),
            until=None if scope.until is None else scope.until.timestamp(),
            progress=_progress_logger(started),
        )
        outcome = compare(stored, replayed, details=candidate is None)
    finally:
        conn.close()
    return Run(outcome, time.monotonic() - started, versions, conflicts)


def _progress_logger(started: float) -> Callable[[int], None]:
    last = [started]

    def progress(done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= _PROGRESS_EVERY_S:
            last[0] = now
            log.info(
                "backtest: %d transactions replayed (%.0f/s)",
                done,
                done / (now - started),
                extra={"replayed": done},
            )

    return progress
