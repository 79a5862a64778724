"""Backtest a rule set on stored transactions: the pure core (no I/O; the shell is
consumer/rulesets/backtest_db.py).

The replay runs every stored message of one topic through `consumer.batch.evaluate_message`,
the step the consumer itself takes, against `AccountStates`, in stream order: each partition in
offset order (the order the consumer evaluated it in), partitions merged by the (event time,
partition, offset) of their next message. An account lives in one partition (its key is its id),
and its history is a function of the set of its earlier messages (consumer/account_state.py), so
the replay sees, for every message, exactly the history the consumer saw, whatever batches,
restarts and rebalances the live run went through. Rejected messages and replays of stored ones
never joined a history nor raised a stored alert, so the stored transactions are the whole input.

Each message is evaluated with an `ActiveRules` (what the consumer runs): the candidate rule set, or (self-check) the
version that evaluated it live, from `VersionMap` (rule_set_applied rows).

A bounded backtest compares the alerts of the messages with event time in [since, until). It
replays each partition from its first message at or after `since` to its last one in the window
(offset order: a message outside the window in between still joins its account's history, as it
did live) and starts each account from its stored rows below that offset, loaded as the consumer
loads an account it picks up (`storage.load_accounts`: newest STATE_MAX_EVENTS_PER_ACCOUNT rows,
the age bound applied by `AccountStates.load`). That is the history a full replay holds at that
point, not an approximation warmed up over STATE_HISTORY_HOURS: the window's alerts are exactly
those of a full replay, also for what looks back further than a rule's window (the last located
payment of impossible_travel and unusual_hour_high_value), and where an incident's legs are
stamped ahead of messages sent after them (producer.generator.MAX_LEAD).
"""

from __future__ import annotations

import bisect
import heapq
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from consumer.account_state import AccountStates, HistoryRow
from consumer.batch import evaluate_message
from consumer.rulesets.active import ActiveRules
from consumer.rulesets.model import RULE_NAMES, StateLimits
from utils.models import Alert, Transaction
from utils.rule_quality import RuleScore, score_rules

__all__ = [
    "AlertChange",
    "Outcome",
    "Replayed",
    "RuleDiff",
    "StoredAlert",
    "VersionMap",
    "compare",
    "csv_rows",
    "format_table",
    "replay",
    "stream_order",
]

AlertKey = tuple[str, str]  # (transaction_id, alert_type): at most one alert per rule and message


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """An alert as stored, with what the backtest needs of its transaction."""

    transaction_id: str
    alert_type: str
    severity: str
    details: Mapping[str, Any]
    version: int | None  # alerts.rule_set_version (None: the environment's settings)
    partition: int
    offset: int
    incident: str | None  # the transaction's simulated_incident


class VersionMap:
    """Which rule-set version evaluated each message of a topic (None: the environment's settings).

    From `rule_set_applied`: a row (partition, first_offset, version) holds from its offset up to
    the partition's next row. Before a partition's first row (messages stored before consumers
    recorded versions), the version is the one the stored alerts of those messages carry when
    they all agree (`before_rows`), else the environment's settings; `conflicts` names the
    partitions where they disagree (the self-check cannot reproduce those exactly).
    """

    def __init__(
        self, rows: Iterable[tuple[int, int, int | None]], alerts: Iterable[StoredAlert] = ()
    ) -> None:
        by_partition: dict[int, list[tuple[int, int | None]]] = {}
        for partition, first_offset, version in rows:
            by_partition.setdefault(partition, []).append((first_offset, version))
        self._offsets: dict[int, list[int]] = {}
        self._versions: dict[int, list[int | None]] = {}
        for partition, bounds in by_partition.items():
            bounds.sort(key=lambda b: b[0])
            self._offsets[partition] = [b[0] for b in bounds]
            self._versions[partition] = [b[1] for b in bounds]
        carried: dict[int, set[int | None]] = {}
        for a in alerts:
            starts = self._offsets.get(a.partition)
            if starts is None or a.offset < starts[0]:
                carried.setdefault(a.partition, set()).add(a.version)
        self.before_rows = {p: next(iter(vs)) for p, vs in carried.items() if len(vs) == 1}
        self.conflicts = sorted(p for p, vs in carried.items() if len(vs) > 1)

    def at(self, partition: int, offset: int) -> int | None:
        starts = self._offsets.get(partition)
        i = -1 if starts is None else bisect.bisect_right(starts, offset) - 1
        if i < 0:
            return self.before_rows.get(partition)
        return self._versions[partition][i]

    def versions(self) -> set[int]:
        """Every published version the map refers to."""
        used = {v for vs in self._versions.values() for v in vs} | set(self.before_rows.values())
        return {v for v in used if v is not None}


