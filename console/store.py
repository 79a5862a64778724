"""The console's SQL: users and sessions, the alert queue, cases and their history.

Every function takes a cursor (a RealDictCursor: rows as dicts) inside the caller's transaction;
console/app.py opens one per request with `db.connection()`. Decisions about cases come from
console/workflow.py; this module only reads and writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeAlias

import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from console import auth, queue, workflow
from console.workflow import Case, Change, Refusal, Request, User

Cursor: TypeAlias = psycopg2.extras.RealDictCursor
Row: TypeAlias = dict[str, Any]


class NotFound(LookupError):
    pass


# ---- users and sessions --------------------------------------------------------------------------


def add_user(cur: Cursor, username: str, role: str, password: str) -> int:
    if role not in workflow.ROLES:
        raise ValueError(f"role: one of {', '.join(workflow.ROLES)}")
    cur.execute(
        """INSERT INTO console_users (username, password_hash, role) VALUES (%s, %s, %s)
           ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash,
               role = EXCLUDED.role, failed_attempts = 0, locked_until = NULL
           RETURNING user_id""",
        (username, auth.hash_password(password), role),
    )
    return int(cur.fetchone()["user_id"])


@dataclass(frozen=True, slots=True)
class Session:
    user_id: int
    username: str
    role: str
    csrf_token: str
    expires_at: datetime

    @property
    def user(self) -> User:
        return User(self.username, self.role)


def sign_in(
    cur: Cursor, username: str, password: str, *, max_attempts: int, lock_for: timedelta, session_hours: float
) -> tuple[str | None, str]:
    """(session token, "") on success, (None, message) otherwise. The row is locked while the
    attempt is counted, so parallel guesses cannot slip past the lockout."""
    cur.execute(
        "SELECT user_id, password_hash, failed_attempts, locked_until, now() AS now "
        "FROM console_users WHERE username = %s FOR UPDATE",
        (username,),
    )
    row = cur.fetchone()
    ok = auth.verify_password(row["password_hash"] if row else None, password)
    if row is None:
        return None, "wrong username or password"
    result = auth.attempt(
        password_ok=ok,
        failed_attempts=row["failed_attempts"],
        locked_until=row["locked_until"],
        now=row["now"],
        max_attempts=max_attempts,
        lock_for=lock_for,
    )
    cur.execute(
        "UPDATE console_users SET failed_attempts = %s, locked_until = %s WHERE user_id = %s",
        (result.failed_attempts, result.locked_until, row["user_id"]),
    )
    if not result.allowed:
        return None, result.message
    token = auth.new_token()
    cur.execute(
        "INSERT INTO console_sessions (token_sha256, user_id, csrf_token, expires_at) "
        "VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
        (auth.token_digest(token), row["user_id"], auth.new_token(), session_hours * 3600),
    )
    cur.execute("DELETE FROM console_sessions WHERE expires_at < now()")
    return token, ""


def session(cur: Cursor, token: str) -> Session | None:
    if not token:
        return None
    cur.execute(
        """SELECT s.user_id, u.username, u.role, s.csrf_token, s.expires_at
           FROM console_sessions s JOIN console_users u USING (user_id)
           WHERE s.token_sha256 = %s AND s.expires_at > now()""",
        (auth.token_digest(token),),
    )
    row = cur.fetchone()
    return Session(**row) if row else None


def sign_out(cur: Cursor, token: str) -> None:
    cur.execute("DELETE FROM console_sessions WHERE token_sha256 = %s", (auth.token_digest(token),))


def usernames(cur: Cursor) -> list[str]:
    cur.execute("SELECT username FROM console_users WHERE role <> 'viewer' ORDER BY username")
    return [r["username"] for r in cur.fetchall()]


# ---- the alert queue -----------------------------------------------------------------------------


def alert_page(cur: Cursor, f: queue.Filters, after: tuple[datetime, int] | None) -> tuple[list[Row], str]:
    """A page of alerts and the cursor of the next page ("" on the last)."""
    query, params = queue.page_query(f, after)
    cur.execute(query, params)
    rows = cur.fetchall()
    more = len(rows) > queue.PAGE_SIZE
    rows = rows[: queue.PAGE_SIZE]
    for r in rows:
        r["case_status"] = r.pop("status")
    nxt = queue.encode_cursor(rows[-1]["created_at"], rows[-1]["alert_id"]) if more else ""
    return rows, nxt


@dataclass(frozen=True, slots=True)
class Summary:
    """How many alerts match (capped: `total` > COUNT_CAP means "more"), and per facet value how
    many match with the other filters; `sampled[facet]`: those counts are of the first
    COUNT_CAP + 1 found, because more match."""

    total: int
    facets: dict[str, dict[str, int]]
    sampled: dict[str, bool]


def summary(cur: Cursor, f: queue.Filters, rules: list[str]) -> Summary:
    values = queue.facet_values(rules)
    counts: dict[str, dict[str, int]] = {x: dict.fromkeys(values[x], 0) for x in queue.FACETS}
    seen: dict[str, int] = dict.fromkeys(queue.FACETS, 0)
    total = 0
    unset = tuple(x for x in queue.FACETS if not getattr(f, x))
    scans = [(f, unset, True)] + [
        (queue.replace_filter(f, x, ""), (x,), False) for x in queue.FACETS if getattr(f, x)
    ]
    for filters, facets, with_total in scans:
        query, params = queue.summary_query(filters)
        cur.execute(query, params)
        for row in cur.fetchall():
            n = int(row["count"])
            if row["g"] == 0b111:  # the () set: every row of the scan
                total = n if with_total else total
                continue
            facet = next(
                x for x, bit in zip(queue.FACETS, (0b100, 0b010, 0b001), strict=True) if not row["g"] & bit
            )
            if facet in facets:
                counts[facet][row[facet]] = n
                seen[facet] += n
    return Summary(total, counts, {x: seen[x] > queue.COUNT_CAP for x in queue.FACETS})


def rule_names() -> list[str]:
    """The rules of the registry (consumer/rules.py), in its order: the queue's rule filter."""
    from consumer.rules import RULES

    return [name for name, _ in RULES]


