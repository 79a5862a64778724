"""The rule set a consumer evaluates, ready to run, and where each partition switched (pure).

An `ActiveRules` is built once per version and never changed: the consumer swaps the whole
object between batches, so no batch is ever evaluated with half of one set and half of another.

`rule_set_applied` (utils/migrations/050_rule_set_applied.sql) says from which offset on each
partition's messages were evaluated with which version. The rule the consumer follows, exact and
the simplest we found: a batch adds a row for a partition when the version it evaluates that
partition with differs from the partition's *recorded* version, at the batch's first offset of
the partition. The recorded version is the last row the consumer group committed for the
partition at or before the offset it starts from (read once per assignment), no row meaning NULL
(the environment's settings). So a deployment that never publishes writes no rows, a consumer
that gains a partition mid-version writes none either, and a fenced or rolled-back batch leaves
nothing because the rows go in its own transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from consumer.rules import RULES, Rule
from consumer.rulesets.model import RuleSet
from utils.config import RuleThresholds
from utils.models import Alert

__all__ = ["ActiveRules", "RecordedVersions", "switches"]


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


class RecordedVersions:
    """partition -> the version rule_set_applied records for it, as the consumer's transactions
    committed it and as the batches prepared since leave it (back to committed on a rollback).
    A partition not held is read from the database (`unknown`, `learn`) before its first batch."""

    def __init__(self) -> None:
        self._committed: dict[int, int | None] = {}
        self._prepared: dict[int, int | None] = {}

    def unknown(self, first_offsets: Mapping[int, int]) -> dict[int, int]:
        """The partitions of `first_offsets` (partition -> a batch's first offset) not held."""
        return {p: first for p, first in first_offsets.items() if p not in self._prepared}

    def learn(self, recorded: Mapping[int, int | None]) -> None:
        self._committed.update(recorded)
        self._prepared.update(recorded)

    def switches(
        self, version: int | None, first_offsets: Mapping[int, int]
    ) -> dict[int, tuple[int, int | None]]:
        """partition -> (first offset, version): the rows a batch evaluated with `version` adds,
        one per partition whose recorded version is another (every partition must be held)."""
        rows = switches(self._prepared, version, first_offsets)
        self._prepared.update({p: v for p, (_first, v) in rows.items()})
        return rows

    def committed(self, rows: Mapping[int, tuple[int, int | None]]) -> None:
        self._committed.update({p: v for p, (_first, v) in rows.items()})

    def rolled_back(self) -> None:
        self._prepared = dict(self._committed)

    def forget(self, partition: int) -> None:
        """A partition lost, or fenced (its owner meanwhile may have switched it)."""
        self._committed.pop(partition, None)
        self._prepared.pop(partition, None)


def switches(
    recorded: Mapping[int, int | None], version: int | None, first_offsets: Mapping[int, int]
) -> dict[int, tuple[int, int | None]]:
    """partition -> (first offset, version) of the rows a batch adds to rule_set_applied: one per
    partition of the batch (`first_offsets`) whose recorded version is not `version`."""
    return {p: (first, version) for p, first in first_offsets.items() if recorded.get(p) != version}
