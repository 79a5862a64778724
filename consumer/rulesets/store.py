"""Rule-set versions in PostgreSQL (utils/migrations/030_rule_sets.sql).

Reads work as any role (the consumer's app role has SELECT); `publish` and `activate` need a
named person's own login, a member of txmon_rules_admin (migration 071, utils/roles.py). Each write runs in the caller's transaction under one advisory lock, so two
publishers never get the same version number and a reader sees a version and its activation
together or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2.extensions import cursor as Cursor
from psycopg2.extras import Json

from consumer.rulesets.model import RuleSet
from utils.config import RuleThresholds
from utils.errors import TxmonError

__all__ = [
    "INITIAL_REASON",
    "Activation",
    "Published",
    "RuleSetStoreError",
    "VersionInfo",
    "activate",
    "activations",
    "active",
    "active_activation",
    "active_version",
    "get",
    "publish",
    "record_applied_sql",
    "stored",
    "versions",
]

INITIAL_REASON = "the environment's settings (ALERT_*) in force before the first publish"
_PUBLISH_LOCK = 7_141_592_654  # pg_advisory_xact_lock key (the migration lock is ...653)


class RuleSetStoreError(TxmonError):
    """The rule-set tables cannot be read or written; the message says how to fix it."""


class UnknownVersion(RuleSetStoreError):
    """No version with that number was ever published."""


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: int
    published_by: str
    published_at: datetime
    reason: str
    checksum: str
    active: bool


@dataclass(frozen=True, slots=True)
class Activation:
    version: int
    activated_by: str
    activated_at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class Published:
    version: int  # the active version afterwards
    created: bool  # False: the set was identical to the active version, nothing stored
    seeded: bool  # True: the environment's set was stored first, as version 1


@contextmanager
def _explained(what: str) -> Iterator[None]:
    """Database errors that have a fix we can name, as RuleSetStoreError."""
    try:
        yield
    except psycopg2.errors.UndefinedTable as exc:
        raise RuleSetStoreError(
            f"{what}: the rule-set tables do not exist yet; apply the migrations "
            "(`python -m utils.database migrate`)"
        ) from exc
    except psycopg2.errors.InsufficientPrivilege as exc:
        hint = f" ({exc.diag.message_hint})" if exc.diag.message_hint else ""
        raise RuleSetStoreError(
            f"{what}: refused: {exc.diag.message_primary or str(exc).strip()}{hint}. Publishing and "
            "activating need your own login, a member of txmon_rules_admin: `python -m consumer.rulesets "
            "publish FILE --reason TEXT --user NAME` (password from PGPASSWORD or ~/.pgpass); an "
            "administrator adds you with `python -m utils.roles add-rules-admin NAME`"
        ) from exc


_SELECT = """SELECT v.version, v.document, v.published_by, v.published_at, v.reason
             FROM rule_set_versions v"""


def _rule_set(row: tuple[Any, ...], fallback: RuleThresholds) -> RuleSet:
    version, document, published_by, published_at, reason = row
    return RuleSet.from_document(document, fallback).published(version, published_by, published_at, reason)


def active_version(cur: Cursor) -> int | None:
    """The active version's number (None: nothing published): one index probe, cheap enough to
    ask once per batch."""
    with _explained("reading the active rule-set version"):
        cur.execute("SELECT version FROM rule_set_active")
        row = cur.fetchone()
    return None if row is None else int(row[0])


def active(cur: Cursor, fallback: RuleThresholds) -> RuleSet | None:
    """The active version (None: nothing published yet, the environment's set is in force).
    Parameters the version lacks (added to the code since) come from `fallback`."""
    with _explained("reading the active rule set"):
        cur.execute(_SELECT + " JOIN rule_set_active a ON a.version = v.version")
        row = cur.fetchone()
    return None if row is None else _rule_set(row, fallback)


def get(cur: Cursor, version: int, fallback: RuleThresholds) -> RuleSet:
    with _explained(f"reading rule-set version {version}"):
        cur.execute(_SELECT + " WHERE v.version = %s", (version,))
        row = cur.fetchone()
    if row is None:
        raise UnknownVersion(_unknown(cur, version))
    return _rule_set(row, fallback)


def versions(cur: Cursor) -> list[VersionInfo]:
    """Every version, newest first."""
    with _explained("listing rule-set versions"):
        cur.execute(
            """SELECT v.version, v.published_by, v.published_at, v.reason, v.checksum, a.version IS NOT NULL
               FROM rule_set_versions v LEFT JOIN rule_set_active a ON a.version = v.version
               ORDER BY v.version DESC"""
        )
        return [VersionInfo(*row) for row in cur.fetchall()]


def activations(cur: Cursor) -> list[Activation]:
    """Every activation, newest first."""
    with _explained("listing rule-set activations"):
        cur.execute(
            """SELECT version, activated_by, activated_at, reason FROM rule_set_activations
               ORDER BY activation_id DESC"""
        )
        return [Activation(*row) for row in cur.fetchall()]


def publish(cur: Cursor, rule_set: RuleSet, *, reason: str, environment: RuleSet) -> Published:
    """Store `rule_set` as the next version and make it active, in the caller's transaction.
    Who did it is the session's login, recorded by the database (migration 071), never a name
    the caller passes; the login must be a member of txmon_rules_admin.

    The first publish stores `environment` (the set in force until then) as version 1 first, so
    that `activate 1` returns to it. A set identical to the active version is not stored again.
    """
    with _explained("publishing a rule set"):
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PUBLISH_LOCK,))
        cur.execute("SELECT max(version) FROM rule_set_versions")
        latest = cur.fetchone()[0]
        seeded = latest is None
        if seeded:
            latest = _insert(cur, 1, environment, INITIAL_REASON)
            _set_active(cur, 1, INITIAL_REASON)
        cur.execute(
            "SELECT v.version, v.checksum FROM rule_set_active a JOIN rule_set_versions v USING (version)"
        )
        current = cur.fetchone()
        if current is not None and current[1] == rule_set.checksum():
            return Published(current[0], created=False, seeded=seeded)
        version = _insert(cur, latest + 1, rule_set, reason)
        _set_active(cur, version, reason)
    return Published(version, created=True, seeded=seeded)


def activate(cur: Cursor, version: int, *, reason: str) -> bool:
    """Make an earlier (or later) version active again; False when it already was."""
    with _explained(f"activating rule-set version {version}"):
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PUBLISH_LOCK,))
        cur.execute("SELECT 1 FROM rule_set_versions WHERE version = %s", (version,))
        if cur.fetchone() is None:
            raise UnknownVersion(_unknown(cur, version))
        if active_version(cur) == version:
            return False
        _set_active(cur, version, reason)
    return True


def _insert(cur: Cursor, version: int, rule_set: RuleSet, reason: str) -> int:
    # published_by and db_role: the trigger rule_set_named_person writes session_user.
    cur.execute(
        """INSERT INTO rule_set_versions (version, document, checksum, reason)
           VALUES (%s, %s, %s, %s)""",
        (version, Json(rule_set.document()), rule_set.checksum(), reason),
    )
    return version


def _set_active(cur: Cursor, version: int, reason: str) -> None:
    # An activation is a new row (the newest is active: the view rule_set_active), never an
    # update; activated_by is the session's login (trigger rule_set_named_person).
    cur.execute(
        "INSERT INTO rule_set_activations (version, activated_at, reason) VALUES (%s, now(), %s)",
        (version, reason),
    )


def _unknown(cur: Cursor, version: int) -> str:
    cur.execute("SELECT max(version) FROM rule_set_versions")
    latest = cur.fetchone()[0]
    if latest is None:
        return f"no rule-set version {version}: nothing has been published yet (`publish FILE --reason TEXT`)"
    return f"no rule-set version {version}: versions are 1 to {latest} (`history` lists them)"


def record_applied_sql(
    cur: Cursor,
    group: str,
    topic: str,
    topic_id: uuid.UUID,
    version: int | None,
    new_from: Mapping[int, int],
) -> bytes:
    """The statement, parameters bound (b"" when there is nothing to record), that records in
    the batch's transaction (sent in the same round trip as its COPY, consumer/storage.py
    `write_batch`'s `prelude`): the batch evaluated with `version` and stores the messages of
    each partition of `new_from` from that offset on (positions.new_from: below it, everything was
    stored before, by whichever group, and keeps its label). A row is added where the version
    recorded at that offset (the last row at or before it, none meaning NULL, the environment's
    settings) is another. So a rewound group or a new group, which stores nothing again, labels
    nothing, and the rows describe the stored messages whoever stored them. One index probe
    per partition (the primary key leads with topic, incarnation, partition, first_offset)."""
    if not new_from:
        return b""
    parts = sorted(new_from)
    return bytes(
        cur.mogrify(
            """INSERT INTO rule_set_applied
                   (consumer_group, kafka_topic, kafka_topic_id, kafka_partition, first_offset, version)
               SELECT %(group)s, %(topic)s, %(tid)s, s.p, s.first, %(version)s
               FROM unnest(%(ps)s::int[], %(firsts)s::bigint[]) AS s(p, first)
               WHERE (SELECT r.version FROM rule_set_applied r
                      WHERE r.kafka_topic = %(topic)s AND r.kafka_topic_id = %(tid)s AND r.kafka_partition = s.p
                        AND r.first_offset <= s.first
                      ORDER BY r.first_offset DESC LIMIT 1) IS DISTINCT FROM %(version)s::int
               ON CONFLICT DO NOTHING""",
            {
                "group": group,
                "topic": topic,
                "tid": str(topic_id),
                "version": version,
                "ps": parts,
                "firsts": [new_from[p] for p in parts],
            },
        )
    )


def stored(cur: Cursor, version: int) -> tuple[Any, str, datetime, str]:
    """Version `version` as stored, unchecked: (document, published_by, published_at, reason).
    The consumer checks the document itself (`document.check_stored`) before running it."""
    with _explained(f"reading rule-set version {version}"):
        cur.execute(_SELECT + " WHERE v.version = %s", (version,))
        row = cur.fetchone()
    if row is None:
        raise UnknownVersion(_unknown(cur, version))
    return row[1], row[2], row[3], row[4]


def active_activation(cur: Cursor) -> Activation | None:
    """The active version with who activated it, when and why (None: nothing published): the
    one row of rule_set_active, cheap enough to read once per batch."""
    with _explained("reading the active rule-set version"):
        cur.execute("SELECT version, activated_by, activated_at, reason FROM rule_set_active")
        row = cur.fetchone()
    return None if row is None else Activation(*row)
