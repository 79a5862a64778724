"""Alert rules as values: plain functions in one registry, thresholds from settings.

Each rule is `(txn, history, thresholds) -> Alert | None` and runs BEFORE `txn` joins its
account's history, so `history` holds only earlier transactions (a message replayed after an
operator's rewind may meet its own stored copy there; its alerts are never stored, since only
rows a batch inserts get alerts). Adding a rule is adding one function, one line in `RULES`,
and its tests.

Event time only: a rule sees exactly the account's earlier-processed events whose timestamps lie
in [t - window, t], t being the transaction's own timestamp. Events later than t in event time
(that arrived earlier) are never counted, so the alerts depend on the stream, not on arrival
luck or on when the consumer happened to run. The history itself is bounded by count, and no
rule looks further back than STATE_HISTORY_HOURS before the transaction it evaluates
(`AccountHistory.floor`: windows are capped by it; consumer/account_state.py). The simulator's
`simulated_scenario` label is ground truth for measuring these rules, so no rule may read it
(tests/unit/test_rules.py checks).

Amounts are compared in the base currency (`Transaction.amount_base`, converted by validation
with the rate table of utils/money.py; the account windows hold base amounts too), so a
threshold of 10,000 means the same money in yen as in dollars.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from consumer.account_state import AccountHistory, Event
from utils.config import RuleThresholds
from utils.geo import EARTH_RADIUS_KM, country_zones, haversine_km, solar_hour, zone_hour
from utils.models import Alert, Transaction
from utils.money import MINOR_UNITS

__all__ = [
    "ALL_RULES",
    "RULES",
    "Rule",
    "amount_spike",
    "card_testing",
    "duplicate",
    "evaluate",
    "high_amount",
    "impossible_travel",
    "local_time",
    "unusual_hour_high_value",
    "velocity",
]

Rule = Callable[[Transaction, AccountHistory, RuleThresholds], Alert | None]

_KM_PER_DEGREE = EARTH_RADIUS_KM * math.pi / 180.0
_HALF_CIRCUMFERENCE_KM = EARTH_RADIUS_KM * math.pi
_CRITICAL_MULTIPLE = 5.0


def _money(txn: Transaction, base: str) -> str:
    """How an alert shows an amount: as sent, and in the base currency when that differs."""
    sent = f"{txn.amount:.{MINOR_UNITS[txn.currency]}f} {txn.currency}"
    return sent if txn.currency == base else f"{sent} ({txn.amount_base:.2f} {base})"


def high_amount(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    amount = txn.amount_base
    if amount < t.high_amount:
        return None
    critical = amount >= _CRITICAL_MULTIPLE * t.high_amount
    base = t.base_currency
    return Alert(
        txn.transaction_id,
        txn.account_id,
        "high_amount",
        "critical" if critical else "high",
        f"high_amount: {_money(txn, base)} >= {t.high_amount:.2f} {base}"
        + (f" (critical from {_CRITICAL_MULTIPLE * t.high_amount:.2f})" if critical else ""),
        {
            "amount": txn.amount,
            "currency": txn.currency,
            "amount_base": amount,
            "base_currency": base,
            "threshold": t.high_amount,
        },
    )


def velocity(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    # Cheap exit before touching the clock: too few events in all of history to exceed the limit.
    if len(history.events) + 1 <= t.velocity_count:
        return None
    now = txn.epoch
    window = t.velocity_window_s
    count = 1 + history.count_between(now - min(window, history.max_age_s), now)
    if count <= t.velocity_count:
        return None
    return Alert(
        txn.transaction_id,
        txn.account_id,
        "velocity",
        "medium",
        f"velocity: {count} transactions in {window:g}s (limit {t.velocity_count})",
        {"count": count, "window_s": window, "limit": t.velocity_count},
    )


def card_testing(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    small = t.card_testing_max_amount
    if txn.amount_base > small or len(history.events) + 1 < t.card_testing_count:
        return None
    now = txn.epoch
    start = now - min(t.card_testing_window_s, history.max_age_s)
    count = 1
    for event in history.newest_first():
        epoch = event.epoch
        if epoch < start:
            break
        if epoch <= now and event.amount_base <= small:
            count += 1
    if count < t.card_testing_count:
        return None
    return Alert(
        txn.transaction_id,
        txn.account_id,
        "card_testing",
        "high",
        f"card_testing: {count} amounts <= {small:.2f} {t.base_currency} in {t.card_testing_window_s:g}s "
        f"(threshold {t.card_testing_count})",
        {
            "count": count,
            "max_amount": small,
            "window_s": t.card_testing_window_s,
            "threshold": t.card_testing_count,
        },
    )


def amount_spike(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    """An amount far above the account's usual: `spike_multiplier` times the median of its own
    amounts over the `spike_window_s` of event time before this transaction. The median, not the
    mean: one earlier high-value payment (an incident of its own, a yearly rent) would lift a mean
    for a whole day and hide the next spike. Probe-sized amounts (card testing) stay out of it."""
    amount = txn.amount_base
    if amount < t.spike_min_amount or len(history.events) < t.spike_min_history:
        return None
    now = txn.epoch
    start = now - min(t.spike_window_s, history.max_age_s)
    probe = t.card_testing_max_amount
    past = []
    for event in history.newest_first():
        epoch = event.epoch
        if epoch < start:
            break
        if epoch < now and event.amount_base > probe:
            past.append(event.amount_base)
    n = len(past)
    if n < t.spike_min_history:
        return None
    past.sort()
    median = past[n // 2] if n % 2 else (past[n // 2 - 1] + past[n // 2]) / 2.0
    if median <= 0.0 or amount < t.spike_multiplier * median:
        return None
    ratio = amount / median
    base = t.base_currency
    return Alert(
        txn.transaction_id,
        txn.account_id,
        "amount_spike",
        "medium",
        f"amount_spike: {_money(txn, base)} is {ratio:.1f}x the median {median:.2f} {base} of {n} "
        f"transactions in the previous {t.spike_window_s:g}s (limit {t.spike_multiplier:g}x)",
        {
            "amount": txn.amount,
            "currency": txn.currency,
            "amount_base": amount,
            "median": round(median, 2),
            "ratio": round(ratio, 2),
            "history": n,
            "window_s": t.spike_window_s,
            "multiplier": t.spike_multiplier,
        },
    )


def impossible_travel(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    """Too far from the previous located payment for the time between them. Not fired on the way
    back: when the previous payment was itself an impossible jump away from where the account
    had been, and this one is back there, the journey has been alerted once already (its first
    leg), and the owner paying at home again is no new incident."""
    lat, lon = txn.latitude, txn.longitude
    if lat is None or lon is None:
        return None
    now = txn.epoch
    previous = history.last_located(now)
    if previous is None or previous.latitude is None or previous.longitude is None:
        return None
    if previous.epoch < history.floor(now):
        return None  # out of sight (STATE_HISTORY_HOURS)
    elapsed = now - previous.epoch
    # Two cheap upper bounds skip the trigonometry in the common case (same city, or hours
    # apart): the distance is at most a degree-sum of the differences, and at most half the
    # circumference whatever the coordinates.
    dlon = abs(lon - previous.longitude)
    if (abs(lat - previous.latitude) + min(dlon, 360.0 - dlon)) * _KM_PER_DEGREE < t.travel_min_km:
        return None
    if elapsed / 3600.0 * t.travel_max_kmh >= _HALF_CIRCUMFERENCE_KM:
        return None
    km = haversine_km(previous.latitude, previous.longitude, lat, lon)
    if km < t.travel_min_km:
        return None
    # Same instant, different place: infinitely fast, and JSON has no infinity, hence None.
    kmh = km / (elapsed / 3600.0) if elapsed > 0 else None
    if kmh is not None and kmh <= t.travel_max_kmh:
        return None
    if _way_back(txn, previous, history, t):
        return None
    speed = "instantly" if kmh is None else f"at {kmh:.0f} km/h"
    return Alert(
        txn.transaction_id,
        txn.account_id,
        "impossible_travel",
        "high",
        f"impossible_travel: {km:.0f} km in {elapsed:.0f}s from {previous.country} {speed} "
        f"(limit {t.travel_max_kmh:g} km/h)",
        {
            "distance_km": round(km, 1),
            "elapsed_s": round(elapsed, 1),
            "speed_kmh": None if kmh is None else round(kmh, 1),
            "limit_kmh": t.travel_max_kmh,
            "previous_transaction_id": previous.transaction_id,
            "previous_country": previous.country,
        },
    )


def _way_back(txn: Transaction, previous: Event, history: AccountHistory, t: RuleThresholds) -> bool:
    """Whether `txn` returns to where the account was before `previous`, and `previous` was an
    impossible jump from there."""
    assert txn.latitude is not None and txn.longitude is not None
    assert previous.latitude is not None and previous.longitude is not None
    floor = history.floor(txn.epoch)
    for before in history.newest_first():  # the last located payment away from `previous`
        if before.epoch < floor:
            return False
        if before.epoch >= previous.epoch or before.latitude is None or before.longitude is None:
            continue
        apart = haversine_km(before.latitude, before.longitude, previous.latitude, previous.longitude)
        if apart < t.travel_min_km:
            continue  # still at `previous`'s place: look further back
        back_home = (
            haversine_km(before.latitude, before.longitude, txn.latitude, txn.longitude) < t.travel_min_km
        )
        hours = (previous.epoch - before.epoch) / 3600.0
        return back_home and (hours <= 0.0 or apart / hours > t.travel_max_kmh)
    return False


def duplicate(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    merchant = txn.merchant
    if merchant is None or not history.events:
        return None
    now = txn.epoch
    start = now - min(t.duplicate_window_s, history.max_age_s)
    # The amount as sent: two yen amounts a yen apart convert to the same cent of a dollar.
    amount, currency, tid = txn.amount, txn.currency, txn.transaction_id
    for event in history.newest_first():
        epoch = event.epoch
        if epoch < start:
            break
        # Amounts from "12.30" and 12.3 parse to the same float, so == is exact here.
        if (
            event.amount == amount
            and event.currency == currency
            and epoch <= now
            and event.merchant == merchant
            and event.transaction_id != tid
        ):
            apart = now - epoch
            return Alert(
                txn.transaction_id,
                txn.account_id,
                "duplicate",
                "medium",
                f"duplicate: {_money(txn, t.base_currency)} at {merchant!r} {apart:.0f}s from "
                f"{event.transaction_id} "
                f"(window {t.duplicate_window_s:g}s)",
                {
                    "amount": amount,
                    "merchant": merchant,
                    "seconds_apart": round(apart, 1),
                    "window_s": t.duplicate_window_s,
                    "previous_transaction_id": event.transaction_id,
                },
            )
    return None


def local_time(
    txn: Transaction, history: AccountHistory, start: int, end: int
) -> tuple[bool, float, str] | None:
    """(inside [start, end), local hour, basis) for `txn`, or None when its local time is unknown.

    Civil time of the country's IANA zones when they agree on inside/outside (most countries
    have one zone; card-not-present payments carry a country but no coordinates). Where they
    disagree (the US spans six hours), solar time at the payment's longitude, or else at the
    account's last located payment: where the cardholder was last seen.
    """
    epoch = txn.epoch
    zones = country_zones(txn.country)
    verdict: bool | None = None
    hour = 0.0
    for zone in zones:
        h = zone_hour(epoch, zone)
        inside = _within(h, start, end)
        if verdict is None:
            verdict, hour = inside, h
        elif inside != verdict:
            verdict = None
            break
    if verdict is not None:
        return verdict, hour, f"{txn.country} civil time ({zones[0]})"
    longitude, basis = txn.longitude, "longitude"
    if longitude is None:
        seen = history.last_located(epoch)
        if seen is None or seen.longitude is None:
            return None
        longitude, basis = seen.longitude, "last seen at longitude"
    h = solar_hour(epoch, longitude)
    return _within(h, start, end), h, f"solar time, {basis} {longitude:g}"


def _within(hour: float, start: int, end: int) -> bool:
    # [start, end) on the fractional hour is the same as floor(hour) in [start, end) for whole
    # hours; start > end means the window wraps midnight (e.g. 22 to 4).
    return start <= hour < end if start <= end else (hour >= start or hour < end)


def unusual_hour_high_value(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    amount = txn.amount_base
    if amount < t.unusual_hour_min_amount:
        return None
    start, end = t.unusual_hour_start, t.unusual_hour_end
    local = local_time(txn, history, start, end)
    if local is None or not local[0]:
        return None
    _inside, hour, basis = local
    return Alert(
        txn.transaction_id,
        txn.account_id,
        "unusual_hour_high_value",
        "medium",
        f"unusual_hour_high_value: {_money(txn, t.base_currency)} at local hour {hour:.1f} ({basis}) "
        f"in [{start}, {end}) and >= {t.unusual_hour_min_amount:.2f} {t.base_currency}",
        {
            "amount": txn.amount,
            "currency": txn.currency,
            "amount_base": amount,
            "local_hour": round(hour, 2),
            "basis": basis,
            "window": [start, end],
            "min_amount": t.unusual_hour_min_amount,
        },
    )


RULES: tuple[tuple[str, Rule], ...] = (
    ("high_amount", high_amount),
    ("velocity", velocity),
    ("card_testing", card_testing),
    ("amount_spike", amount_spike),
    ("impossible_travel", impossible_travel),
    ("duplicate", duplicate),
    ("unusual_hour_high_value", unusual_hour_high_value),
)


ALL_RULES: tuple[Rule, ...] = tuple(rule for _name, rule in RULES)  # per message: no unpacking there


def evaluate(
    txn: Transaction, history: AccountHistory, thresholds: RuleThresholds, rules: Sequence[Rule] = ALL_RULES
) -> list[Alert]:
    """Every alert `txn` raises against its account's history (which must not contain it yet),
    from `rules` (a rule set's enabled ones), in RULES order."""
    alerts = []
    for rule in rules:
        alert = rule(txn, history, thresholds)
        if alert is not None:
            alerts.append(alert)
    return alerts
