"""A published rule set that differs from the environment's, for tests that compare two paths of
the rules under a retune (tests/unit/test_rule_dispatch.py, tests/unit/test_rules_equivalence.py)."""

from __future__ import annotations

import dataclasses

from consumer.rulesets.active import ActiveRules
from consumer.rulesets.model import RuleSet
from utils.config import RuleThresholds


def retuned(t: RuleThresholds, critical: str = "amount_spike") -> ActiveRules:
    """Two rules off (velocity, structuring), `duplicate` at low and `critical` at critical."""
    published = RuleSet.from_thresholds(t).published(7, "alice", None, "test")  # type: ignore[arg-type]
    rules = dict(published.rules)
    for name in ("velocity", "structuring"):
        rules[name] = dataclasses.replace(rules[name], enabled=False)
    for name, severity in (("duplicate", "low"), (critical, "critical")):
        rules[name] = dataclasses.replace(rules[name], severity=severity)
    return ActiveRules.of(dataclasses.replace(published, rules=rules), t)
