"""What a consumer runs for a rule-set version (consumer/rulesets/active.py), when a partition's
switch is recorded, and how a stored version is checked before it runs (document.check_stored)."""

from __future__ import annotations

import dataclasses

import pytest

from consumer.account_state import AccountStates
from consumer.batch import Batch, evaluate_batch
from consumer.rules import RULES
from consumer.rulesets import document
from consumer.rulesets.active import ActiveRules, RecordedVersions, switches
from consumer.rulesets.model import RuleConfig, RuleSet, StateLimits
from tests.unit.test_rules import NOON, txn
from utils.config import RuleThresholds

BASE = RuleThresholds()
LIMITS = StateLimits(86_400.0, 50)


def with_rule(rule_set: RuleSet, name: str, **changes: object) -> RuleSet:
    rules = dict(rule_set.rules)
    rules[name] = dataclasses.replace(rules[name], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(rule_set, rules=rules)


def run(rules: ActiveRules | RuleThresholds, amount: float) -> Batch:
    t = txn(NOON, amount)
    batch = Batch(txns=[t])
    states = AccountStates(50, 86_400.0)
    states.load([t.account_id], [])
    evaluate_batch(batch, states, rules)
    return batch


def test_the_environment_set_runs_every_rule_and_names_no_version() -> None:
    env = ActiveRules.environment(BASE)
    assert env.version is None and env.retune is None and len(env.functions) == len(RULES)
    assert [(a.alert_type, a.severity) for a in run(env, 12_000.0).alerts] == [("high_amount", "high")]
    assert run(BASE, 12_000.0).rule_set_version is None  # thresholds alone: the environment's set


def test_a_version_changes_parameters_disables_rules_and_retunes_severities() -> None:
    published = RuleSet.from_thresholds(BASE).published(4, "alice", None, "test")  # type: ignore[arg-type]
    lower = dataclasses.replace(
        published,
        rules={
            **published.rules,
            "high_amount": RuleConfig(True, "low", {"high_amount": 5_000.0}),
        },
    )
    active = ActiveRules.of(lower, BASE)
    batch = run(active, 6_000.0)
    assert batch.rule_set_version == 4
    assert [(a.alert_type, a.severity) for a in batch.alerts] == [("high_amount", "low")]
    off = ActiveRules.of(with_rule(lower, "high_amount", enabled=False), BASE)
    assert len(off.functions) == len(RULES) - 1 and run(off, 60_000.0).alerts == []


def test_a_partition_switch_is_recorded_once_where_its_version_changes() -> None:
    recorded = {0: None, 1: 2, 2: 3}
    assert switches(recorded, 3, {0: 10, 1: 20, 2: 30}) == {0: (10, 3), 1: (20, 3)}
    assert switches(recorded, None, {0: 10, 1: 20}) == {1: (20, None)}
    assert switches({0: None}, None, {0: 5}) == {}, "never published: no rows at all"


def test_a_stored_version_is_checked_like_a_file() -> None:
    doc = RuleSet.from_thresholds(BASE).document()
    assert document.check_stored(doc, BASE, LIMITS) == RuleSet.from_thresholds(BASE)
    del doc["rules"]["velocity"]["parameters"]["velocity_count"]  # gained by the code since
    doc["rules"]["velocity"]["parameters"]["retired_parameter"] = 3  # lost by the code since
    assert document.check_stored(doc, BASE, LIMITS) == RuleSet.from_thresholds(BASE)
    doc["rules"]["high_amount"]["parameters"]["high_amount"] = "five thousand"
    with pytest.raises(document.RuleSetInvalid) as refused:
        document.check_stored(doc, BASE, LIMITS)
    assert [p.path for p in refused.value.problems] == ["rules.high_amount.parameters.high_amount"]
    doc = RuleSet.from_thresholds(BASE).document()
    doc["rules"]["velocity"]["parameters"]["velocity_window_s"] = 7 * 86_400.0
    with pytest.raises(document.RuleSetInvalid, match="STATE_HISTORY_HOURS"):
        document.check_stored(doc, BASE, LIMITS)
    with pytest.raises(document.RuleSetInvalid, match="no 'rules'"):
        document.check_stored({"rule": {}}, BASE, LIMITS)


def test_recorded_versions_follow_commits_and_rollbacks() -> None:
    recorded = RecordedVersions()
    assert recorded.unknown({0: 10, 1: 20}) == {0: 10, 1: 20}
    recorded.learn({0: None, 1: 2})
    first = recorded.switches(2, {0: 10, 1: 20})
    assert first == {0: (10, 2)}
    assert recorded.switches(2, {0: 30}) == {}, "prepared behind the first: already switched"
    recorded.rolled_back()  # the first batch never committed
    assert recorded.switches(2, {0: 10}) == {0: (10, 2)}
    recorded.committed(first)
    recorded.rolled_back()
    assert recorded.switches(2, {0: 40, 1: 40}) == {}
    recorded.forget(1)
    assert recorded.unknown({0: 50, 1: 50}) == {1: 50}