def alert(cur: Cursor, alert_id: int) -> Row:
    cur.execute(
        """SELECT a.*, t.amount, t.currency, t."timestamp" AS txn_time, t.merchant, t.merchant_category,
                  t.city, t.country, t.channel, t.transaction_type, t.kafka_partition, t.kafka_offset,
                  ca.case_id, c.status AS case_status, c.assignee
           FROM alerts a JOIN transactions t USING (transaction_id)
           LEFT JOIN case_alerts ca ON ca.alert_id = a.alert_id LEFT JOIN cases c ON c.case_id = ca.case_id
           WHERE a.alert_id = %s""",
        (alert_id,),
    )
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no alert {alert_id}")
    return dict(row)


def transactions_around(cur: Cursor, account_id: str, at: datetime, each_side: int = 8) -> list[Row]:
    """The account's transactions just before and after `at`, oldest first, with their alerts."""
    cur.execute(
        """(SELECT transaction_id FROM transactions WHERE account_id = %(a)s AND "timestamp" <= %(t)s
            ORDER BY "timestamp" DESC LIMIT %(n)s)
           UNION
           (SELECT transaction_id FROM transactions WHERE account_id = %(a)s AND "timestamp" > %(t)s
            ORDER BY "timestamp" LIMIT %(n)s)""",
        {"a": account_id, "t": at, "n": each_side + 1},
    )
    return _transactions(cur, [r["transaction_id"] for r in cur.fetchall()])


def recent_transactions(cur: Cursor, account_id: str, limit: int = 100) -> list[Row]:
    cur.execute(
        """SELECT transaction_id FROM transactions WHERE account_id = %s ORDER BY "timestamp" DESC LIMIT %s""",
        (account_id, limit),
    )
    return _transactions(cur, [r["transaction_id"] for r in cur.fetchall()])


def _transactions(cur: Cursor, ids: list[str]) -> list[Row]:
    if not ids:
        return []
    cur.execute(
        """SELECT t.transaction_id, t."timestamp", t.transaction_type, t.amount, t.currency, t.merchant,
                  t.city, t.country, t.channel,
                  coalesce(array_agg(a.alert_type ORDER BY a.alert_type) FILTER (WHERE a.alert_id IS NOT NULL),
                           '{}') AS alert_types,
                  coalesce(array_agg(a.alert_id ORDER BY a.alert_type) FILTER (WHERE a.alert_id IS NOT NULL),
                           '{}') AS alert_ids
           FROM transactions t LEFT JOIN alerts a ON a.transaction_id = t.transaction_id
           WHERE t.transaction_id = ANY(%s)
           GROUP BY t.transaction_id, t."timestamp", t.transaction_type, t.amount, t.currency, t.merchant,
                    t.city, t.country, t.channel
           ORDER BY t."timestamp", t.transaction_id""",
        (ids,),
    )
    return [dict(r) for r in cur.fetchall()]


# ---- cases ---------------------------------------------------------------------------------------


def _event(
    cur: Cursor, case_id: int, actor: str, kind: str, change: Change | None = None, **detail: Any
) -> None:
    cur.execute(
        """INSERT INTO case_events (case_id, actor, kind, from_value, to_value, reason, detail)
           VALUES (%s, %s, %s, %s, %s, %s, %s)""",
        (
            case_id,
            actor,
            kind,
            change.from_value if change else None,
            change.to_value if change else None,
            (change.reason or None) if change else None,
            json.dumps({**(change.detail if change else {}), **detail}),
        ),
    )


