"""The alert queue's filters and pages as SQL: plain functions from a request's parameters to
a parameterised query.

Newest first, paged by keyset on (created_at, alert_id): the next page starts strictly after the
last row shown, so page 1,000 costs what page 1 costs (no OFFSET), and an alert that arrives
meanwhile never shifts a page. Each filter on an alert column has an index that leads with that
column and ends with (created_at, alert_id) (migration 080), so a filtered page is one range scan.
Counts per filter value are capped (COUNT_CAP): "1,000+" tells a person as much as the exact figure
and stays fast on millions.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from psycopg2 import sql

from console.workflow import SEVERITIES, STATUSES

PAGE_SIZE = 50
COUNT_CAP = 1_000
# "new": no case yet. The rest are the status of the case the alert belongs to.
ALERT_STATUSES = ("new", *STATUSES)


class BadFilter(ValueError):
    """A filter value the queue cannot use; the message names the field."""


@dataclass(frozen=True, slots=True)
class Filters:
    rule: str = ""
    severity: str = ""
    status: str = ""
    assignee: str = ""
    account: str = ""
    merchant: str = ""
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    since: date | None = None
    until: date | None = None  # inclusive: the whole day

    def query(self, **overrides: Any) -> dict[str, str]:
        """The filters as URL parameters (empty ones left out)."""
        f = replace(self, **overrides) if overrides else self
        return {x.name: str(v) for x in fields(f) if (v := getattr(f, x.name)) not in ("", None)}


def parse_filters(params: Mapping[str, str]) -> Filters:
    def text(name: str, limit: int = 200) -> str:
        value = (params.get(name) or "").strip()
        if len(value) > limit:
            raise BadFilter(f"{name}: at most {limit} characters")
        return value

    def amount(name: str) -> Decimal | None:
        raw = text(name, 30)
        if not raw:
            return None
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise BadFilter(f"{name}: not a number: {raw!r}") from None
        if not value.is_finite() or value < 0:
            raise BadFilter(f"{name}: a positive amount")
        return value

    def day(name: str) -> date | None:
        raw = text(name, 10)
        if not raw:
            return None
        try:
            return date.fromisoformat(raw)
        except ValueError:
            raise BadFilter(f"{name}: a date as YYYY-MM-DD, not {raw!r}") from None

    severity, status = text("severity"), text("status")
    if severity and severity not in SEVERITIES:
        raise BadFilter(f"severity: one of {', '.join(SEVERITIES)}")
    if status and status not in ALERT_STATUSES:
        raise BadFilter(f"status: one of {', '.join(ALERT_STATUSES)}")
    return Filters(
        rule=text("rule", 64),
        severity=severity,
        status=status,
        assignee=text("assignee", 64),
        account=text("account"),
        merchant=text("merchant"),
        min_amount=amount("min_amount"),
        max_amount=amount("max_amount"),
        since=day("since"),
        until=day("until"),
    )


def encode_cursor(created_at: datetime, alert_id: int) -> str:
    raw = f"{created_at.isoformat()}|{alert_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, alert_id = raw.split("|")
        return datetime.fromisoformat(at), int(alert_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadFilter("after: not a page cursor of this queue") from None


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def conditions(f: Filters) -> tuple[list[sql.Composable], list[Any]]:
    """WHERE clauses over a (alerts), t (transactions), ca (case_alerts), c (cases), with params."""
    where: list[sql.Composable] = []
    params: list[Any] = []

    def add(clause: str, *values: Any) -> None:
        where.append(sql.SQL(clause))
        params.extend(values)

    if f.rule:
        add("a.alert_type = %s", f.rule)
    if f.severity:
        add("a.severity = %s", f.severity)
    if f.account:
        add("a.account_id = %s", f.account)
    # The alert's own copies of its transaction's merchant and amount (migration 091): indexed on
    # alerts, so `transactions` keeps no index for these filters.
    if f.merchant:
        add("a.merchant = %s", f.merchant)
    if f.min_amount is not None:
        add("a.amount >= %s", f.min_amount)
    if f.max_amount is not None:
        add("a.amount <= %s", f.max_amount)
    if f.since is not None:
        add("a.created_at >= %s", _start_of(f.since))
    if f.until is not None:
        add("a.created_at < %s", _start_of(f.until) + timedelta(days=1))
    if f.status == "new":
        add("ca.alert_id IS NULL")
    elif f.status:
        add("ca.status = %s", f.status)
    if f.assignee:
        add("ca.assignee = %s", f.assignee)
    return where, params


def by_case(f: Filters) -> bool:
    """Filtered by a case's status or assignee: the page walks case_alerts (copies of both, with
    the alert's time, indexed in queue order) instead of every alert."""
    return f.status not in ("", "new") or bool(f.assignee)


