"""The rule set a consumer evaluates, ready to run (pure).

An `ActiveRules` is built once per version and never changed: the consumer swaps the whole
object between batches, so no batch is ever evaluated with half of one set and half of another.

`rule_set_applied` (utils/migrations/050_rule_set_applied.sql, 060) says from which offset on
each partition's stored messages were evaluated with which version. A batch adds a row, in its
own transaction, where the version it ran differs from the one recorded at the first position it
stores (consumer/rulesets/store.py record_applied_sql): a deployment that never publishes writes no
rows, and a rewound or new group, which stores nothing again, writes none either.
"""

from __future__ import annotations

from dataclasses import dataclass

from consumer.rules import RULES, Rule
from consumer.rulesets.model import RuleSet
from utils.config import RuleThresholds
from utils.models import Alert

__all__ = ["ActiveRules"]


@dataclass(frozen=True, slots=True)
class ActiveRules:
    """What `evaluate_batch` runs: the thresholds, the enabled rule functions in RULES' order,
    and the set itself when a severity differs from the rule's default (None: nothing to change,
    so the common case pays nothing per alert)."""

    version: int | None  # None: nothing published, the environment's settings
    thresholds: RuleThresholds
    functions: tuple[Rule, ...]
    rule_set: RuleSet
    retune: RuleSet | None

    @classmethod
    def of(cls, rule_set: RuleSet, base: RuleThresholds) -> ActiveRules:
        """`rule_set` over `base` (which supplies what no set carries: the base currency and the
        exchange rates)."""
        enabled = {name for name, config in rule_set.rules.items() if config.enabled}
        functions = tuple(rule for name, rule in RULES if name in enabled)
        default = RuleSet.from_thresholds(base)
        retune = any(c.severity != default.rules[n].severity for n, c in rule_set.rules.items())
        return cls(
            rule_set.version, rule_set.thresholds(base), functions, rule_set, rule_set if retune else None
        )

    @classmethod
    def environment(cls, base: RuleThresholds) -> ActiveRules:
        """The set in force until someone publishes: every rule, `base`'s thresholds."""
        return cls.of(RuleSet.from_thresholds(base), base)

    def adjusted(self, alerts: list[Alert]) -> list[Alert]:
        """`alerts` at the severities of this set (only called when `retune` is set)."""
        assert self.retune is not None
        return [self.retune.with_severity(a) for a in alerts]