def _lock_account(cur: Cursor, account_id: str) -> None:
    # Concurrent attaches for one account queue here; the partial unique index is the backstop.
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 2020))", (account_id,))


def _open_case_id(cur: Cursor, account_id: str) -> int | None:
    cur.execute("SELECT case_id FROM cases WHERE account_id = %s AND status <> 'closed'", (account_id,))
    row = cur.fetchone()
    return int(row["case_id"]) if row else None


def open_case(cur: Cursor, account_id: str, severity: str, actor: str, sla_hours: Mapping[str, float]) -> int:
    """The account's open case, created (with its due time from the SLA) if it has none."""
    _lock_account(cur, account_id)
    existing = _open_case_id(cur, account_id)
    if existing is not None:
        return existing
    cur.execute(
        """INSERT INTO cases (account_id, severity, due_at, created_by)
           VALUES (%s, %s, now() + make_interval(secs => %s), %s)
           ON CONFLICT (account_id) WHERE status <> 'closed' DO NOTHING RETURNING case_id""",
        (account_id, severity, sla_hours[severity] * 3600, actor),
    )
    row = cur.fetchone()
    if row is None:  # unreachable under the lock; kept so the index alone would still be enough
        found = _open_case_id(cur, account_id)
        assert found is not None
        return found
    case_id = int(row["case_id"])
    _event(cur, case_id, actor, "created", None, account_id=account_id, severity=severity)
    return case_id


def attach(cur: Cursor, alert_id: int, user: User, sla_hours: Mapping[str, float]) -> int | Refusal:
    """Attach an alert to its account's open case (made if none); the case's id."""
    if not workflow.may(user.role, "attach"):
        return Refusal(f"a {user.role} may not attach alerts")
    a = alert(cur, alert_id)
    if a["case_id"] is not None:
        return int(a["case_id"])
    case_id = open_case(cur, a["account_id"], a["severity"], user.username, sla_hours)
    cur.execute(
        """INSERT INTO case_alerts (alert_id, case_id, alert_created_at, status, assignee, attached_by)
           SELECT %s, case_id, %s, status, assignee, %s FROM cases WHERE case_id = %s
           ON CONFLICT DO NOTHING RETURNING case_id""",
        (alert_id, a["created_at"], user.username, case_id),
    )
    if cur.fetchone() is None:  # attached meanwhile by somebody else
        return int(alert(cur, alert_id)["case_id"])
    case = load_case(cur, case_id, lock=True)
    severity = workflow.worst(case.severity, a["severity"])
    cur.execute(
        """UPDATE cases SET severity = %s, updated_at = now(),
               due_at = least(due_at, now() + make_interval(secs => %s)) WHERE case_id = %s""",
        (severity, sla_hours[a["severity"]] * 3600, case_id),
    )
    _event(cur, case_id, user.username, "alert_attached", None, alert_id=alert_id, alert_type=a["alert_type"])
    return case_id


def load_case(cur: Cursor, case_id: int, *, lock: bool = False) -> Case:
    cur.execute(
        "SELECT case_id, account_id, status, severity, assignee, investigator, outcome, due_at FROM cases "
        "WHERE case_id = %s" + (" FOR UPDATE" if lock else ""),
        (case_id,),
    )
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no case {case_id}")
    return Case(**row)


def act(cur: Cursor, case_id: int, user: User, req: Request) -> Change | Refusal:
    """Apply one request to a case (locked for the transaction), with its history event."""
    case = load_case(cur, case_id, lock=True)
    decision = workflow.decide(user, case, req)
    if isinstance(decision, Refusal):
        return decision
    if decision.updates:
        updates = dict(decision.updates)
        sets = [sql.SQL("{} = %s").format(sql.Identifier(k)) for k in updates]
        if updates.get("status") == "closed":
            sets.append(sql.SQL("closed_at = now()"))
        elif "status" in updates:
            sets.append(sql.SQL("closed_at = NULL"))
        sets.append(sql.SQL("updated_at = now()"))
        cur.execute(
            sql.SQL("UPDATE cases SET {} WHERE case_id = %s").format(sql.SQL(", ").join(sets)),
            [*updates.values(), case_id],
        )
        if "status" in updates or "assignee" in updates:  # the queue's copies of both
            cur.execute(
                """UPDATE case_alerts ca SET status = c.status, assignee = c.assignee FROM cases c
                   WHERE c.case_id = %s AND ca.case_id = c.case_id""",
                (case_id,),
            )
    _event(cur, case_id, user.username, decision.kind, decision)
    return decision


