"""consumer.rulesets.model: the rule set derived from RuleThresholds and RULES, and what it does."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from consumer.rules import RULES, evaluate
from consumer.rulesets import model
from consumer.rulesets.model import DEFAULT_SEVERITY, PARAMETER_RULES, PARAMETERS, SHARED, RuleSet
from tests.unit.test_rules import NOON, _scenes, history, txn
from utils.config import RuleThresholds
from utils.models import SEVERITIES, Alert

ENV = RuleSet.from_thresholds(RuleThresholds())


def test_every_threshold_maps_to_a_rule() -> None:
    """Adding or renaming a RuleThresholds field means one line in PARAMETER_RULES."""
    fields = {f.name for f in dataclasses.fields(RuleThresholds)}
    unmapped = fields - set(PARAMETER_RULES) - model.ENVIRONMENT_ONLY
    assert not unmapped, f"add these RuleThresholds fields to PARAMETER_RULES (model.py): {sorted(unmapped)}"
    assert not model.ENVIRONMENT_ONLY & set(PARAMETER_RULES), (
        "a field is both a parameter and environment-only"
    )
    stale = set(PARAMETER_RULES) - fields
    assert not stale, f"PARAMETER_RULES names fields RuleThresholds no longer has: {sorted(stale)}"
    owners = set(PARAMETER_RULES.values())
    assert owners <= {name for name, _ in RULES} | {SHARED}, owners
    assert set(model.BOUNDS) <= fields, "BOUNDS names a field RuleThresholds no longer has"
    assert fields >= model.EVENT_COUNTS, "EVENT_COUNTS names a field RuleThresholds no longer has"


def test_every_rule_has_a_default_severity_and_the_rules_raise_it() -> None:
    assert set(DEFAULT_SEVERITY) == {name for name, _ in RULES}
    raised: dict[str, set[str]] = {}
    scenes = [*_scenes(), (txn(NOON, 10_000.0), history())]  # high_amount below its escalation
    for transaction, h in scenes:
        for alert in evaluate(transaction, h, RuleThresholds()):
            raised.setdefault(alert.alert_type, set()).add(alert.severity)
    assert set(raised) == set(DEFAULT_SEVERITY)
    for name, severities in raised.items():
        assert DEFAULT_SEVERITY[name] in severities, (name, severities)
        # anything else a rule raises is an escalation above its default
        rank = SEVERITIES.index(DEFAULT_SEVERITY[name])
        assert all(SEVERITIES.index(s) > rank for s in severities - {DEFAULT_SEVERITY[name]})


def test_the_environment_set_is_todays_behaviour() -> None:
    t = RuleThresholds(velocity_count=12, unusual_hour_start=22)
    rs = RuleSet.from_thresholds(t)
    assert list(rs.rules) == [name for name, _ in RULES]
    assert all(c.enabled for c in rs.rules.values())
    assert rs.rules["velocity"].parameters == {"velocity_count": 12, "velocity_window_s": 60.0}
    assert rs.thresholds(RuleThresholds()) == t
    assert rs.enabled_rules() == RULES
    assert rs.version is None and rs.published_by is None


def test_parameters_are_typed_from_the_dataclass() -> None:
    assert PARAMETERS["velocity_count"].type is int
    assert PARAMETERS["high_amount"].type is float
    assert PARAMETERS["velocity_count"].env == "ALERT_VELOCITY_COUNT"
    # a float parameter given as a whole number is stored as a float: one spelling, one checksum
    assert isinstance(ENV.rules["high_amount"].parameters["high_amount"], float)


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("velocity_count", 0, "out of range"),
        ("velocity_count", 8.5, "not a whole number"),
        ("velocity_count", True, "not a number"),
        ("velocity_window_s", 0, "out of range"),  # a window is longer than 0 (by its _s suffix)
        ("velocity_window_s", -60.0, "out of range"),
        ("high_amount", -1, "out of range"),
        ("high_amount", float("inf"), "not a finite number"),
        ("high_amount", "10000", "not a number"),
        ("unusual_hour_start", 24, "out of range"),
        ("unusual_hour_start", -1, "out of range"),
        ("travel_max_kmh", 0.0, "out of range"),
    ],
)
def test_impossible_values(name: str, value: object, problem: str) -> None:
    assert problem in (PARAMETERS[name].problem(value) or "")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("velocity_count", 1),
        ("high_amount", 0),
        ("unusual_hour_start", 23),
        ("unusual_hour_end", 24),
        ("spike_min_history", 0),
    ],
)
def test_possible_values(name: str, value: object) -> None:
    assert PARAMETERS[name].problem(value) is None


def test_expected_values_are_described() -> None:
    assert PARAMETERS["unusual_hour_start"].expected() == "a whole number from 0 to 23"
    assert PARAMETERS["velocity_window_s"].expected() == "a number > 0"
    assert PARAMETERS["velocity_count"].expected() == "a whole number >= 1"


def _with(rs: RuleSet, rule: str, **changes: object) -> RuleSet:
    rules = dict(rs.rules)
    rules[rule] = dataclasses.replace(rules[rule], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(rs, rules=rules)


def test_a_disabled_rule_is_not_run_but_keeps_its_parameters() -> None:
    rs = _with(ENV, "velocity", enabled=False)
    assert [name for name, _ in rs.enabled_rules()] == [name for name, _ in RULES if name != "velocity"]
    assert rs.thresholds(RuleThresholds()).velocity_count == 8
    assert rs.summary() == f"{len(RULES) - 1} of {len(RULES)} rules enabled"


def test_checksum_ignores_metadata_but_not_content() -> None:
    published = ENV.published(3, "alice", datetime(2026, 11, 30, tzinfo=UTC), "why")
    assert published.checksum() == ENV.checksum()
    assert _with(ENV, "velocity", severity="high").checksum() != ENV.checksum()


def test_severity_replaces_the_default_and_keeps_escalations() -> None:
    rs = _with(ENV, "high_amount", severity="low")
    high = Alert("t1", "a", "high_amount", "high", "m")
    critical = Alert("t2", "a", "high_amount", "critical", "m")
    assert rs.with_severity(high).severity == "low"
    assert rs.with_severity(critical) is critical
    velocity = Alert("t3", "a", "velocity", "medium", "m")
    assert ENV.with_severity(velocity) is velocity


def test_stored_documents_are_read_leniently() -> None:
    stored = _with(ENV, "duplicate", enabled=False).document()
    del stored["rules"]["velocity"]  # a rule added to the code since this version was published
    del stored["rules"]["card_testing"]["parameters"]["card_testing_count"]  # a parameter added since
    stored["rules"]["amount_spike"]["parameters"]["retired_parameter"] = 1  # one removed since
    fallback = RuleThresholds(velocity_count=99, card_testing_count=7)
    rs = RuleSet.from_document(stored, fallback)
    assert not rs.rules["duplicate"].enabled
    assert rs.rules["velocity"].parameters["velocity_count"] == 99
    assert rs.rules["card_testing"].parameters["card_testing_count"] == 7
    assert "retired_parameter" not in rs.rules["amount_spike"].parameters
    assert RuleSet.from_document(ENV.document(), RuleThresholds(velocity_count=99)) == ENV
