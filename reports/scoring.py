"""The report's arithmetic, pure functions over plain data: rule precision and recall against
the producer's scenario labels, and the offset gaps of reconciliation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from reports.figures import PartitionReconciliation, RuleCounts, RuleQuality

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


def find_gaps(offsets: Iterable[int], previous: int | None = None) -> list[tuple[int, int]]:
    """Inclusive ranges of offsets missing from an ascending sequence (repeats allowed).

    `previous` is the highest offset accounted for before the sequence (the day before), so a
    gap across midnight is found too. Without it the sequence is taken to start where it starts:
    a topic may legitimately begin above 0 (retention, a purge, a consumer attached later).
    Our producer is idempotent but not transactional, so a partition's offsets are contiguous;
    a transactional producer's commit markers would show up here as one-offset gaps.
    """
    gaps: list[tuple[int, int]] = []
    last = previous
    for offset in offsets:
        if last is not None and offset > last + 1:
            gaps.append((last + 1, offset - 1))
        if last is None or offset > last:
            last = offset
    return gaps


def reconcile_partitions(
    rows: Iterable[tuple[int, int, bool]], previous: Mapping[int, int | None]
) -> list[PartitionReconciliation]:
    """Per partition, from (partition, offset, stored?) rows of one day and the highest offset
    accounted for before it: the offset range, stored and rejected counts, and the gaps."""
    out: list[PartitionReconciliation] = []
    by_partition: dict[int, list[tuple[int, bool]]] = {}
    for partition, offset, stored in rows:
        by_partition.setdefault(partition, []).append((offset, stored))
    for partition, items in sorted(by_partition.items()):
        items.sort()
        offsets = [o for o, _ in items]
        n_stored = sum(1 for _, s in items if s)
        out.append(
            PartitionReconciliation(
                partition=partition,
                min_offset=offsets[0],
                max_offset=offsets[-1],
                previous_offset=previous.get(partition),
                stored=n_stored,
                rejected=len(items) - n_stored,
                gaps=find_gaps(offsets, previous.get(partition)),
            )
        )
    return out