def claim_next(cur: Cursor, user: User) -> int | Refusal:
    """The unassigned open case due soonest, assigned to `user`."""
    if not workflow.may(user.role, "claim"):
        return Refusal(f"a {user.role} may not claim cases")
    cur.execute(
        """SELECT case_id FROM cases WHERE status = 'open' AND assignee IS NULL
           ORDER BY due_at, case_id LIMIT 1 FOR UPDATE SKIP LOCKED"""
    )
    row = cur.fetchone()
    if row is None:
        return Refusal("no unassigned open case to claim")
    result = act(cur, int(row["case_id"]), user, Request("claim"))
    return result if isinstance(result, Refusal) else int(row["case_id"])


def link(cur: Cursor, case_id: int, other_id: int, user: User, reason: str) -> Change | Refusal:
    if case_id == other_id:
        return Refusal("a case cannot be linked to itself")
    load_case(cur, other_id)
    decision = act(cur, case_id, user, Request("link", reason=reason))
    if isinstance(decision, Refusal):
        return decision
    a, b = sorted((case_id, other_id))
    cur.execute(
        "INSERT INTO case_links (case_id, linked_case_id, linked_by) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
        (a, b, user.username),
    )
    _event(cur, other_id, user.username, "link", decision, linked_case_id=case_id)
    return decision


def case_row(cur: Cursor, case_id: int) -> Row:
    cur.execute(
        "SELECT *, due_at < now() AND status <> 'closed' AS overdue FROM cases WHERE case_id = %s", (case_id,)
    )
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no case {case_id}")
    return dict(row)


def case_alerts(cur: Cursor, case_id: int) -> list[Row]:
    cur.execute(
        """SELECT a.alert_id, a.created_at, a.alert_type, a.severity, a.alert_message, a.details,
                  a.rule_set_version, a.transaction_id, t.amount, t.currency, t."timestamp" AS txn_time,
                  t.merchant, ca.attached_by, ca.attached_at
           FROM case_alerts ca JOIN alerts a USING (alert_id) JOIN transactions t USING (transaction_id)
           WHERE ca.case_id = %s ORDER BY a.created_at, a.alert_id""",
        (case_id,),
    )
    return [dict(r) for r in cur.fetchall()]


def case_events(cur: Cursor, case_id: int) -> list[Row]:
    cur.execute("SELECT * FROM case_events WHERE case_id = %s ORDER BY event_id", (case_id,))
    return [dict(r) for r in cur.fetchall()]


def linked_cases(cur: Cursor, case_id: int) -> list[Row]:
    cur.execute(
        """SELECT c.case_id, c.account_id, c.status FROM case_links l
           JOIN cases c ON c.case_id = CASE WHEN l.case_id = %(id)s THEN l.linked_case_id ELSE l.case_id END
           WHERE l.case_id = %(id)s OR l.linked_case_id = %(id)s ORDER BY c.case_id""",
        {"id": case_id},
    )
    return [dict(r) for r in cur.fetchall()]


def case_list(cur: Cursor, *, status: str = "", assignee: str = "", limit: int = 100) -> list[Row]:
    """Cases by due time: overdue ones come first (their due time is earliest), closed ones last."""
    where, params = [sql.SQL("TRUE")], []
    if status:
        where.append(sql.SQL("c.status = %s"))
        params.append(status)
    else:
        where.append(sql.SQL("c.status <> 'closed'"))
    if assignee:
        where.append(sql.SQL("c.assignee = %s"))
        params.append(assignee)
    cur.execute(
        sql.SQL(
            """SELECT c.*, c.due_at < now() AND c.status <> 'closed' AS overdue,
                      (SELECT count(*) FROM case_alerts ca WHERE ca.case_id = c.case_id) AS alerts
               FROM cases c WHERE {} ORDER BY c.due_at, c.case_id LIMIT %s"""
        ).format(sql.SQL(" AND ").join(where)),
        [*params, limit],
    )
    return [dict(r) for r in cur.fetchall()]


def case_export(cur: Cursor, case_id: int) -> dict[str, Any]:
    """Everything a regulator's file needs: the case, its alerts with the rule and the numbers
    that fired it, the transactions, and the timeline of decisions."""
    c = case_row(cur, case_id)
    alerts = case_alerts(cur, case_id)
    ids = sorted({a["transaction_id"] for a in alerts})
    return {
        "case": c,
        "alerts": alerts,
        "transactions": _transactions(cur, ids),
        "linked_cases": linked_cases(cur, case_id),
        "timeline": case_events(cur, case_id),
    }


def as_json(value: Any) -> Any:
    """Rows made JSON-safe: datetimes as ISO 8601, amounts as strings (no float rounding)."""
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if value.__class__.__name__ == "Decimal":
        return str(value)
    return value


def new_cursor(conn: psycopg2.extensions.connection) -> Cursor:
    return conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)  # type: ignore[return-value]
