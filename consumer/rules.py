"""Alert rules as values: plain functions in one registry, thresholds from settings.

Each rule is `(txn, history, thresholds) -> Alert | None` and runs BEFORE `txn` joins its
account's history, so `history` holds only earlier transactions (a message replayed after an
operator's rewind may meet its own stored copy there; its alerts are never stored, since only
rows a batch inserts get alerts). Adding a rule is adding one function, one line in `RULES`,
and its tests.

Event time only: a rule sees exactly the account's earlier-processed events whose timestamps lie
in [t - window, t], t being the transaction's own timestamp. Events later than t in event time
(that arrived earlier) are never counted, so the alerts depend on the stream, not on arrival
luck or on when the consumer happened to run. The history itself is bounded by count and by age
relative to the account's newest event (consumer/account_state.py). The simulator's
`simulated_scenario` label is ground truth for measuring these rules, so no rule may read it
(tests/unit/test_rules.py checks).

Amount thresholds apply to the amount as sent, in whatever currency it is in.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from consumer.account_state import AccountHistory
from utils.config import RuleThresholds
from utils.models import Alert, Transaction

__all__ = [
    "RULES",
    "Rule",
    "amount_spike",
    "card_testing",
    "duplicate",
    "evaluate",
    "haversine_km",
    "high_amount",
    "impossible_travel",
    "local_hour",
    "unusual_hour_high_value",
    "velocity",
]

Rule = Callable[[Transaction, AccountHistory, RuleThresholds], Alert | None]

_EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)
_KM_PER_DEGREE = _EARTH_RADIUS_KM * math.pi / 180.0
_HALF_CIRCUMFERENCE_KM = _EARTH_RADIUS_KM * math.pi
_CRITICAL_MULTIPLE = 5.0


def high_amount(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    amount = txn.amount
    if amount < t.high_amount:
        return None
    critical = amount >= _CRITICAL_MULTIPLE * t.high_amount
    return Alert(
        txn.transaction_id,
        txn.account_id,
        "high_amount",
        "critical" if critical else "high",
        f"high_amount: {amount:.2f} {txn.currency} >= {t.high_amount:.2f}"
        + (f" (critical from {_CRITICAL_MULTIPLE * t.high_amount:.2f})" if critical else ""),
        {"amount": amount, "currency": txn.currency, "threshold": t.high_amount},
    )


def velocity(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    # Cheap exit before touching the clock: too few events in all of history to exceed the limit.
    if len(history.events) + 1 <= t.velocity_count:
        return None
    now = txn.epoch
    window = t.velocity_window_s
    count = 1 + history.count_between(now - window, now)
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
    if txn.amount > small or len(history.events) + 1 < t.card_testing_count:
        return None
    now = txn.epoch
    start = now - t.card_testing_window_s
    count = 1
    for event in history.newest_first():
        epoch = event.epoch
        if epoch < start:
            break
        if epoch <= now and event.amount <= small:
            count += 1
    if count < t.card_testing_count:
        return None
    return Alert(
        txn.transaction_id,
        txn.account_id,
        "card_testing",
        "high",
        f"card_testing: {count} amounts <= {small:.2f} in {t.card_testing_window_s:g}s "
        f"(threshold {t.card_testing_count})",
        {
            "count": count,
            "max_amount": small,
            "window_s": t.card_testing_window_s,
            "threshold": t.card_testing_count,
        },
    )


def amount_spike(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    amount = txn.amount
    if amount < t.spike_min_amount or len(history.events) < t.spike_min_history:
        return None
    now = txn.epoch
    n, mean = history.mean_between(now - t.spike_window_s, now)
    if n < t.spike_min_history or mean <= 0.0 or amount < t.spike_multiplier * mean:
        return None
    ratio = amount / mean
    return Alert(
        txn.transaction_id,
        txn.account_id,
        "amount_spike",
        "medium",
        f"amount_spike: {amount:.2f} is {ratio:.1f}x the mean {mean:.2f} of {n} transactions "
        f"in the {t.spike_window_s:g}s before it (limit {t.spike_multiplier:g}x)",
        {
            "amount": amount,
            "mean": round(mean, 2),
            "ratio": round(ratio, 2),
            "history": n,
            "window_s": t.spike_window_s,
            "multiplier": t.spike_multiplier,
        },
    )


def impossible_travel(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    lat, lon = txn.latitude, txn.longitude
    if lat is None or lon is None:
        return None
    now = txn.epoch
    previous = history.last_located(now)
    if previous is None or previous.latitude is None or previous.longitude is None:
        return None
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


def duplicate(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    merchant = txn.merchant
    if merchant is None or not history.events:
        return None
    now = txn.epoch
    start = now - t.duplicate_window_s
    amount, tid = txn.amount, txn.transaction_id
    for event in history.newest_first():
        epoch = event.epoch
        if epoch < start:
            break
        # Amounts from "12.30" and 12.3 parse to the same float, so == is exact here.
        if (
            event.amount == amount
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
                f"duplicate: {amount:.2f} at {merchant!r} {apart:.0f}s from {event.transaction_id} "
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


def unusual_hour_high_value(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    amount = txn.amount
    if amount < t.unusual_hour_min_amount:
        return None
    hour = local_hour(txn.epoch, txn.longitude)
    start, end = t.unusual_hour_start, t.unusual_hour_end
    # [start, end) on the fractional hour is the same as floor(hour) in [start, end) for whole
    # hours; start > end means the window wraps midnight (e.g. 22 to 4).
    inside = start <= hour < end if start <= end else (hour >= start or hour < end)
    if not inside:
        return None
    basis = "UTC" if txn.longitude is None else f"longitude {txn.longitude:g}"
    return Alert(
        txn.transaction_id,
        txn.account_id,
        "unusual_hour_high_value",
        "medium",
        f"unusual_hour_high_value: {amount:.2f} at local hour {hour:.1f} ({basis}) in "
        f"[{start}, {end}) and >= {t.unusual_hour_min_amount:.2f}",
        {
            "amount": amount,
            "local_hour": round(hour, 2),
            "longitude": txn.longitude,
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


_RULE_FUNCTIONS = tuple(rule for _name, rule in RULES)  # runs per message: no unpacking there


def evaluate(txn: Transaction, history: AccountHistory, thresholds: RuleThresholds) -> list[Alert]:
    """Every alert `txn` raises against its account's history (which must not contain it yet)."""
    alerts = []
    for rule in _RULE_FUNCTIONS:
        alert = rule(txn, history, thresholds)
        if alert is not None:
            alerts.append(alert)
    return alerts


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance on a spherical Earth (error < 0.5%, plenty for a speed limit)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2.0) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2.0) ** 2
    # min() guards asin against a rounding excursion just above 1 for antipodal points.
    return 2.0 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def local_hour(epoch: float, longitude: float | None) -> float:
    """Solar local hour in [0, 24): UTC hour shifted by longitude / 15; UTC without longitude."""
    utc_hour = (epoch % 86400.0) / 3600.0
    if longitude is None:
        return utc_hour
    return (utc_hour + longitude / 15.0) % 24.0