_FROM = sql.SQL(
    "FROM alerts a JOIN transactions t ON t.transaction_id = a.transaction_id "
    "LEFT JOIN case_alerts ca ON ca.alert_id = a.alert_id LEFT JOIN cases c ON c.case_id = ca.case_id"
)
COLUMNS = (
    "alert_id",
    "created_at",
    "alert_type",
    "severity",
    "account_id",
    "alert_message",
    "amount",
    "currency",
    "merchant",
    "case_id",
    "case_status",
    "assignee",
)
_SELECT = sql.SQL(
    "SELECT a.alert_id, a.created_at, a.alert_type, a.severity, a.account_id, a.alert_message, "
    "t.amount, t.currency, t.merchant, c.case_id, c.status, c.assignee "
)


def _where(where: list[sql.Composable]) -> sql.Composable:
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL("")


def page_query(
    f: Filters, after: tuple[datetime, int] | None, size: int = PAGE_SIZE
) -> tuple[sql.Composable, list[Any]]:
    """One page (size + 1 rows: the extra one says whether a next page exists)."""
    where, params = conditions(f)
    # The same order either way (case_alerts copies the alert's created_at); the columns name
    # the table whose index walks it.
    key = ("ca.alert_created_at", "ca.alert_id") if by_case(f) else ("a.created_at", "a.alert_id")
    if after is not None:
        where.append(sql.SQL(f"({key[0]}, {key[1]}) < (%s, %s)"))
        params.extend(after)
    order = sql.SQL(f" ORDER BY {key[0]} DESC, {key[1]} DESC LIMIT %s")
    return _SELECT + _FROM + _where(where) + order, [*params, size + 1]


def _count_from(f: Filters) -> sql.Composable:
    # Only the joins a filter needs: a count over alerts alone is an index-only scan. The
    # transaction's join is never one (its merchant and amount are on the alert).
    out = "FROM alerts a"
    if f.status or f.assignee:
        out += " LEFT JOIN case_alerts ca ON ca.alert_id = a.alert_id"
    return sql.SQL(out)


_FACET_EXPR = {"rule": "a.alert_type", "severity": "a.severity", "status": "coalesce(ca.status, 'new')"}


FACETS = ("rule", "severity", "status")


def summary_query(f: Filters, cap: int = COUNT_CAP) -> tuple[sql.Composable, list[Any]]:
    """One bounded scan: at most cap + 1 alerts matching `f`, counted in total and per value of
    each facet (GROUPING SETS). Exact whenever cap or fewer match.

    A facet's counts leave its own filter out (every value shows what choosing it would give), so
    the facets whose filter is empty share the scan of the total; each facet that is set gets one
    of its own, with `f` minus that filter (console/store.py: summary)."""
    where, params = conditions(f)
    source = _count_from(replace(f, status=f.status or "new"))  # the case join, for the status column
    inner = (
        sql.SQL(f"SELECT a.alert_type AS rule, a.severity AS severity, {_FACET_EXPR['status']} AS status ")
        + source
        + _where(where)
    )
    # Every facet is grouped (GROUPING() needs each column in some set; a few thousand rows at
    # most, so the extra groups cost nothing); `facets` says which of them the caller uses.
    query = (
        sql.SQL("SELECT GROUPING(rule, severity, status) AS g, rule, severity, status, count(*) FROM (")
        + inner
        + sql.SQL(" LIMIT %s) sample GROUP BY GROUPING SETS ((rule), (severity), (status), ())")
    )
    return query, [*params, cap + 1]


def facet_values(rules: list[str]) -> dict[str, tuple[str, ...]]:
    """The values each facet's counts are shown for."""
    return {"rule": tuple(rules), "severity": SEVERITIES, "status": ALERT_STATUSES}


def capped(n: int, cap: int = COUNT_CAP) -> str:
    return f"{cap:,}+" if n > cap else f"{n:,}"


def replace_filter(f: Filters, facet: str, value: str) -> Filters:
    """`f` with one facet (rule, severity or status) set to `value`."""
    if facet not in ("rule", "severity", "status"):
        raise BadFilter(f"{facet}: not a facet")
    if facet == "rule":
        return replace(f, rule=value)
    if facet == "severity":
        return replace(f, severity=value)
    return replace(f, status=value)
