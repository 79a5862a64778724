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
from consumer.rules import RULES, evaluate
from utils.config import RuleThresholds
from utils.geo import haversine_km, solar_hour
from utils.models import SCENARIOS, SEVERITIES, Alert, Transaction

T = RuleThresholds()
RATES = T.rate_table()
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
    country: str = "US",
    currency: str = "USD",
    ttype: str = "purchase",
    category: str | None = None,
) -> Transaction:
    lat, lon = where if where is not None else (None, None)
    return Transaction(
        transaction_id=tid or f"t{next(_ids)}",
        account_id="ACC-1",
        transaction_type=ttype,
        amount=amount,
        currency=currency,
        amount_base=RATES.to_base(amount, currency),
        timestamp=datetime.fromtimestamp(epoch, UTC),
        channel="pos",
        country=country,
        merchant=merchant,
        merchant_category=category,
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
    assert f"{amount:.2f} USD" in alert.message and "10000.00 USD" in alert.message
    assert alert.details == {
        "amount": amount,
        "currency": "USD",
        "amount_base": amount,
        "base_currency": "USD",
        "direction": "debit",
        "threshold": 10_000.0,
    }


@pytest.mark.parametrize(
    ("amount", "currency", "fires"),
    [
        (1_492_536, "JPY", False),  # 9,999.99 dollars
        (
            1_492_537,
            "JPY",
            True,
        ),  # 9,999.998 rounds to 10,000.00 dollars: thresholds are in the base currency
        (9_500, "EUR", True),  # 10,260 dollars
        (250_000_000, "VND", False),  # 9,750 dollars: a big number, not a big amount
        (10_000, "JPY", False),  # ¥10,000 is 67 dollars, not ten thousand
    ],
)
def test_high_amount_compares_in_the_base_currency(amount: float, currency: str, fires: bool) -> None:
    alert = rules.high_amount(txn(amount=amount, currency=currency), history(), T)
    assert (alert is not None) == fires
    if alert is not None:
        assert f"{currency} (" in alert.message and alert.details["amount_base"] >= 10_000


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
    assert "4 amounts <= 2.00 USD in 600s" in alert.message
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


def test_amount_spike_fires_at_the_multiplier_of_the_median() -> None:
    past = [txn(NOON - 3_600 * i, 50.0) for i in range(5, 0, -1)]
    alert = only(rules.amount_spike(txn(NOON, 400.0), history(*past), T), "amount_spike")
    assert (
        "400.00 USD is 8.0x the median 50.00 USD of 5 debits in the previous 86400s (limit 8x)"
        in alert.message
    )
    assert alert.details == {
        "amount": 400.0,
        "currency": "USD",
        "amount_base": 400.0,
        "median": 50.0,
        "ratio": 8.0,
        "direction": "debit",
        "history": 5,
        "window_s": 86_400.0,
        "multiplier": 8.0,
    }


def test_amount_spike_quiet_below_multiplier_min_amount_or_min_history() -> None:
    five_at_100 = [txn(NOON - 3_600 * i, 100.0) for i in range(5, 0, -1)]
    assert rules.amount_spike(txn(NOON, 799.99), history(*five_at_100), T) is None
    assert rules.amount_spike(txn(NOON, 800.0), history(*five_at_100), T) is not None
    five_at_10 = [txn(NOON - 3_600 * i, 10.0) for i in range(5, 0, -1)]
    assert rules.amount_spike(txn(NOON, 299.99), history(*five_at_10), T) is None  # under spike_min_amount
    assert rules.amount_spike(txn(NOON, 1_000.0), history(*five_at_10[:4]), T) is None  # 4 < min history


def test_amount_spike_baseline_is_the_window_before_the_transaction() -> None:
    # Older than the window, at the same instant, or later in event time: not the baseline.
    old = [txn(NOON - 86_400 - 60 * i, 10.0) for i in range(5, 0, -1)]
    same_and_later = [txn(NOON, 10.0), *(txn(NOON + 60 * i, 10.0) for i in range(1, 5))]
    assert rules.amount_spike(txn(NOON, 1_000.0), history(*old, *same_and_later), T) is None
    inside = [txn(NOON - 86_400 + 60 * i, 10.0) for i in range(5)]
    assert rules.amount_spike(txn(NOON, 1_000.0), history(*inside), T) is not None


def test_amount_spike_baseline_shrugs_off_outliers_and_other_incidents() -> None:
    usual = [txn(NOON - 3_600 * i, 40.0 + i) for i in range(12, 0, -1)]
    # An earlier high-amount incident would lift a mean tenfold; the median barely moves.
    earlier_incident = [txn(NOON - 1_800, 50_000.0), txn(NOON - 1_700, 30_000.0)]
    alert = rules.amount_spike(txn(NOON, 700.0), history(*usual, *earlier_incident), T)
    assert alert is not None and alert.details["median"] == 47.5  # of 41..52, 50,000 and 30,000
    # Card-testing probes would drag a median down until ordinary payments looked like spikes.
    probes = [txn(NOON - 600 + 30 * i, 1.0) for i in range(15)]
    assert rules.amount_spike(txn(NOON, 300.0), history(*usual, *probes), T) is None


def test_amount_spike_compares_in_the_base_currency() -> None:
    # A Tokyo account: ¥6,000 habits, then ¥60,000 (x10) and a $6,000-equivalent in a big number.
    yen = [txn(NOON - 3_600 * i, 6_000, currency="JPY", country="JP") for i in range(6, 0, -1)]
    assert rules.amount_spike(txn(NOON, 60_000, currency="JPY", country="JP"), history(*yen), T) is not None
    assert (
        rules.amount_spike(txn(NOON, 40_000, currency="JPY", country="JP"), history(*yen), T) is None
    )  # 268 USD


# -- impossible_travel


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
    h = history(
        txn(NOON - 30 * 3_600, where=NEW_YORK), txn(NOON - 600, where=LONDON), txn(NOON - 60, where=None)
    )
    assert rules.impossible_travel(txn(NOON, where=LONDON), h, T) is None
    assert rules.impossible_travel(txn(NOON, where=NEW_YORK), h, T) is not None


def test_impossible_travel_fires_once_per_journey_not_on_the_way_back() -> None:
    home, away = txn(NOON - 7_200, where=NEW_YORK), txn(NOON - 3_600, where=LONDON)
    assert rules.impossible_travel(away, history(home), T) is not None  # the jump: alerted
    # The owner pays at home again an hour later: back where the account was before the jump.
    assert rules.impossible_travel(txn(NOON, where=NEW_YORK), history(home, away), T) is None
    # Somewhere else again, impossibly fast: a new alert.
    assert rules.impossible_travel(txn(NOON, where=(35.68, 139.69)), history(home, away), T) is not None


def test_way_back_only_after_an_impossible_jump() -> None:
    # New York, then London eight hours later (a flight), then New York an hour later: the last
    # hop is the impossible one, nothing was alerted before it.
    home, flown = txn(NOON - 8 * 3_600 - 3_600, where=NEW_YORK), txn(NOON - 3_600, where=LONDON)
    assert rules.impossible_travel(flown, history(home), T) is None
    assert rules.impossible_travel(txn(NOON, where=NEW_YORK), history(home, flown), T) is not None


def test_way_back_looks_past_payments_at_the_far_place_and_without_coordinates() -> None:
    home = txn(NOON - 7_200, where=NEW_YORK)
    abroad = [
        txn(NOON - 3_600, where=LONDON),
        txn(NOON - 3_000, where=(51.52, -0.10)),
        txn(NOON - 60, where=None),
    ]
    assert rules.impossible_travel(txn(NOON, where=PHILADELPHIA), history(home, *abroad), T) is None


# -- duplicate


def test_duplicate_fires_on_same_amount_and_merchant() -> None:
    past = txn(NOON - 100, 42.5, merchant="Shop A", tid="first")
    alert = only(rules.duplicate(txn(NOON, 42.5, merchant="Shop A"), history(past), T), "duplicate")
    assert "42.50 USD at 'Shop A' 100s from first" in alert.message
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


def test_duplicate_compares_the_amount_as_sent() -> None:
    # ¥1,980 and ¥1,981 are both 13.27 dollars to the cent, and still two different amounts.
    h = history(txn(NOON - 60, 1_980, merchant="Shop A", currency="JPY", country="JP"))
    assert rules.duplicate(txn(NOON, 1_981, merchant="Shop A", currency="JPY", country="JP"), h, T) is None
    assert (
        rules.duplicate(txn(NOON, 1_980, merchant="Shop A", currency="JPY", country="JP"), h, T) is not None
    )
    # The same number in another currency is another amount.
    assert rules.duplicate(txn(NOON, 1_980, merchant="Shop A", currency="KRW", country="JP"), h, T) is None


def test_card_testing_amounts_are_small_in_the_base_currency() -> None:
    probes = [txn(NOON - 60 * i, 250, currency="JPY", country="JP") for i in range(3, 0, -1)]  # $1.68 each
    assert rules.card_testing(txn(NOON, 290, currency="JPY", country="JP"), history(*probes), T) is not None
    yen_300 = [txn(NOON - 60 * i, 300, currency="JPY", country="JP") for i in range(3, 0, -1)]  # $2.01 each
    assert rules.card_testing(txn(NOON, 300, currency="JPY", country="JP"), history(*yen_300), T) is None


# -- unusual_hour_high_value


def _at(hh: int, mm: int = 0) -> float:
    return datetime(2026, 11, 24, hh, mm, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("epoch", "where", "country", "amount", "fires"),
    [
        # Card not present (no coordinates): the country's civil time, whatever the zone rules say.
        (_at(17, 30), None, "JP", 2_000.0, True),  # 02:30 in Tokyo (UTC+9)
        (_at(16, 0), None, "JP", 2_000.0, True),  # 01:00, start inclusive
        (_at(15, 59), None, "JP", 2_000.0, False),
        (_at(20, 0), None, "JP", 2_000.0, False),  # 05:00, end exclusive
        (_at(17, 30), None, "JP", 1_999.99, False),
        (_at(1, 30), None, "GB", 5_000.0, True),  # 01:30 in London (GMT in November)
        (_at(1, 30), None, "DE", 5_000.0, True),  # 02:30 in Berlin (CET)
        (_at(4, 30), None, "DE", 5_000.0, False),  # 05:30 in Berlin; 04:30 by longitude: civil time wins
        # The US spans six hours: without coordinates and without a located past, unknown.
        (_at(8, 0), None, "US", 5_000.0, False),
        # With coordinates where the zones disagree: solar time at the payment.
        (_at(10, 0), (34.05, -120.0), "US", 5_000.0, True),  # 02:00 at 120 W
        (_at(2, 30), (40.7, -74.0), "US", 5_000.0, False),  # 21:34 at 74 W
    ],
)
def test_unusual_hour_uses_the_local_clock(
    epoch: float, where: tuple[float, float] | None, country: str, amount: float, fires: bool
) -> None:
    alert = rules.unusual_hour_high_value(txn(epoch, amount, where=where, country=country), history(), T)
    assert (alert is not None) == fires
    if alert is not None:
        only(alert, "unusual_hour_high_value")
        assert f"{amount:.2f}" in alert.message and "[1, 5)" in alert.message


def test_unusual_hour_without_coordinates_uses_where_the_account_was_last_seen() -> None:
    # A US card-not-present payment at 08:00 UTC: 03:00 in New York, 22:00 in Honolulu. The
    # account's last located payment was in New York, so it is night where the cardholder is.
    seen = history(txn(_at(7, 0), 20.0, where=NEW_YORK))
    alert = only(
        rules.unusual_hour_high_value(txn(_at(8, 0), 5_000.0, where=None), seen, T), "unusual_hour_high_value"
    )
    assert "last seen at longitude -74" in alert.message
    honolulu = history(txn(_at(7, 0), 20.0, where=(21.3, -157.9)))
    assert rules.unusual_hour_high_value(txn(_at(8, 0), 5_000.0, where=None), honolulu, T) is None


def test_unusual_hour_threshold_is_in_the_base_currency() -> None:
    at_night = _at(17, 30)  # 02:30 in Tokyo
    assert rules.unusual_hour_high_value(
        txn(at_night, 298_508, where=None, country="JP", currency="JPY"), history(), T
    )
    assert (
        rules.unusual_hour_high_value(
            txn(at_night, 298_000, where=None, country="JP", currency="JPY"), history(), T
        )
        is None
    )


def test_unusual_hour_window_may_wrap_midnight() -> None:
    t = replace(T, unusual_hour_start=22, unusual_hour_end=4)

    def tokyo(epoch: float) -> Transaction:
        return txn(epoch, 3_000.0, where=None, country="JP")

    assert rules.unusual_hour_high_value(tokyo(_at(14)), history(), t) is not None  # 23:00
    assert rules.unusual_hour_high_value(tokyo(_at(18)), history(), t) is not None  # 03:00
    assert rules.unusual_hour_high_value(tokyo(_at(3)), history(), t) is None  # 12:00


def test_solar_hour() -> None:
    assert solar_hour(_at(10, 30), 0.0) == 10.5
    assert solar_hour(_at(10, 0), -120.0) == 2.0
    assert solar_hour(_at(23, 0), 30.0) == 1.0
    assert solar_hour(_at(0, 0), -15.0) == 23.0


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
        "pass_through",
        "refund_abuse",
        "account_takeover",
        "structuring",
        "invoice_fraud",
        "dormant_reactivation",
        "high_risk_card_burst",
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
        if name in ("simulated_scenario", "simulated_incident"):
            raise AssertionError(f"a rule read the simulator's ground truth ({name})")
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
        (txn(_at(18), 2_500.0, where=None, country="JP"), history()),
        *typology_scenes(),
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
        labelled = replace(transaction, simulated_scenario=label, simulated_incident=f"incident-{label}")
        assert evaluate(labelled, h, T) == evaluate(transaction, h, T)


def typology_scenes() -> list[tuple[Transaction, AccountHistory]]:
    from tests.unit.test_typology_rules import scenes

    return scenes()
