"""How good each rule is, per incident: the simulator's ground truth against the alerts. Pure.

Ground truth is per incident (`simulated_incident`, utils/models.py): every message of one
injected incident shares its id, lead-in legs and aftermath included. For each rule:

* incidents: injected incidents of the scenario mapped to the rule (RULE_SCENARIO);
* caught: those with at least one alert of the rule on any of their messages; recall = caught /
  incidents. A rule is built to catch its incident, not each of its messages (the first probe of
  card testing cannot look like card testing yet);
* alerts, and alerts on incidents: alerts of the rule on a message of *any* injected incident;
  precision = alerts on incidents / alerts. An amount_spike alert on a high-amount incident is
  deserved, one on ordinary traffic is not;
* alerts per 1,000 transactions: the load the rule puts on analysts, ground truth or not.

Without any incident in scope (a real stream) recall and precision are None, not 0. The daily
report (reports/scoring.py, one UTC day as the scope) and `python -m quality` (one run) both call
`score_rules`. A day cuts incidents at midnight; `caught_elsewhere` lets the day score each of its
incidents whole, and `ground_truth` says that a day holding only the tail of an earlier incident
still carries labels. A rule missing from RULE_SCENARIO (an alert type of older data) is scored on
its alerts only: no scenario, no recall.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["RULE_SCENARIO", "RuleScore", "format_table", "score_rules"]

# The scenario each rule is built to catch (utils/models.py SCENARIOS). Every rule has one.
RULE_SCENARIO: Mapping[str, str] = {
    "high_amount": "high_amount",
    "velocity": "velocity_burst",
    "card_testing": "card_testing",
    "amount_spike": "amount_spike",
    "impossible_travel": "impossible_travel",
    "duplicate": "rapid_repeat",
    "unusual_hour_high_value": "unusual_hour_high_value",
    "pass_through": "pass_through",
    "refund_abuse": "refund_abuse",
    "account_takeover": "account_takeover",
    "structuring": "structuring",
    "invoice_fraud": "invoice_fraud",
    "dormant_reactivation": "dormant_reactivation",
    "high_risk_card_burst": "high_risk_card_burst",
}


@dataclass(frozen=True, slots=True)
class RuleScore:
    alert_type: str
    scenario: str | None  # None: a rule without a scenario of its own (not in RULE_SCENARIO)
    incidents: int  # injected incidents of `scenario`
    caught: int  # ... with at least one alert of this rule on one of their messages
    alerts: int
    alerts_on_incidents: int  # alerts on a message of any injected incident
    alerts_per_1000: float | None  # per 1,000 transactions; None without transactions
    recall: float | None  # caught / incidents; None without incidents of `scenario`
    precision: float | None  # alerts_on_incidents / alerts; None without alerts or without ground truth

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_rules(
    transactions: int,
    incidents: Mapping[str, str],
    alerts: Iterable[tuple[str, str | None]],
    *,
    rules: Iterable[str] = RULE_SCENARIO,
    caught_elsewhere: Iterable[tuple[str, str]] = (),
    ground_truth: bool | None = None,
) -> list[RuleScore]:
    """Per-rule figures for one scope (a run, a day).

    `transactions`: stored transactions in scope; `incidents`: incident id -> scenario of every
    injected incident in scope; `alerts`: (alert_type, incident id of the alerted message or None
    for ordinary traffic), one per alert. Rules come out in `rules` order.

    `caught_elsewhere`: (alert_type, incident id), one per alert outside the scope on a message of
    an incident in scope (its part past midnight): such an alert catches the incident, but it is
    not one of the scope's alerts (its own day counts it). `ground_truth`: whether the scope's
    stream carries the simulator's labels at all (default: any incident in scope); without it
    precision is None.
    """
    alerts_n: Counter[str] = Counter()
    on_incidents: Counter[str] = Counter()
    caught: dict[str, set[str]] = {}

    def catch(alert_type: str, incident: str) -> None:
        scenario = incidents.get(incident)  # None: an incident outside the scope
        if scenario is not None and scenario == RULE_SCENARIO.get(alert_type):
            caught.setdefault(alert_type, set()).add(incident)

    for alert_type, incident in alerts:
        alerts_n[alert_type] += 1
        if incident is not None:
            on_incidents[alert_type] += 1
            catch(alert_type, incident)
    for alert_type, incident in caught_elsewhere:
        catch(alert_type, incident)
    per_scenario = Counter(incidents.values())
    if ground_truth is None:
        ground_truth = bool(incidents)
    out = []
    for rule in rules:
        scenario = RULE_SCENARIO.get(rule)
        injected = per_scenario[scenario] if scenario is not None else 0
        n_alerts, hits = alerts_n[rule], len(caught.get(rule, ()))
        out.append(
            RuleScore(
                alert_type=rule,
                scenario=scenario,
                incidents=injected,
                caught=hits,
                alerts=n_alerts,
                alerts_on_incidents=on_incidents[rule],
                alerts_per_1000=1000.0 * n_alerts / transactions if transactions else None,
                recall=hits / injected if injected else None,
                precision=on_incidents[rule] / n_alerts if n_alerts and ground_truth else None,
            )
        )
    return out


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def format_table(scores: Iterable[RuleScore]) -> str:
    """A Markdown table: one row per rule."""
    lines = [
        "| rule | scenario | incidents | caught | recall | alerts | on incidents | precision | per 1,000 txns |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scores:
        per_k = "–" if s.alerts_per_1000 is None else f"{s.alerts_per_1000:.2f}"
        lines.append(
            f"| `{s.alert_type}` | {s.scenario or '–'} | {s.incidents:,} | {s.caught:,} | {_pct(s.recall)} | "
            f"{s.alerts:,} | {s.alerts_on_incidents:,} | {_pct(s.precision)} | {per_k} |"
        )
    return "\n".join(lines)
