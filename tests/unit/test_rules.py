"""consumer.rules: each rule fires and stays quiet where it should, on its boundaries, with its numbers."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from consumer import rules
from consumer.account_state import AccountHistory, Event
from consumer.rules import RULES, evaluate, haversine_km, local_hour
from utils.config import RuleThresholds
from utils.models import SCENARIOS, SEVERITIES, Alert, Transaction

T = RuleThresholds()
# 2026-11-24 12:00:00 UTC: midday, so unusual_hour stays quiet unless a test moves the clock.
NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC).timestamp()
NEW_YORK = (40.7128, -74.0060)
LONDON = (51.5074, -0.1278)
PHILADELPHIA = (39.9526, -75.1652)
_ids = itertools.count()


def txn(
    epoch: float = NOON,
    amount: float = 25.0,
    *,
    merchant: str | None = "Corner Shop",
    where: tuple[float, float] | None = NEW_YORK,
    tid: str | None = None,
    scenario: str | None = None,
) -> Transaction:
    lat, lon = where if where is not None else (None, None)
    return Transaction(
        transaction_id=tid or f"t{next(_ids)}",
        account_id="ACC-1",
        transaction_type="purchase",
        amount=amount,
        currency="USD",
        timestamp=datetime.fromtimestamp(epoch, UTC),
        channel="pos",
        country="US",
        merchant=merchant,
        latitude=lat,
        longitude=lon,
        simulated_scenario=scenario,
        kafka_partition=0,
        kafka_offset=next(_ids),
    )


def history(*past: Transaction, max_events: int = 50) -> AccountHistory:
    h = AccountHistory(max_events, 86_400.0)
    for p in past:
        assert h.add(Event.of(p))
    return h


def only(alert: Alert | None, alert_type: str) -> Alert:
    assert alert is not None, f"{alert_type} did not fire"
    assert alert.alert_type == alert_type
    assert alert.severity in SEVERITIES
    assert alert.message.startswith(f"{alert_type}: ")
    orjson.dumps(alert.details)  # must be storable as jsonb: no inf, no NaN, no objects
    return alert


# -- high_amount


@pytest.mark.parametrize(
    ("amount", "severity"),
    [
        (9_999.99, None),
        (10_000.0, "high"),
        (49_999.99, "high"),
        (50_000.0, "critical"),
        (999_999.0, "critical"),
    ],
)
def test_high_amount_boundaries_and_severity(amount: float, severity: str | None) -> None:
    alert = rules.high_amount(txn(amount=amount), history(), T)
    if severity is None:
        assert alert is None
        return
    alert = only(alert, "high_amount")
    assert alert.severity == severity
    assert f"{amount:.2f}" in alert.message and "10000.00" in alert.message
    assert alert.details == {"amount": amount, "currency": "USD", "threshold": 10_000.0}


# -- velocity


def test_velocity_fires_above_the_limit_with_its_numbers() -> None:
    past = [txn(NOON - 50 + i) for i in range(8)]
    alert = only(rules.velocity(txn(NOON), history(*past), T), "velocity")
    assert alert.message == "velocity: 9 transactions in 60s (limit 8)"
    assert alert.details == {"count": 9, "window_s": 60.0, "limit": 8}


def test_velocity_quiet_at_the_limit() -> None:
    past = [txn(NOON - 50 + i) for i in range(7)]
    assert rules.velocity(txn(NOON), history(*past), T) is None


def test_velocity_window_is_inclusive_at_its_start() -> None:
    seven = [txn(NOON - 10 + i) for i in range(7)]
    assert rules.velocity(txn(NOON), history(txn(NOON - 60), *seven), T) is not None
    assert rules.velocity(txn(NOON), history(txn(NOON - 60.001), *seven), T) is None


def test_velocity_ignores_old_and_later_events() -> None:
    old = [txn(NOON - 3_600 + i) for i in range(20)]
    later = [txn(NOON + 1 + i) for i in range(20)]
    assert rules.velocity(txn(NOON), history(*old, *later), T) is None


# -- card_testing


def test_card_testing_fires_on_enough_small_amounts() -> None:
    past = [txn(NOON - 300, 1.0), txn(NOON - 200, 2.0), txn(NOON - 100, 0.5)]
    alert = only(rules.card_testing(txn(NOON, 1.5), history(*past), T), "card_testing")
    assert alert.severity == "high"
    assert "4 amounts <= 2.00 in 600s" in alert.message
    assert alert.details["count"] == 4


def test_card_testing_quiet_with_too_few_small_amounts() -> None:
    past = [txn(NOON - 300, 1.0), txn(NOON - 200, 50.0), txn(NOON - 100, 0.5)]
    assert rules.card_testing(txn(NOON, 1.5), history(*past), T) is None


def test_card_testing_needs_this_amount_small() -> None:
    past = [txn(NOON - 30 * i, 1.0) for i in range(1, 6)]
    assert rules.card_testing(txn(NOON, 2.01), history(*past), T) is None
    assert rules.card_testing(txn(NOON, 2.0), history(*past), T) is not None


def test_card_testing_window() -> None:
    inside = [txn(NOON - 200, 1.0), txn(NOON - 100, 1.0)]
    assert rules.card_testing(txn(NOON, 1.0), history(txn(NOON - 600, 1.0), *inside), T) is not None
    assert rules.card_testing(txn(NOON, 1.0), history(txn(NOON - 601, 1.0), *inside), T) is None


# -- amount_spike


def test_amount_spike_fires_at_the_multiplier() -> None:
    past = [txn(NOON - 3_600 * i, 50.0) for i in range(5, 0, -1)]
    alert = only(rules.amount_spike(txn(NOON, 300.0), history(*past), T), "amount_spike")
    assert (
        "300.00 is 6.0x the mean 50.00 of 5 transactions in the 86400s before it (limit 6x)" in alert.message
    )
    assert alert.details == {
        "amount": 300.0,
        "mean": 50.0,
        "ratio": 6.0,
        "history": 5,
        "window_s": 86_400.0,
        "multiplier": 6.0,
    }


def test_amount_spike_quiet_below_multiplier_min_amount_or_min_history() -> None:
    five_at_100 = [txn(NOON - 3_600 * i, 100.0) for i in range(5, 0, -1)]
    assert rules.amount_spike(txn(NOON, 599.99), history(*five_at_100), T) is None
    assert rules.amount_spike(txn(NOON, 600.0), history(*five_at_100), T) is not None
    five_at_10 = [txn(NOON - 3_600 * i, 10.0) for i in range(5, 0, -1)]
    assert rules.amount_spike(txn(NOON, 299.99), history(*five_at_10), T) is None  # under spike_min_amount
    assert rules.amount_spike(txn(NOON, 1_000.0), history(*five_at_10[:4]), T) is None  # 4 < min history


def test_amount_spike_averages_only_its_event_time_window() -> None:
    """The mean is over [t - window, t] of event time: neither older events nor events later in
    event time (a late arrival must be judged as it would have been on time)."""
    later_small = [txn(NOON + 600 * i, 100.0) for i in range(1, 6)]  # arrived first, happened after
    assert rules.amount_spike(txn(NOON, 700.0), history(*later_small), T) is None
    older = [txn(NOON - 86_400 - 60 * i, 100.0) for i in range(1, 6)]  # more than a day before
    assert rules.amount_spike(txn(NOON, 700.0), history(*older), T) is None
    within = [txn(NOON - 600 * i, 100.0) for i in range(1, 6)]
    assert rules.amount_spike(txn(NOON, 700.0), history(*within, *later_small), T) is not None
    short = replace(T, spike_window_s=1_800.0)  # only 3 of them are in the last half hour
    assert rules.amount_spike(txn(NOON, 700.0), history(*within), short) is None


# -- impossible_travel


def test_haversine_known_distances() -> None:
    assert haversine_km(*NEW_YORK, *LONDON) == pytest.approx(5_570, abs=10)
    assert haversine_km(*NEW_YORK, *NEW_YORK) == 0.0
    assert haversine_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(20_015, abs=5)  # antipodal


def test_impossible_travel_fires_with_its_numbers() -> None:
    past = txn(NOON - 3_600, where=NEW_YORK, tid="prev-1")
    alert = only(rules.impossible_travel(txn(NOON, where=LONDON), history(past), T), "impossible_travel")
    assert alert.severity == "high"
    assert "5570 km in 3600s" in alert.message and "at 5570 km/h" in alert.message
    assert alert.details["previous_transaction_id"] == "prev-1"
    assert alert.details["speed_kmh"] == pytest.approx(5_570, abs=10)


def test_impossible_travel_at_the_same_instant_fires_without_infinity() -> None:
    alert = only(rules.impossible_travel(txn(NOON, where=LONDON), history(txn(NOON)), T), "impossible_travel")
    assert alert.details["speed_kmh"] is None
    assert "instantly" in alert.message


def test_impossible_travel_speed_boundary() -> None:
    km = haversine_km(*NEW_YORK, *LONDON)
    hours_at_limit = km / T.travel_max_kmh
    fast = history(txn(NOON - hours_at_limit * 3_600 + 60))
    slow = history(txn(NOON - hours_at_limit * 3_600 - 60))
    assert rules.impossible_travel(txn(NOON, where=LONDON), fast, T) is not None
    assert rules.impossible_travel(txn(NOON, where=LONDON), slow, T) is None


def test_impossible_travel_quiet_for_short_hops_and_missing_coordinates() -> None:
    assert haversine_km(*NEW_YORK, *PHILADELPHIA) < T.travel_min_km
    assert rules.impossible_travel(txn(NOON, where=PHILADELPHIA), history(txn(NOON)), T) is None
    assert rules.impossible_travel(txn(NOON, where=None), history(txn(NOON - 60)), T) is None
    assert rules.impossible_travel(txn(NOON, where=LONDON), history(txn(NOON - 60, where=None)), T) is None
    assert rules.impossible_travel(txn(NOON, where=LONDON), history(), T) is None


def test_impossible_travel_uses_the_newest_located_event() -> None:
    # The online purchase without coordinates in between does not hide the London one.
    h = history(txn(NOON - 7_200, where=NEW_YORK), txn(NOON - 600, where=LONDON), txn(NOON - 60, where=None))
    assert rules.impossible_travel(txn(NOON, where=LONDON), h, T) is None
    assert rules.impossible_travel(txn(NOON, where=NEW_YORK), h, T) is not None


# -- duplicate


def test_duplicate_fires_on_same_amount_and_merchant() -> None:
    past = txn(NOON - 100, 42.5, merchant="Shop A", tid="first")
    alert = only(rules.duplicate(txn(NOON, 42.5, merchant="Shop A"), history(past), T), "duplicate")
    assert "42.50 at 'Shop A' 100s from first" in alert.message
    assert alert.details["previous_transaction_id"] == "first"
    assert alert.details["seconds_apart"] == 100.0


@pytest.mark.parametrize(
    ("past", "now_merchant", "fires"),
    [
        (dict(epoch=NOON - 300), "Shop A", True),  # window boundary, inclusive
        (dict(epoch=NOON - 301), "Shop A", False),
        (dict(epoch=NOON + 120), "Shop A", False),  # later in event time: never seen from NOON
        (dict(epoch=NOON - 10, amount=42.51), "Shop A", False),
        (dict(epoch=NOON - 10, merchant="Shop B"), "Shop A", False),
        (dict(epoch=NOON - 10, merchant=None), None, False),  # deposits and transfers have no merchant
        (dict(epoch=NOON - 10, tid="same"), "Shop A", False),
    ],
)
def test_duplicate_boundaries(past: dict[str, Any], now_merchant: str | None, fires: bool) -> None:
    past = {"amount": 42.5, "merchant": "Shop A", **past}
    h = history(txn(**past))
    alert = rules.duplicate(txn(NOON, 42.5, merchant=now_merchant, tid="same"), h, T)
    assert (alert is not None) == fires


# -- unusual_hour_high_value


def _at(hh: int, mm: int = 0) -> float:
    return datetime(2026, 11, 24, hh, mm, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("epoch", "where", "amount", "fires"),
    [
        (_at(2, 30), None, 2_000.0, True),
        (_at(1, 0), None, 2_000.0, True),  # start inclusive
        (_at(0, 59), None, 2_000.0, False),
        (_at(5, 0), None, 2_000.0, False),  # end exclusive
        (_at(2, 30), None, 1_999.99, False),
        (_at(10, 0), (34.05, -120.0), 5_000.0, True),  # 10:00 UTC is 02:00 at 120 W
        (_at(16, 30), (35.68, 150.0), 5_000.0, True),  # wraps past midnight: 02:30 at 150 E
        (_at(2, 30), (51.5, 90.0), 5_000.0, False),  # 08:30 at 90 E
    ],
)
def test_unusual_hour_uses_longitude_local_time(
    epoch: float, where: tuple[float, float] | None, amount: float, fires: bool
) -> None:
    alert = rules.unusual_hour_high_value(txn(epoch, amount, where=where), history(), T)
    assert (alert is not None) == fires
    if alert is not None:
        only(alert, "unusual_hour_high_value")
        assert f"{amount:.2f}" in alert.message and "[1, 5)" in alert.message


def test_unusual_hour_window_may_wrap_midnight() -> None:
    t = replace(T, unusual_hour_start=22, unusual_hour_end=4)
    assert rules.unusual_hour_high_value(txn(_at(23), 3_000.0, where=None), history(), t) is not None
    assert rules.unusual_hour_high_value(txn(_at(3), 3_000.0, where=None), history(), t) is not None
    assert rules.unusual_hour_high_value(txn(_at(12), 3_000.0, where=None), history(), t) is None


def test_local_hour() -> None:
    assert local_hour(_at(10, 30), None) == 10.5
    assert local_hour(_at(10, 0), -120.0) == 2.0
    assert local_hour(_at(23, 0), 30.0) == 1.0
    assert local_hour(_at(0, 0), -15.0) == 23.0


# -- the registry


def test_registry_names_are_the_alert_types() -> None:
    assert [name for name, _ in RULES] == [
        "high_amount",
        "velocity",
        "card_testing",
        "amount_spike",
        "impossible_travel",
        "duplicate",
        "unusual_hour_high_value",
    ]
    assert all(rule.__name__ == name for name, rule in RULES)


def test_evaluate_collects_every_firing_rule() -> None:
    past = [txn(NOON - 50 + i, 2_000.0, merchant="Jeweller", where=NEW_YORK) for i in range(8)]
    alerts = evaluate(txn(NOON, 20_000.0, merchant="Jeweller", where=LONDON), history(*past), T)
    assert {a.alert_type for a in alerts} == {"high_amount", "velocity", "impossible_travel", "amount_spike"}
    assert all(a.transaction_id == alerts[0].transaction_id and a.account_id == "ACC-1" for a in alerts)


def test_evaluate_quiet_for_ordinary_purchase() -> None:
    past = [txn(NOON - 3_600 * i, 20.0 + i, merchant=f"Shop {i}") for i in range(20, 0, -1)]
    assert evaluate(txn(NOON, 35.0), history(*past), T) == []


def test_evaluate_does_not_modify_history() -> None:
    h = history(*(txn(NOON - 10 * i) for i in range(10, 0, -1)))
    before = list(h)
    evaluate(txn(NOON, 5_000.0, where=LONDON), h, T)
    assert list(h) == before


# -- ground truth stays unread


class _LabelGuard:
    """A transaction whose ground-truth label explodes when read; everything else passes through."""

    def __init__(self, inner: Transaction) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "simulated_scenario":
            raise AssertionError("a rule read the simulator's ground-truth label")
        return getattr(self._inner, name)


def _scenes() -> list[tuple[Transaction, AccountHistory]]:
    """Situations that make every rule fire at least once."""
    tiny = [txn(NOON - 60 * i, 1.0) for i in range(5, 0, -1)]
    steady = [txn(NOON - 3_600 * i, 30.0) for i in range(6, 0, -1)]
    burst = [txn(NOON - 30 + i, 10.0, merchant="Shop X") for i in range(9)]
    return [
        (txn(NOON, 1.0), history(*tiny)),
        (txn(NOON, 60_000.0, where=LONDON), history(*steady)),
        (txn(NOON, 10.0, merchant="Shop X"), history(*burst)),
        (txn(_at(3), 2_500.0, where=None), history()),
    ]


def test_rules_never_read_the_ground_truth_label() -> None:
    fired = set()
    for transaction, h in _scenes():
        for name, rule in RULES:
            alert = rule(_LabelGuard(transaction), h, T)  # type: ignore[arg-type]
            if alert is not None:
                fired.add(name)
    assert fired == {name for name, _ in RULES}  # every rule was actually exercised


@pytest.mark.parametrize("label", [*SCENARIOS, "anything"])
def test_label_does_not_change_alerts(label: str) -> None:
    for transaction, h in _scenes():
        labelled = replace(transaction, simulated_scenario=label)
        assert evaluate(labelled, h, T) == evaluate(transaction, h, T)
