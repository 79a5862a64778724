"""The report's arithmetic on rules, pure functions over plain data: the day's incident-level
figures (utils/rule_quality.py, the scoring `make quality` uses too) and which rules alert so
often they are noise. (Reconciliation's arithmetic is in `reports.offsets`.)

A day cuts the stream at midnight, incidents included. The report counts:

* **alerts** (and alerts on incidents, precision, alerts per 1,000 transactions): the alerts on
  the day's transactions (event time), as the summary and the charts count them;
* **incidents** (and caught, recall): the incidents whose first message falls on the day, each
  scored whole: an alert of the rule on any of its messages catches it, also one on a message
  past midnight. So every incident is counted on exactly one day, and recall never drops because
  half an incident fell on the next day (an impossible journey that starts at 23:40 is alerted on
  its far leg at 01:10). Alerts on yesterday's incidents are deserved (precision) but no catch.

A day whose transactions carry no incident label (a real stream, a simulated one without fraud,
or rows stored before incidents were recorded) has no ground truth: recall and precision are
None, and the page says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import repeat

from utils.rule_quality import RULE_SCENARIO, RuleScore, score_rules

# An alert count from the day's SQL: (alert_type, incident id of the alerted message or None,
# whether the message is on the day, how many such alerts).
AlertCount = tuple[str, str | None, bool, int]


def _each(counts: Iterable[AlertCount], on_day: bool) -> Iterator[tuple[str, str | None]]:
    for alert_type, incident, day, n in counts:
        if day == on_day:
            yield from repeat((alert_type, incident), n)


def score_day(
    transactions: int, incidents: Mapping[str, str], alerts: Iterable[AlertCount], *, ground_truth: bool
) -> list[RuleScore]:
    """Every rule's figures for one day, in RULE_SCENARIO's order, then any other alert type.

    `incidents`: id -> scenario of the incidents whose first message falls on the day;
    `alerts`: the day's alerts and the alerts on those incidents' messages past the day.
    """
    counts = list(alerts)
    rules = [*RULE_SCENARIO, *sorted({a for a, _, on_day, _ in counts if on_day} - set(RULE_SCENARIO))]
    elsewhere = [(a, i) for a, i in _each(counts, False) if i is not None]
    return score_rules(
        transactions,
        incidents,
        _each(counts, True),
        rules=rules,
        caught_elsewhere=elsewhere,
        ground_truth=ground_truth,
    )


def noisy_rules(rules: Iterable[RuleScore], threshold: float) -> set[str]:
    """Rules whose alerts are more than the share `threshold` (REPORT_NOISY_ALERT_RATE) of the
    day's transactions: alerting that often, a rule cannot be mostly right when fraud is a few
    percent of the traffic at most, and its alerts bury the others."""
    return {
        r.alert_type for r in rules if r.alerts_per_1000 is not None and r.alerts_per_1000 > 1000 * threshold
    }
