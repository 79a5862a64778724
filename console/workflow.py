"""What may happen to a case, and who may do it: plain functions over plain data.

A case gathers one account's alerts until someone decides what they were:

    open -> investigating -> pending_approval -> closed (outcome: confirmed_fraud, false_positive, benign)
                 ^                  |                |
                 +---- rejected ----+                +-- reopened by a lead, with a reason

Four-eyes: a case closed as confirmed fraud is closed by a lead who is not its investigator (the
person who asked for closure). `decide` answers every request with either a Change (what to
write, including the event for the case's history) or a Refusal naming why; the I/O shell
(console/store.py) applies the change in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

ROLES = ("viewer", "analyst", "lead", "admin")
STATUSES = ("open", "investigating", "pending_approval", "closed")
OUTCOMES = ("confirmed_fraud", "false_positive", "benign")
SEVERITIES = ("low", "medium", "high", "critical")
ACTIONS = (
    "attach",
    "create",
    "comment",
    "claim",
    "assign",
    "start",
    "request_closure",
    "reject_closure",
    "close",
    "reopen",
    "link",
    "backtest",
    "publish_rules",
    "replay_dlq",
)

# The least role that may take each action at all (the case's state may still refuse it).
_LEAST_ROLE = {
    "attach": "analyst",
    "create": "analyst",
    "comment": "analyst",
    "claim": "analyst",
    "assign": "analyst",  # an analyst may take a case; only a lead may give one to somebody else
    "start": "analyst",
    "request_closure": "analyst",
    "reject_closure": "lead",
    "close": "lead",
    "reopen": "lead",
    "link": "analyst",
    "backtest": "lead",
    "publish_rules": "admin",
    "replay_dlq": "admin",
}


def rank(role: str) -> int:
    return ROLES.index(role)


def may(role: str, action: str) -> bool:
    """Whether `role` may take `action` at all (before looking at any case)."""
    return role in ROLES and rank(role) >= rank(_LEAST_ROLE[action])


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: str


@dataclass(frozen=True, slots=True)
class Case:
    case_id: int
    account_id: str
    status: str
    severity: str
    assignee: str | None
    investigator: str | None
    outcome: str | None
    due_at: datetime


@dataclass(frozen=True, slots=True)
class Request:
    action: str
    assignee: str | None = None
    outcome: str | None = None
    reason: str = ""
    text: str = ""


@dataclass(frozen=True, slots=True)
class Change:
    """What to write: new values for the case's columns, and the history event."""

    updates: dict[str, Any]
    kind: str
    from_value: str | None
    to_value: str | None
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str


def decide(user: User, case: Case, req: Request) -> Change | Refusal:
    """The one place that says whether `user` may do `req` to `case`, and what it changes."""
    if req.action not in ACTIONS:
        return Refusal(f"unknown action {req.action!r}")
    if not may(user.role, req.action):
        return Refusal(
            f"a {user.role} may not {req.action.replace('_', ' ')}: it needs {_LEAST_ROLE[req.action]}"
        )
    reason = req.reason.strip()
    if case.status == "closed" and req.action not in ("reopen", "comment", "link"):
        return Refusal("the case is closed: a lead reopens it first, with a reason")
    match req.action:
        case "comment":
            if not req.text.strip():
                return Refusal("a comment needs text")
            return Change({}, "comment", None, None, detail={"text": req.text.strip()})
        case "claim" | "assign":
            to = user.username if req.action == "claim" else (req.assignee or "").strip()
            if not to:
                return Refusal("name whom to assign the case to")
            if to != user.username and rank(user.role) < rank("lead"):
                return Refusal("only a lead assigns a case to somebody else")
            if case.assignee == to:
                return Refusal(f"the case is already assigned to {to}")
            if case.assignee is not None and not reason:
                return Refusal(f"the case is assigned to {case.assignee}: reassigning needs a reason")
            updates: dict[str, Any] = {"assignee": to}
            if case.status == "open":
                updates["status"] = "investigating"
            return Change(updates, "assigned", case.assignee, to, reason)
        case "start":
            if case.status != "open":
                return Refusal(f"only an open case starts an investigation (this one is {case.status})")
            updates = {"status": "investigating"}
            if case.assignee is None:
                updates["assignee"] = user.username
            return Change(updates, "status", case.status, "investigating", reason)
        case "request_closure":
            if case.status not in ("open", "investigating"):
                return Refusal(
                    f"closure is asked for while open or investigating (this case is {case.status})"
                )
            if req.outcome not in OUTCOMES:
                return Refusal(f"propose an outcome: one of {', '.join(OUTCOMES)}")
            if not reason:
                return Refusal("asking for closure needs a reason (what the investigation found)")
            return Change(
                {"status": "pending_approval", "outcome": req.outcome, "investigator": user.username},
                "status",
                case.status,
                "pending_approval",
                reason,
                {"proposed_outcome": req.outcome},
            )
        case "reject_closure":
            if case.status != "pending_approval":
                return Refusal("only a case pending approval can be sent back")
            if not reason:
                return Refusal("sending a case back needs a reason")
            return Change(
                {"status": "investigating", "outcome": None}, "status", case.status, "investigating", reason
            )
        case "close":
            if case.status != "pending_approval":
                return Refusal("a case is closed after closure was asked for (pending approval)")
            outcome = req.outcome or case.outcome
            if outcome not in OUTCOMES:
                return Refusal(f"choose an outcome: one of {', '.join(OUTCOMES)}")
            if outcome == "confirmed_fraud" and user.username in (case.investigator, case.assignee):
                return Refusal(
                    "four-eyes: confirmed fraud is closed by a lead who did not investigate the case "
                    f"(investigated by {case.investigator or case.assignee})"
                )
            return Change(
                {"status": "closed", "outcome": outcome, "closed_by": user.username},
                "status",
                case.status,
                "closed",
                reason,
                {"outcome": outcome},
            )
        case "reopen":
            if case.status != "closed":
                return Refusal("only a closed case can be reopened")
            if not reason:
                return Refusal("reopening a case needs a reason")
            return Change(
                {"status": "investigating", "outcome": None, "closed_by": None, "investigator": None},
                "status",
                "closed",
                "investigating",
                reason,
                {"previous_outcome": case.outcome},
            )
        case "attach" | "link" | "create":
            return Change({}, req.action, None, None, reason)
    return Refusal(f"{req.action} is not a case action")


def due_at(created: datetime, severity: str, sla_hours: dict[str, float]) -> datetime:
    """When a case opened at `created` by an alert of `severity` is due."""
    return created + timedelta(hours=sla_hours[severity])


def worst(a: str, b: str) -> str:
    """The more severe of two severities."""
    return a if SEVERITIES.index(a) >= SEVERITIES.index(b) else b
