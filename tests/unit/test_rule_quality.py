"""utils.rule_quality: per-rule recall over incidents and precision over alerts."""

from __future__ import annotations

import pytest

from utils.models import SCENARIOS
from utils.rule_quality import RULE_SCENARIO, format_table, score_rules


def by_rule(*args: object, **kw: object) -> dict[str, object]:
    return {s.alert_type: s for s in score_rules(*args, **kw)}  # type: ignore[arg-type]


def test_every_rule_has_a_scenario_of_its_own() -> None:
    assert set(RULE_SCENARIO.values()) <= set(SCENARIOS)
    assert len(set(RULE_SCENARIO.values())) == len(RULE_SCENARIO)


def test_recall_counts_incidents_caught_by_any_of_their_messages() -> None:
    incidents = {"i1": "card_testing", "i2": "card_testing", "i3": "card_testing", "i4": "high_amount"}
    alerts = [
        ("card_testing", "i1"),
        ("card_testing", "i1"),  # two alerts on one incident: caught once
        ("card_testing", "i2"),
        ("card_testing", None),  # ordinary traffic
        ("card_testing", "i4"),  # another incident: deserved, but not a catch of card testing
    ]
    s = by_rule(2_000, incidents, alerts)["card_testing"]
    assert (s.incidents, s.caught, s.alerts, s.alerts_on_incidents) == (3, 2, 5, 4)  # type: ignore[attr-defined]
    assert s.recall == pytest.approx(2 / 3) and s.precision == pytest.approx(4 / 5)  # type: ignore[attr-defined]
    assert s.alerts_per_1000 == 2.5  # type: ignore[attr-defined]


def test_undefined_figures_are_none_not_zero() -> None:
    scores = by_rule(1_000, {"i1": "high_amount"}, [])
    velocity = scores["velocity"]
    assert velocity.incidents == 0 and velocity.recall is None and velocity.precision is None  # type: ignore[attr-defined]
    assert scores["high_amount"].recall == 0.0  # type: ignore[attr-defined]
    real_stream = by_rule(1_000, {}, [("velocity", None)])["velocity"]
    assert real_stream.precision is None and real_stream.alerts == 1  # type: ignore[attr-defined]
    assert by_rule(0, {}, [])["velocity"].alerts_per_1000 is None  # type: ignore[attr-defined]


def test_rules_come_out_in_the_order_asked_and_the_table_shows_them() -> None:
    scores = score_rules(100, {"i": "rapid_repeat"}, [("duplicate", "i")], rules=["duplicate", "velocity"])
    assert [s.alert_type for s in scores] == ["duplicate", "velocity"]
    table = format_table(scores)
    assert "| `duplicate` | rapid_repeat | 1 | 1 | 100.0 % | 1 | 1 | 100.0 % | 10.00 |" in table
    assert "| `velocity` | velocity_burst | 0 | 0 | – | 0 | 0 | – | 0.00 |" in table
    assert scores[0].as_dict()["recall"] == 1.0


def test_alerts_outside_the_scope_catch_its_incidents_without_counting_as_its_alerts() -> None:
    # A day's scope: i1 began on the day and was alerted only past midnight; i9 began the day
    # before (not in scope) and its alert on this day is deserved but no catch.
    incidents = {"i1": "impossible_travel", "i2": "impossible_travel"}
    s = by_rule(
        1_000,
        incidents,
        [("impossible_travel", "i9"), ("impossible_travel", None)],
        caught_elsewhere=[("impossible_travel", "i1"), ("high_amount", "i2"), ("impossible_travel", "i7")],
    )["impossible_travel"]
    assert (s.incidents, s.caught, s.alerts, s.alerts_on_incidents) == (2, 1, 2, 1)  # type: ignore[attr-defined]
    assert s.recall == 0.5 and s.precision == 0.5  # type: ignore[attr-defined]


def test_a_scope_with_labels_but_no_incident_of_its_own_still_has_precision() -> None:
    # The hour after midnight holding only the end of yesterday's incident i9.
    alerts = [("card_testing", "i9"), ("card_testing", None)]
    assert by_rule(100, {}, alerts)["card_testing"].precision is None  # type: ignore[attr-defined]
    s = by_rule(100, {}, alerts, ground_truth=True)["card_testing"]
    assert s.precision == 0.5 and s.recall is None  # type: ignore[attr-defined]
    unlabelled = by_rule(100, {"i1": "card_testing"}, alerts, ground_truth=False)["card_testing"]
    assert unlabelled.precision is None  # type: ignore[attr-defined]


def test_a_rule_without_a_scenario_is_scored_on_its_alerts_only() -> None:
    scores = score_rules(
        100, {"i1": "card_testing"}, [("retired_rule", "i1"), ("retired_rule", None)], rules=["retired_rule"]
    )
    [s] = scores
    assert (s.scenario, s.incidents, s.caught, s.recall) == (None, 0, 0, None)
    assert s.precision == 0.5 and s.alerts_per_1000 == 20.0
    assert "| `retired_rule` | – | 0 | 0 | – | 2 | 1 | 50.0 % | 20.00 |" in format_table(scores)
