"""Analysts' verdicts as labels: how often each rule's alerts were confirmed as fraud.

A closed case's outcome (console/: confirmed_fraud, false_positive, benign) labels every alert in
it. A rule's precision from verdicts is confirmed / decided over its alerts in closed cases: the
real-world counterpart of the simulator's precision (alerts on injected incidents / alerts), which
only a simulated stream has. Shown beside it by `python -m consumer.rulesets backtest` and on the
console's rules page.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class VerdictScore:
    rule: str
    decided: int  # alerts of this rule in closed cases
    confirmed: int  # ... closed as confirmed fraud

    @property
    def precision(self) -> float | None:
        return self.confirmed / self.decided if self.decided else None


def scores(labels: Iterable[tuple[str, str]]) -> dict[str, VerdictScore]:
    """(rule, outcome) per decided alert -> each rule's score."""
    decided: dict[str, int] = {}
    confirmed: dict[str, int] = {}
    for rule, outcome in labels:
        decided[rule] = decided.get(rule, 0) + 1
        confirmed[rule] = confirmed.get(rule, 0) + (outcome == "confirmed_fraud")
    return {r: VerdictScore(r, decided[r], confirmed[r]) for r in sorted(decided)}


def load(cur: Any, since: datetime | None = None, until: datetime | None = None) -> dict[str, VerdictScore]:
    """Scores of the alerts raised in [since, until) whose case is closed."""
    cur.execute(
        """SELECT a.alert_type, c.outcome FROM case_alerts ca
           JOIN cases c ON c.case_id = ca.case_id JOIN alerts a ON a.alert_id = ca.alert_id
           WHERE c.status = 'closed'
             AND (%(since)s::timestamptz IS NULL OR a.created_at >= %(since)s)
             AND (%(until)s::timestamptz IS NULL OR a.created_at < %(until)s)""",
        {"since": since, "until": until},
    )
    return scores(
        (r[0], r[1]) if isinstance(r, tuple) else (r["alert_type"], r["outcome"]) for r in cur.fetchall()
    )


def load_for_day(cur: Any, start: datetime, end: datetime) -> dict[str, VerdictScore]:
    """Scores of the alerts on transactions with event time in [start, end) (the daily report's day)."""
    cur.execute(
        """SELECT a.alert_type, c.outcome FROM transactions t
           JOIN alerts a ON a.transaction_id = t.transaction_id
           JOIN case_alerts ca ON ca.alert_id = a.alert_id JOIN cases c ON c.case_id = ca.case_id
           WHERE t."timestamp" >= %s AND t."timestamp" < %s AND c.status = 'closed'""",
        (start, end),
    )
    return scores((r[0], r[1]) for r in cur.fetchall())


def format_lines(found: dict[str, VerdictScore]) -> list[str]:
    if not found:
        return ["analysts' verdicts: no alert in a closed case yet (console/: docs/console.md)"]
    out = ["analysts' verdicts (alerts in closed cases): rule, confirmed / decided, precision"]
    for s in found.values():
        share = "-" if s.precision is None else f"{s.precision:.0%}"
        out.append(f"  {s.rule:<26} {s.confirmed:>6,} / {s.decided:<6,} {share:>5}")
    return out
