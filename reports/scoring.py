"""The report's arithmetic on rules, pure functions over plain data: precision and recall against
the producer's scenario labels, and which rules alert so often they are noise. (Reconciliation's
arithmetic is in `reports.offsets`.)"""

from __future__ import annotations

from collections.abc import Iterable

from reports.figures import RuleCounts, RuleQuality

# The scenario label each rule is scored against. `rapid_repeat` is what the duplicate rule is
# built to catch; velocity has no scenario of its own (normal traffic stays far below it, so
# anything it raises is reported by count only).
SCENARIO_FOR_RULE: dict[str, str | None] = {
    "high_amount": "high_amount",
    "velocity": None,
    "card_testing": "card_testing",
    "amount_spike": "amount_spike",
    "impossible_travel": "impossible_travel",
    "duplicate": "rapid_repeat",
    "unusual_hour_high_value": "unusual_hour_high_value",
}


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def score_rule(counts: RuleCounts, transactions: int, *, labels_present: bool) -> RuleQuality:
    """Precision and recall of one rule against the producer's scenario labels.

    An alert is a true positive when its transaction carries the scenario mapped to the rule
    (SCENARIO_FOR_RULE); `precision_any_fraud` is the looser reading, counting an alert on a
    transaction of *any* scenario as deserved. Recall is per transaction: the lead-in legs of a
    scenario (the first small charges of card testing, the first of a repeated payment, the
    home leg of an impossible journey) are labelled but cannot be alerted by design, so recall
    below 1 is expected; the account counts say whether the scenario was caught at all.

    Without labels (`labels_present` False: a real stream, or none on that day) there is no
    ground truth, so every quality figure is None rather than a misleading 0.
    """
    scored = labels_present and counts.scenario is not None
    tp = counts.true_positives if scored else None
    return RuleQuality(
        alert_type=counts.alert_type,
        scenario=counts.scenario,
        alerts=counts.alerts,
        alert_rate=_ratio(counts.alerts, transactions),
        labelled=counts.labelled if scored else None,
        true_positives=tp,
        false_positives=counts.alerts - counts.true_positives if scored else None,
        false_negatives=counts.labelled - counts.true_positives if scored else None,
        precision=_ratio(counts.true_positives, counts.alerts) if scored else None,
        recall=_ratio(counts.true_positives, counts.labelled) if scored else None,
        alerts_on_fraud=counts.alerts_on_fraud if labels_present else None,
        precision_any_fraud=_ratio(counts.alerts_on_fraud, counts.alerts) if labels_present else None,
        labelled_accounts=counts.labelled_accounts if scored else None,
        detected_accounts=counts.detected_accounts if scored else None,
    )


def noisy_rules(rules: Iterable[RuleQuality], threshold: float) -> set[str]:
    """Rules whose alert rate is above `threshold` (REPORT_NOISY_ALERT_RATE): alerting on that
    share of all transactions, a rule cannot be mostly right when fraud is a few percent of the
    traffic at most, and its alerts bury the others."""
    return {r.alert_type for r in rules if r.alert_rate is not None and r.alert_rate > threshold}