def stream_order(partitions: Iterable[Iterable[Transaction]]) -> Iterator[Transaction]:
    """Each partition's messages (each in offset order) merged by the (event time, partition,
    offset) of the next one: offset order within a partition is kept even where event time is not."""
    return heapq.merge(*partitions, key=lambda t: (t.epoch, t.kafka_partition, t.kafka_offset))


@dataclass(slots=True)
class Replayed:
    """What a replay raised, and the scope it covered (for precision and recall)."""

    alerts: dict[AlertKey, Alert] = field(default_factory=dict)
    incident_of: dict[str, str | None] = field(default_factory=dict)  # alerted transaction -> incident
    transactions: int = 0  # in the window
    incidents: dict[str, str] = field(default_factory=dict)  # incident id -> scenario, in scope


def replay(
    messages: Iterable[Transaction],
    evaluator_for: Callable[[Transaction], ActiveRules],
    limits: StateLimits,
    history: Callable[[set[str]], Iterable[HistoryRow | tuple[Any, ...]]] | None = None,
    *,
    since: float | None = None,
    until: float | None = None,
    chunk: int = 5000,
    progress: Callable[[int], None] | None = None,
) -> Replayed:
    """Evaluate `messages` (stream order, `stream_order`) and collect the alerts of those with
    event time (epoch seconds) in [since, until); the others only join their account's history.

    `history(accounts)`: the stored rows of accounts met for the first time, from before where
    the replay starts in their partition; None when it starts at the beginning. `progress(n)` is
    called after every `chunk` messages."""
    out = Replayed()
    states = AccountStates(limits.max_events, limits.history_s)  # unbounded: each account loaded once
    pending: list[Transaction] = []
    replayed = [0]

    def run(batch: list[Transaction]) -> None:
        fresh = states.missing({t.account_id for t in batch})
        if fresh:
            states.load(fresh, history(fresh) if history is not None else ())
        for t in batch:
            raised = evaluate_message(t, states, evaluator_for(t))
            epoch = t.epoch
            if (since is not None and epoch < since) or (until is not None and epoch >= until):
                continue
            out.transactions += 1
            if t.simulated_incident is not None and t.simulated_scenario is not None:
                out.incidents[t.simulated_incident] = t.simulated_scenario
            for a in raised:
                out.alerts[(a.transaction_id, a.alert_type)] = a
                out.incident_of[a.transaction_id] = t.simulated_incident
        replayed[0] += len(batch)
        if progress is not None:
            progress(replayed[0])

    for t in messages:
        pending.append(t)
        if len(pending) >= chunk:
            run(pending)
            pending = []
    if pending:
        run(pending)
    return out


@dataclass(frozen=True, slots=True)
class AlertChange:
    """One line of the diff: an alert the candidate adds, removes, or raises differently
    (`changed`: same message and rule, another severity, or in the self-check other details)."""

    change: str  # added | removed | changed
    transaction_id: str
    rule: str
    severity: str
    details: Mapping[str, Any]
    stored_severity: str | None = None  # `changed` only
    stored_details: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RuleDiff:
    rule: str
    stored: int
    candidate: int
    added: int
    removed: int
    changed: int
    stored_score: RuleScore
    candidate_score: RuleScore

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Outcome:
    transactions: int
    rules: list[RuleDiff]
    changes: list[AlertChange]  # in (transaction_id, rule) order

    @property
    def identical(self) -> bool:
        return not self.changes


