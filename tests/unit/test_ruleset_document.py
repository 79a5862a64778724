"""consumer.rulesets.document: YAML out and back, and every refusal names its line and fix."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consumer.rulesets.document import Problem, RuleSetInvalid, dump, load
from consumer.rulesets.model import DEFAULT_SEVERITY, RuleSet, StateLimits
from utils.config import RuleThresholds

ENV = RuleSet.from_thresholds(RuleThresholds())
TEXT = dump(ENV)


def line_of(text: str, needle: str, after: str = "") -> int:
    """1-based line of the first line containing `needle` (after the line containing `after`)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if after in line) if after else 0
    return next(i for i, line in enumerate(lines) if i >= start and needle in line) + 1


def problems(text: str) -> list[Problem]:
    with pytest.raises(RuleSetInvalid) as caught:
        load(text)
    assert caught.value.problems
    return caught.value.problems


def one(text: str) -> Problem:
    found = problems(text)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def test_round_trip() -> None:
    assert load(TEXT) == ENV
    published = ENV.published(4, "alice", datetime(2026, 11, 30, 9, 12, tzinfo=UTC), "payroll: day")
    text = dump(published)
    assert "version: 4" in text and "published_by: alice" in text and "2026-11-30T09:12:00+00:00" in text
    assert load(text) == ENV  # metadata is assigned by publish, never read from a file


def test_whole_numbers_for_float_parameters_are_accepted() -> None:
    rs = load(TEXT.replace("high_amount: 10000.0", "high_amount: 25000"))
    assert rs.rules["high_amount"].parameters["high_amount"] == 25_000.0


def test_unknown_rule_names_the_line_and_suggests() -> None:
    text = TEXT.replace("  velocity:\n", "  velocty:\n")
    found = problems(text)
    unknown = next(p for p in found if "unknown rule" in p.message)
    assert unknown.line == line_of(text, "velocty:")
    assert "did you mean 'velocity'" in unknown.fix
    missing = next(p for p in found if "missing" in p.message)
    assert "'velocity' is missing" in missing.message and "enabled: false" in missing.fix


def test_unknown_parameter_names_the_line_and_the_known_ones() -> None:
    text = TEXT.replace("velocity_count: 8", "velocity_cnt: 8")
    found = problems(text)
    unknown = next(p for p in found if "unknown parameter" in p.message)
    assert unknown.line == line_of(text, "velocity_cnt")
    assert unknown.path == "rules.velocity.parameters.velocity_cnt"
    assert "did you mean 'velocity_count'" in unknown.fix
    missing = next(p for p in found if "missing" in p.message)
    assert "velocity_count: 8" in missing.fix  # the value to write


def test_parameter_of_another_rule_says_where_it_belongs() -> None:
    text = TEXT.replace("velocity_count: 8", "velocity_count: 8\n      travel_min_km: 100")
    p = one(text)
    assert p.line == line_of(text, "travel_min_km")
    assert "impossible_travel" in p.message and p.fix == "move it under rules.impossible_travel.parameters"


@pytest.mark.parametrize(
    ("old", "new", "message", "fix"),
    [
        (
            "velocity_count: 8",
            "velocity_count: eight",
            "'eight' is not a number",
            "a whole number >= 1, e.g. 8",
        ),
        ("velocity_count: 8", "velocity_count: 8.5", "not a whole number", "ALERT_VELOCITY_COUNT"),
        ("velocity_count: 8", 'velocity_count: "8"', "'8' is not a number", "e.g. 8"),
        ("velocity_window_s: 60.0", "velocity_window_s: -60", "out of range", "a number > 0, e.g. 60.0"),
        ("unusual_hour_start: 1", "unusual_hour_start: 24", "out of range", "from 0 to 23"),
        ("high_amount: 10000.0", "high_amount: .inf", "not a finite number", "a number >= 0"),
        ("velocity_count: 8", "velocity_count: [8]", "expected a single value", "write one value"),
    ],
)
def test_wrong_types_and_impossible_values(old: str, new: str, message: str, fix: str) -> None:
    text = TEXT.replace(old, new, 1)
    p = one(text)
    assert p.line == line_of(text, new)
    assert message in p.message and fix in p.fix


def test_enabled_and_severity_are_checked() -> None:
    text = TEXT.replace("    enabled: true", "    enabled: maybe", 1).replace(
        "severity: medium", "severity: urgent", 1
    )
    found = problems(text)
    assert [p.line for p in found] == [line_of(text, "enabled: maybe"), line_of(text, "severity: urgent")]
    assert found[0].fix == "write true or false"
    assert "low, medium, high, critical" in found[1].fix


def test_an_empty_hour_window_is_impossible() -> None:
    text = TEXT.replace("unusual_hour_end: 5", "unusual_hour_end: 1")
    p = one(text)
    assert "could never fire" in p.message and "enabled: false" in p.fix
    assert p.line == line_of(text, "parameters:", after="unusual_hour_high_value:")


def test_missing_pieces() -> None:
    no_severity = "\n".join(line for line in TEXT.splitlines() if line != "    severity: high") + "\n"
    found = problems(no_severity)
    assert {p.path for p in found} == {f"rules.{name}" for name, s in DEFAULT_SEVERITY.items() if s == "high"}
    assert all("'severity' is missing" in p.message for p in found)
    assert one("version: 3\n").message == "no 'rules' section"
    assert one("").message == "the file is empty"


def test_repeated_and_unknown_keys() -> None:
    text = TEXT.replace("velocity_count: 8", "velocity_count: 8\n      velocity_count: 9")
    p = one(text)
    assert p.line == line_of(text, "velocity_count: 9") and p.message == "appears twice"
    p = one(TEXT + "rulez: {}\n")
    assert p.line == line_of(TEXT + "rulez: {}\n", "rulez") and "did you mean 'rules'" in p.fix
    text = TEXT.replace("    severity: high\n", "    severity: high\n    velocity_count: 3\n", 1)
    assert one(text).fix == "move it under rules.high_amount.parameters"


def test_yaml_syntax_errors_name_the_line() -> None:
    text = TEXT.replace("velocity_count: 8", "velocity_count: [8")
    p = one(text)
    assert p.message.startswith("not valid YAML") and p.line >= line_of(text, "velocity_count")
    assert str(p).startswith(f"line {p.line}, column ")


def test_every_problem_is_reported_at_once() -> None:
    text = TEXT.replace("velocity_count: 8", "velocity_count: -1").replace(
        "travel_min_km: 500.0", "travel_min_km: x"
    )
    assert len(problems(text)) == 2


def test_a_rule_cannot_look_further_back_than_the_account_windows() -> None:
    """The consumer keeps STATE_HISTORY_HOURS and STATE_MAX_EVENTS_PER_ACCOUNT of each account."""
    limits = StateLimits(history_s=86_400.0, max_events=10)
    text = TEXT.replace("card_testing_window_s: 600.0", "card_testing_window_s: 90000").replace(
        "velocity_count: 8", "velocity_count: 11"
    )
    with pytest.raises(RuleSetInvalid) as caught:
        load(text, limits=limits)
    count, window = caught.value.problems  # in document order
    assert window.line == line_of(text, "card_testing_window_s: 90000")
    assert "longer than the history each account keeps (86400 s)" in window.message
    assert "STATE_HISTORY_HOURS" in window.fix
    assert count.line == line_of(text, "velocity_count: 11") and "STATE_MAX_EVENTS_PER_ACCOUNT" in count.fix
    assert load(TEXT, limits=limits) == ENV  # the defaults fit