def compare(
    stored: Iterable[StoredAlert],
    replayed: Replayed,
    *,
    details: bool = True,
    rules: Sequence[str] = RULE_NAMES,
) -> Outcome:
    """The candidate's alerts against the stored ones of the same scope, per rule and one by one.

    `details`: whether an alert whose details differ is `changed` (the self-check: exactly what
    ran). A candidate's alerts cite its own parameters (a threshold, a multiplier), so for a
    candidate only a new severity counts as a change."""
    kept = {(a.transaction_id, a.alert_type): a for a in stored}
    new = replayed.alerts
    changes: list[AlertChange] = []
    for key in sorted(kept.keys() | new.keys()):
        s, c = kept.get(key), new.get(key)
        if c is None:
            assert s is not None
            changes.append(AlertChange("removed", key[0], key[1], s.severity, s.details))
        elif s is None:
            changes.append(AlertChange("added", key[0], key[1], c.severity, c.details))
        elif s.severity != c.severity or (details and dict(s.details) != c.details):
            changes.append(
                AlertChange("changed", key[0], key[1], c.severity, c.details, s.severity, s.details)
            )
    names = list(rules) + sorted({k[1] for k in kept.keys() | new.keys()} - set(rules))
    n, incidents = replayed.transactions, replayed.incidents
    stored_scores = score_rules(
        n, incidents, ((a.alert_type, a.incident) for a in kept.values()), rules=names
    )
    candidate_scores = score_rules(
        n, incidents, ((k[1], replayed.incident_of.get(k[0])) for k in new), rules=names
    )
    per_rule = []
    for name, s_score, c_score in zip(names, stored_scores, candidate_scores, strict=True):
        mine = [c for c in changes if c.rule == name]
        per_rule.append(
            RuleDiff(
                name,
                s_score.alerts,
                c_score.alerts,
                sum(c.change == "added" for c in mine),
                sum(c.change == "removed" for c in mine),
                sum(c.change == "changed" for c in mine),
                s_score,
                c_score,
            )
        )
    return Outcome(n, per_rule, changes)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _then_now(before: float | None, after: float | None) -> str:
    return _pct(before) if before == after else f"{_pct(before)} -> {_pct(after)}"


def format_table(outcome: Outcome) -> str:
    """One line per rule: alerts stored and raised, the difference, precision and recall (stored
    -> candidate, one figure when they agree; '-' without the simulator's labels)."""
    head = ("rule", "stored", "candidate", "added", "removed", "changed", "precision", "recall")
    rows = [head] + [
        (
            r.rule,
            f"{r.stored:,}",
            f"{r.candidate:,}",
            f"{r.added:,}",
            f"{r.removed:,}",
            f"{r.changed:,}",
            _then_now(r.stored_score.precision, r.candidate_score.precision),
            _then_now(r.stored_score.recall, r.candidate_score.recall),
        )
        for r in outcome.rules
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


CSV_COLUMNS = ("change", "transaction_id", "rule", "severity", "details", "stored_severity", "stored_details")


def csv_rows(changes: Iterable[AlertChange]) -> Iterator[tuple[str, ...]]:
    """The diff as CSV rows (details as JSON), CSV_COLUMNS first."""
    yield CSV_COLUMNS
    for c in changes:
        yield (
            c.change,
            c.transaction_id,
            c.rule,
            c.severity,
            json.dumps(c.details, sort_keys=True),
            c.stored_severity or "",
            "" if c.stored_details is None else json.dumps(c.stored_details, sort_keys=True),
        )
