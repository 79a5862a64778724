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
import operator
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import islice

from consumer.account_state import AccountHistory, Event
from utils.config import RuleThresholds
from utils.geo import EARTH_RADIUS_KM, country_zones, haversine_km, solar_hour, zone_hour
from utils.models import DEBIT_TYPES, TRANSACTION_TYPES, Alert, Transaction
from utils.money import MINOR_UNITS

__all__ = [
    "ALL_RULES",
    "RULES",
    "Rule",
    "account_takeover",
    "amount_spike",
    "card_testing",
    "dispatcher",
    "dormant_reactivation",
    "duplicate",
    "evaluate",
    "high_amount",
    "high_risk_card_burst",
    "impossible_travel",
    "invoice_fraud",
    "local_time",
    "pass_through",
    "plan",
    "refund_abuse",
    "structuring",
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
    """A large amount: a debit from `high_amount`, a credit (salary, business income, a refund)
    from `high_amount_credit`: a large credit is not a large spend."""
    amount = txn.amount_base
    if amount < t.high_amount and amount < t.high_amount_credit:
        return None
    debit = txn.transaction_type in DEBIT_TYPES
    limit = t.high_amount if debit else t.high_amount_credit
    if amount < limit:
        return None
    critical = amount >= _CRITICAL_MULTIPLE * limit
    base = t.base_currency
    direction = "debit" if debit else "credit"
    return Alert(
        txn.transaction_id,
        txn.account_id,
        "high_amount",
        "critical" if critical else "high",
        f"high_amount: {direction} {_money(txn, base)} >= {limit:.2f} {base}"
        + (f" (critical from {_CRITICAL_MULTIPLE * limit:.2f})" if critical else ""),
        {
            "amount": txn.amount,
            "currency": txn.currency,
            "amount_base": amount,
            "base_currency": base,
            "direction": direction,
            "threshold": limit,
        },
    )


def velocity(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    # Cheap exits first: too few events in all of history to exceed the limit; or, the window
    # being in event-time order, the limit-th newest event already older than the window's start,
    # so fewer than the limit are in it (one index instead of a scan, for most payments).
    events = history.events
    limit = t.velocity_count
    if len(events) < limit:
        return None
    now = txn.epoch
    window = t.velocity_window_s
    start = now - min(window, history.max_age_s)
    if limit > 0 and history.epochs[-limit] < start:
        return None
    count = 1 + history.count_between(start, now)
    if count <= limit:
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
    # The window's run of events in [start, now], found in the epochs array (account_state.py).
    epochs = history.epochs
    for event in history.run(bisect_left(epochs, start), bisect_right(epochs, now)):
        if event.amount_base <= small:
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
    amounts in the same direction over the `spike_window_s` of event time before it: a debit
    against what the account spends, a credit against what it receives, and that only with
    `spike_credit_multiplier` set (0 by default: a salary or a client's payment is no spike, and
    a day's window rarely holds enough credits to know what the account receives). The median, not the
    mean: one earlier high-value payment (an incident of its own, a yearly rent) would lift a mean
    for a whole day and hide the next spike. Probe-sized amounts (card testing) stay out of it."""
    amount = txn.amount_base
    if amount < t.spike_min_amount or len(history.events) < t.spike_min_history:
        return None
    now = txn.epoch
    start = now - min(t.spike_window_s, history.max_age_s)
    probe = t.card_testing_max_amount
    debit = txn.transaction_type in DEBIT_TYPES
    multiplier = t.spike_multiplier if debit else t.spike_credit_multiplier
    if multiplier <= 0.0:
        return None  # credits are off by default: a salary or a client's payment is no spike
    past = []
    epochs = history.epochs  # the events in [start, now): a run of the window, by bisection
    for event in history.run(bisect_left(epochs, start), bisect_left(epochs, now)):
        if event.amount_base > probe and event.debit is debit:
            past.append(event.amount_base)
    n = len(past)
    if n < t.spike_min_history:
        return None
    past.sort()
    median = past[n // 2] if n % 2 else (past[n // 2 - 1] + past[n // 2]) / 2.0
    if median <= 0.0 or amount < multiplier * median:
        return None
    ratio = amount / median
    base = t.base_currency
    return Alert(
        txn.transaction_id,
        txn.account_id,
        "amount_spike",
        "medium",
        f"amount_spike: {_money(txn, base)} is {ratio:.1f}x the median {median:.2f} {base} of {n} "
        f"{'debits' if debit else 'credits'} in the previous {t.spike_window_s:g}s "
        f"(limit {multiplier:g}x)",
        {
            "amount": txn.amount,
            "currency": txn.currency,
            "amount_base": amount,
            "median": round(median, 2),
            "ratio": round(ratio, 2),
            "direction": "debit" if debit else "credit",
            "history": n,
            "window_s": t.spike_window_s,
            "multiplier": multiplier,
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
    # `history.last_located(now)` and `history.floor(now)` written out: this runs for every
    # located payment, and the two method calls cost as much as the rest of its common case.
    for previous in reversed(history.events):
        if previous.latitude is not None and previous.epoch <= now:
            break
    else:
        return None
    if previous.longitude is None:
        return None
    if previous.epoch < now - history.max_age_s:
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
    if merchant is None:
        return None
    # The window's merchant index first: most payments have no earlier one at the same merchant
    # within the window, and then the scan below is skipped (and mostly the bisection too: the
    # merchant's newest held epoch is older than the window's start).
    epochs = history.by_merchant.get(merchant)
    if epochs is None:
        return None
    now = txn.epoch
    start = now - min(t.duplicate_window_s, history.max_age_s)
    if epochs[-1] < start:
        return None
    i = bisect_left(epochs, start)
    if i == len(epochs) or epochs[i] > now:
        return None
    # The amount as sent: two yen amounts a yen apart convert to the same cent of a dollar.
    amount, currency, tid = txn.amount, txn.currency, txn.transaction_id
    # Newest first over the window's run [start, now], found in the epochs array: no event
    # outside it is read (each a cache miss once the windows are warm).
    held = history.epochs
    for event in reversed(history.run(bisect_left(held, start), bisect_right(held, now))):
        epoch = event.epoch
        # Amounts from "12.30" and 12.3 parse to the same float, so == is exact here.
        if (
            event.amount == amount
            and event.currency == currency
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


# -- typologies: patterns over the account's window (docs/rules-typologies.md) ----------------
# Each needs only what the window holds (consumer/account_state.py: direction, merchant or payee,
# category), so its state is the window's: bounded by STATE_MAX_EVENTS_PER_ACCOUNT and
# STATE_HISTORY_HOURS, nothing of its own. Each exits early on the fields of `txn` alone, so the
# ordinary message costs a comparison or two.


_MOVED_ON = frozenset({"transfer", "withdrawal"})


def _median(values: list[float]) -> float:
    values.sort()
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2.0


def _window(history: AccountHistory, start: float, now: float) -> list[Event]:
    """The events with start <= epoch <= now, oldest first; never older than the account's
    horizon (`AccountHistory.floor`)."""
    start = max(start, history.floor(now))
    epochs = history.epochs  # a run of the window (in event-time order): two bisections
    return history.run(bisect_left(epochs, start), bisect_right(epochs, now))


_EPOCH_OF = operator.attrgetter("epoch")
_MERCHANT_OF = operator.attrgetter("merchant")
_CATEGORY_OF = operator.attrgetter("category")


def _seen(history: AccountHistory, merchant: str, before: float, now: float) -> bool:
    """Whether the window holds a payment to or from `merchant` in sight of `now` and before
    `before`. It runs for most payments, so it reads the window's merchant index
    (`AccountHistory.by_merchant`) instead of scanning the window."""
    return history.seen(merchant, now - history.max_age_s, before)


def pass_through(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    """Money mule: a deposit of at least `pass_through_min_amount` passed on by a transfer or a
    cash withdrawal of `pass_through_ratio` of it (to 1/ratio) within `pass_through_max_delay_s`,
    at least `pass_through_min_cycles` times in the window, this one closing the latest cycle.
    Purchases do not count: an account that spends what it earns is no mule."""
    ratio = t.pass_through_ratio
    amount = txn.amount_base
    if txn.transaction_type not in _MOVED_ON or amount < ratio * t.pass_through_min_amount:
        return None
    now = txn.epoch
    events = _window(history, now - t.pass_through_window_s, now)
    if not events:
        return None
    delay = t.pass_through_max_delay_s
    used: set[int] = set()  # debits already matched to an earlier credit
    cycles: list[tuple[Event, float]] = []  # (credit, seconds until passed on)
    closing: Event | None = None
    for i, credit in enumerate(events):
        if credit.debit or credit.refund or credit.amount_base < t.pass_through_min_amount:
            continue
        low, high = ratio * credit.amount_base, credit.amount_base / ratio
        until = credit.epoch + delay
        for j in range(i + 1, len(events)):
            out = events[j]
            if out.epoch > until:
                break
            if out.moved_on and j not in used and low <= out.amount_base <= high:
                used.add(j)
                cycles.append((credit, out.epoch - credit.epoch))
                break
        else:
            if now <= until and low <= amount <= high and closing is None:
                closing = credit
                cycles.append((credit, now - credit.epoch))
    if closing is None or len(cycles) < t.pass_through_min_cycles:
        return None
    received = sum(c.amount_base for c, _ in cycles)
    slowest = max(d for _, d in cycles)
    base = t.base_currency
    return Alert(
        txn.transaction_id,
        txn.account_id,
        "pass_through",
        "high",
        f"pass_through: {_money(txn, base)} out {now - closing.epoch:.0f}s after {closing.amount_base:.2f} "
        f"{base} came in; {len(cycles)} in-out cycles within {t.pass_through_window_s:g}s "
        f"(threshold {t.pass_through_min_cycles}, each out {ratio:g}-{1 / ratio:.2f}x of in "
        f"within {delay:g}s)",
        {
            "cycles": len(cycles),
            "received": round(received, 2),
            "slowest_s": round(slowest, 1),
            "credit_transaction_id": closing.transaction_id,
            "ratio": round(amount / closing.amount_base, 3),
            "min_cycles": t.pass_through_min_cycles,
            "max_delay_s": delay,
        },
    )


def refund_abuse(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    """A refund of at least `refund_abuse_min_share` of an earlier purchase at the same merchant,
    the `refund_abuse_min_cycles`-th such pair within `refund_abuse_window_s`."""
    merchant = txn.merchant
    if txn.transaction_type != "refund" or merchant is None or txn.amount_base < t.refund_abuse_min_amount:
        return None
    now = txn.epoch
    events = _window(history, now - t.refund_abuse_window_s, now)
    share = t.refund_abuse_min_share
    open_purchases: dict[str | None, list[float]] = {}
    pairs: list[str] = []

    def pair(shop: str | None, refunded: float) -> bool:
        bought = open_purchases.get(shop)
        if not bought:
            return False
        for k, paid in enumerate(bought):
            if share * paid <= refunded <= paid * 1.0001:
                del bought[k]
                return True
        return False

    for event in events:
        if event.refund:
            if event.amount_base >= t.refund_abuse_min_amount and pair(event.merchant, event.amount_base):
                pairs.append(str(event.merchant))
        elif event.debit and event.merchant is not None:
            open_purchases.setdefault(event.merchant, []).append(event.amount_base)
    if not pair(merchant, txn.amount_base):
        return None
    pairs.append(merchant)
    if len(pairs) < t.refund_abuse_min_cycles:
        return None
    return Alert(
        txn.transaction_id,
        txn.account_id,
        "refund_abuse",
        "medium",
        f"refund_abuse: refund of {_money(txn, t.base_currency)} at {merchant!r} after a purchase there; "
        f"{len(pairs)} purchase-refund pairs within {t.refund_abuse_window_s:g}s "
        f"(threshold {t.refund_abuse_min_cycles}, refunds >= {share:g} of the purchase)",
        {
            "pairs": len(pairs),
            "merchants": sorted(set(pairs)),
            "min_cycles": t.refund_abuse_min_cycles,
            "min_share": share,
            "window_s": t.refund_abuse_window_s,
        },
    )


# An hour of day is the account's habit from this many of its window's events within an hour of
# it (account_takeover; docs/rules-typologies.md says why not one).
HABIT_EVENTS = 2


def _hour(epoch: float) -> int:
    return int(epoch % 86_400.0 // 3_600.0)


def _hour_used(history: AccountHistory, before: float, floor: float, hour: int) -> bool:
    """Whether the account uses `hour` (UTC hour of day) on the evidence of its events in
    [floor, before) alone: at least HABIT_EVENTS of them fell within an hour of it (a cheap
    exit; account_takeover also counts the window's payments at known merchants). One payment
    at 3 a.m., often itself an alerted anomaly, does not make 3 a.m. a habit. Newest first: an
    account active at this time of day shows it within its last few events."""
    n = 0
    for epoch in reversed(history.epochs):  # the epochs alone: no Event read (account_state.py)
        if epoch >= before:
            continue
        if epoch < floor:
            return False  # the window is in event-time order: nothing older is in sight
        if (int(epoch % 86_400.0 // 3_600.0) - hour) % 24 in (0, 1, 23):
            n += 1
            if n >= HABIT_EVENTS:
                return True
    return False


def account_takeover(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    """Two signals of a taken-over account, judged against the account's own window:

    * burst: `takeover_min_new` debits, each `takeover_min_ratio` times the account's median
      debit or more, to merchants or payees the window never saw before the burst, within
      `takeover_window_s`, at an hour of day the account does not use (fewer than HABIT_EVENTS of its
      earlier events within an hour of it), summing to `takeover_drain_share` of the spending
      its window held before them (its median debit times their number);
    * new payee: a transfer of at least `takeover_payee_min_amount` to a payee never seen, right
      after (within `takeover_window_s`) a payment at an hour the account does not use.

    Hours are UTC hours of day: only compared with the account's own, so no zone is needed."""
    merchant = txn.merchant
    if merchant is None or txn.transaction_type not in DEBIT_TYPES:
        return None
    events = history.events
    if len(events) < t.takeover_min_history:
        return None
    now = txn.epoch
    start = now - t.takeover_window_s
    floor = now - history.max_age_s
    # Cheap exits first (this runs for most payments): either signal needs a merchant the window
    # never saw (a look-up in the window's merchant index, `_seen` inlined); a burst needs
    # `takeover_min_new` - 1 earlier debits within the window (newest first, a step or two) and
    # an hour the account does not use; the payee signal a large transfer.
    epochs = history.by_merchant.get(merchant)
    if epochs is not None:
        i = bisect_left(epochs, floor)
        if i < len(epochs) and epochs[i] < start:
            return None
    payee = txn.transaction_type == "transfer" and txn.amount_base >= t.takeover_payee_min_amount
    if not payee:
        # The burst's other members: debits within the window to merchants not seen before it
        # (the index again); most accounts' recent payments go to their usual shops.
        need = t.takeover_min_new - 1
        if need > 0:
            index = history.by_merchant
            # Newest first over [start, now] (bisected: the first event older than the window
            # is never read, nor those later than `now`).
            held = history.epochs
            for event in reversed(history.run(bisect_left(held, start), bisect_right(held, now))):
                if event.debit and event.merchant is not None:
                    # Seen in [floor, start)? The merchant's oldest held epoch answers most
                    # cases without a bisection: at or after `start`, no; in [floor, start), yes.
                    epochs = index[event.merchant]
                    first = epochs[0]
                    if first >= start:
                        fresh = True
                    elif first >= floor:
                        fresh = False
                    else:
                        i = bisect_left(epochs, floor)
                        fresh = i == len(epochs) or epochs[i] >= start
                    if fresh:
                        need -= 1
                        if need == 0:
                            break
            else:
                return None
        if _hour_used(history, start, floor, _hour(now)):
            return None
    # The window is in event-time order, so "before the window" ([floor, start)) and "within it"
    # ([start, now]) are two runs of it, found by bisecting its epochs array (no Event read).
    held = history.epochs
    lo = bisect_left(held, floor)
    mid = bisect_left(held, start)
    before = history.run(lo, mid)
    if len(before) < t.takeover_min_history:
        return None
    usual = [e.amount_base for e in before if e.debit]
    big = t.takeover_min_ratio * _median(usual) if usual else 0.0
    if not payee and not txn.amount_base >= big:
        return None  # the burst signal needs this payment at `big` or more, and no payee signal
    known = {e.merchant for e in before}
    recent = history.run(mid, bisect_right(held, now))
    # The account's hours: its events before the window, and those within it at merchants it
    # knew (the owner paying as usual while the window runs); never the first-time ones.
    # 25 slots: `epoch % 86_400.0` of an epoch a hair below 0 rounds to 86,400.0, hour 24.
    used = [0] * 25
    for e in before:
        used[int(e.epoch % 86_400.0 // 3_600.0)] += 1
    for e in recent:
        if e.merchant in known:
            used[int(e.epoch % 86_400.0 // 3_600.0)] += 1

    def unusual(epoch: float) -> bool:
        h = _hour(epoch)
        return used[h] + used[(h + 1) % 24] + used[(h - 1) % 24] < HABIT_EVENTS

    burst = [
        e
        for e in recent
        if e.debit and e.merchant is not None and e.merchant not in known and e.amount_base >= big
    ]
    # What the account usually spends: its median debit times its number of debits, so one
    # earlier outsized payment (a yearly rent, another incident) does not hide the drain.
    spent = big / t.takeover_min_ratio * len(usual) if t.takeover_min_ratio > 0 else sum(usual)
    drained = txn.amount_base + sum(e.amount_base for e in burst)
    base = t.base_currency
    if (
        txn.amount_base >= big
        and len(burst) + 1 >= t.takeover_min_new
        and unusual(now)
        and spent > 0.0
        and drained >= t.takeover_drain_share * spent
    ):
        return Alert(
            txn.transaction_id,
            txn.account_id,
            "account_takeover",
            "high",
            f"account_takeover: {len(burst) + 1} payments to first-time merchants or payees within "
            f"{t.takeover_window_s:g}s at UTC hour {_hour(now)}, which the account does not use, "
            f"draining {drained:.2f} {base} = {drained / spent:.0%} of the {spent:.2f} {base} its window "
            f"held (thresholds {t.takeover_min_new} and {t.takeover_drain_share:g})",
            {
                "signal": "burst",
                "new_payees": len(burst) + 1,
                "drained": round(drained, 2),
                "usual_spend": round(spent, 2),
                "share": round(drained / spent, 3),
                "utc_hour": _hour(now),
                "window_s": t.takeover_window_s,
            },
        )
    if payee:
        odd = [e for e in recent if unusual(e.epoch)]
        if odd:
            return Alert(
                txn.transaction_id,
                txn.account_id,
                "account_takeover",
                "high",
                f"account_takeover: first transfer of {_money(txn, base)} to new payee {merchant!r}, "
                f"{now - odd[-1].epoch:.0f}s after activity at UTC hour {_hour(odd[-1].epoch)}, which the "
                f"account does not use",
                {
                    "signal": "new_payee",
                    "payee": merchant,
                    "after_transaction_id": odd[-1].transaction_id,
                    "seconds_after": round(now - odd[-1].epoch, 1),
                    "window_s": t.takeover_window_s,
                },
            )
    return None


def structuring(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    """Amounts kept just under a reporting threshold: `structuring_min_count` of them in the same
    direction within `structuring_window_s`, each within `structuring_margin` (a share) below
    `structuring_threshold`, together above it."""
    threshold = t.structuring_threshold
    floor = threshold * (1.0 - t.structuring_margin)
    amount = txn.amount_base
    if not floor <= amount < threshold or len(history.events) + 1 < t.structuring_min_count:
        return None
    debit = txn.transaction_type in DEBIT_TYPES
    now = txn.epoch
    near = [amount]
    for event in _window(history, now - t.structuring_window_s, now):
        if event.debit is debit and floor <= event.amount_base < threshold:
            near.append(event.amount_base)
    total = sum(near)
    if len(near) < t.structuring_min_count or total <= threshold:
        return None
    base = t.base_currency
    return Alert(
        txn.transaction_id,
        txn.account_id,
        "structuring",
        "high",
        f"structuring: {len(near)} {'debits' if debit else 'credits'} of {floor:.2f}-{threshold:.2f} {base} "
        f"within {t.structuring_window_s:g}s, {total:.2f} {base} together (threshold "
        f"{threshold:.2f}, count {t.structuring_min_count})",
        {
            "count": len(near),
            "total": round(total, 2),
            "threshold": threshold,
            "margin": t.structuring_margin,
            "direction": "debit" if debit else "credit",
            "window_s": t.structuring_window_s,
        },
    )


def invoice_fraud(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    """A first high-value payment to a merchant or payee (vendor) the window never saw: at least
    `invoice_min_amount`, and a round amount (a multiple of `invoice_round_unit` as sent) or
    `invoice_multiplier` times the account's median debit."""
    merchant = txn.merchant
    amount = txn.amount_base
    if (
        merchant is None
        or amount < t.invoice_min_amount
        or txn.transaction_type not in DEBIT_TYPES
        or len(history.events) < t.invoice_min_history
    ):
        return None
    now = txn.epoch
    floor = history.floor(now)
    # "Never paid this vendor" means something only against a history in sight: a window whose
    # events are all older than STATE_HISTORY_HOURS knows no vendors, and would call every payee
    # of a quiet account new (2.4 % of finforge's ordinary payments were alerted so).
    if history.count_between(floor, now) < t.invoice_min_history:
        return None
    if _seen(history, merchant, now + 1e-9, now):
        return None
    unit = t.invoice_round_unit
    units = txn.amount / unit if unit > 0 else 0.5
    round_amount = abs(units - round(units)) < 1e-9
    epochs = history.epochs
    debits = [
        e.amount_base for e in history.run(bisect_left(epochs, floor), bisect_right(epochs, now)) if e.debit
    ]
    median = _median(debits) if debits else 0.0
    ratio = amount / median if median > 0 else math.inf
    if not round_amount and ratio < t.invoice_multiplier:
        return None
    base = t.base_currency
    why = f"a multiple of {unit:g}" if round_amount else f"{ratio:.1f}x the median debit {median:.2f} {base}"
    return Alert(
        txn.transaction_id,
        txn.account_id,
        "invoice_fraud",
        "medium",
        f"invoice_fraud: first payment to {merchant!r}: {_money(txn, base)}, {why} "
        f"(from {t.invoice_min_amount:.2f} {base})",
        {
            "merchant": merchant,
            "amount": txn.amount,
            "amount_base": amount,
            "round": round_amount,
            "median_debit": round(median, 2),
            "ratio": None if ratio == math.inf else round(ratio, 2),
            "min_amount": t.invoice_min_amount,
        },
    )


def dormant_reactivation(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    """At least `dormant_min_amount` moved by an account whose previous event is at least
    `dormant_idle_days` older. The window keeps an account's last events whatever their age (the
    age bound applies relative to the event evaluated), so the previous one is in sight: the one
    rule that looks past `AccountHistory.floor`, and only at that event."""
    amount = txn.amount_base
    if amount < t.dormant_min_amount or not history.events:
        return None
    now = txn.epoch
    i = bisect_right(history.epochs, now)  # the newest event at or before `now`
    if i == 0:
        return None
    last = history.events[i - 1]
    idle_days = (now - last.epoch) / 86_400.0
    if idle_days < t.dormant_idle_days:
        return None
    base = t.base_currency
    direction = "debit" if txn.transaction_type in DEBIT_TYPES else "credit"
    return Alert(
        txn.transaction_id,
        txn.account_id,
        "dormant_reactivation",
        "medium",
        f"dormant_reactivation: {direction} {_money(txn, base)} after {idle_days:.1f} days without activity "
        f"(from {t.dormant_idle_days:g} days and {t.dormant_min_amount:.2f} {base})",
        {
            "idle_days": round(idle_days, 2),
            "previous_transaction_id": last.transaction_id,
            "amount_base": amount,
            "direction": direction,
            "min_idle_days": t.dormant_idle_days,
            "min_amount": t.dormant_min_amount,
        },
    )


@lru_cache(maxsize=16)
def _categories(spec: str) -> frozenset[str]:
    return frozenset(c.strip().lower() for c in spec.split(",") if c.strip())


# card_burst_categories -> {merchant category as sent: whether it is one of them}
_RISKY_CATEGORY: dict[str, dict[str, bool]] = {}
_VERDICTS_HELD = 4096


def high_risk_card_burst(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    """Card purchases at high-risk categories (`card_burst_categories`) the account does not
    use otherwise (none of its window's earlier debits): `card_burst_min_count` within
    `card_burst_window_s`, summing to `card_burst_multiplier` times the account's own median
    debit (the window's other debits) and to at least `card_burst_min_amount`."""
    category = txn.merchant_category
    if txn.transaction_type != "purchase" or category is None:
        return None
    # Whether the category is high-risk, remembered per category text: this runs for every
    # purchase, and the set look-up, lower() and the look-up of the set cost more than the rest.
    spec = t.card_burst_categories
    verdicts = _RISKY_CATEGORY.get(spec)
    if verdicts is None or len(verdicts) >= _VERDICTS_HELD:  # bounded: categories are the client's text
        verdicts = _RISKY_CATEGORY[spec] = {}
        if len(_RISKY_CATEGORY) > 16:
            _RISKY_CATEGORY.clear()
            _RISKY_CATEGORY[spec] = verdicts
    is_risky = verdicts.get(category)
    if is_risky is None:
        is_risky = verdicts[category] = category.lower() in _categories(spec)
    if not is_risky or len(history.events) + 1 < t.card_burst_min_count:
        return None
    risky = _categories(spec)
    now = txn.epoch
    start = now - t.card_burst_window_s
    events = history.events
    epochs = history.epochs
    if category in map(_CATEGORY_OF, islice(events, bisect_left(epochs, start))):
        return None  # the account buys there anyway (a refund there is as telling)
    burst = [txn.amount_base]
    usual = []
    habits = set()
    floor = history.floor(now)
    for event in history.run(bisect_left(epochs, floor), bisect_right(epochs, now)):
        if not event.debit:
            continue
        cat = event.category
        if event.epoch >= start and cat is not None and cat.lower() in risky:
            burst.append(event.amount_base)
        else:
            usual.append(event.amount_base)
            if cat is not None:
                habits.add(cat.lower())
    if category.lower() in habits:
        return None  # the account shops there anyway: relative to its history, nothing new
    total = sum(burst)
    if len(burst) < t.card_burst_min_count or total < t.card_burst_min_amount or not usual:
        return None
    median = _median(usual)
    if median <= 0.0 or total < t.card_burst_multiplier * median:
        return None
    base = t.base_currency
    return Alert(
        txn.transaction_id,
        txn.account_id,
        "high_risk_card_burst",
        "high",
        f"high_risk_card_burst: {len(burst)} card purchases at high-risk categories within "
        f"{t.card_burst_window_s:g}s, {total:.2f} {base} = {total / median:.1f}x the account's median debit "
        f"{median:.2f} {base} (thresholds {t.card_burst_min_count}, {t.card_burst_multiplier:g}x)",
        {
            "count": len(burst),
            "total": round(total, 2),
            "median_debit": round(median, 2),
            "ratio": round(total / median, 2),
            "category": category,
            "window_s": t.card_burst_window_s,
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
    ("pass_through", pass_through),
    ("refund_abuse", refund_abuse),
    ("account_takeover", account_takeover),
    ("structuring", structuring),
    ("invoice_fraud", invoice_fraud),
    ("dormant_reactivation", dormant_reactivation),
    ("high_risk_card_burst", high_risk_card_burst),
)


ALL_RULES: tuple[Rule, ...] = tuple(rule for _name, rule in RULES)  # per message: no unpacking there


# -- dispatch ----------------------------------------------------------------------------------
# Most rules give up on a message's type or amount before they read the window: a refund is no
# pass-through, a $40 payment no structuring. Calling fourteen functions to hear eleven of them
# say None cost as much as the rules' real work, so `evaluate` asks each rule's gate first: the
# transaction types it can fire on and the amounts (base currency) it can fire at, the very
# conditions its first lines test (the rule still tests them: a gate only skips calls that
# would return None, so the alerts are the same; tests/unit/test_rule_dispatch.py compares).
# For a rule set, each type's amount axis is cut at the gates' bounds into intervals and points;
# within one the rules to call are fixed, so a message costs a bisection and the calls that
# can fire. A rule without a gate (velocity, travel, duplicate, or one added later) is always
# called.

_Gate = tuple[frozenset[str] | None, tuple[float, ...], Callable[[float], bool] | None]
_Plan = dict[str | None, tuple[list[float], list[tuple[Rule, ...]]]]


def _gates(t: RuleThresholds) -> dict[Rule, _Gate]:
    """rule -> (types it may fire on or None for any, amount bounds, amount test or None)."""
    debits = frozenset(DEBIT_TYPES)
    big = min(t.high_amount, t.high_amount_credit)
    probe = t.card_testing_max_amount
    spike = t.spike_min_amount
    night = t.unusual_hour_min_amount
    passed_on = t.pass_through_ratio * t.pass_through_min_amount
    refund = t.refund_abuse_min_amount
    top = t.structuring_threshold
    near = top * (1.0 - t.structuring_margin)
    invoice = t.invoice_min_amount
    dormant = t.dormant_min_amount
    return {
        high_amount: (None, (big,), lambda x: x >= big),
        card_testing: (None, (probe,), lambda x: x <= probe),
        # credits only with spike_credit_multiplier set
        amount_spike: (None if t.spike_credit_multiplier > 0.0 else debits, (spike,), lambda x: x >= spike),
        unusual_hour_high_value: (None, (night,), lambda x: x >= night),
        pass_through: (_MOVED_ON, (passed_on,), lambda x: x >= passed_on),
        refund_abuse: (frozenset({"refund"}), (refund,), lambda x: x >= refund),
        account_takeover: (debits, (), None),
        structuring: (None, (near, top), lambda x: near <= x < top),
        invoice_fraud: (debits, (invoice,), lambda x: x >= invoice),
        dormant_reactivation: (None, (dormant,), lambda x: x >= dormant),
        high_risk_card_burst: (frozenset({"purchase"}), (), None),
    }


def plan(rules: Sequence[Rule], t: RuleThresholds) -> _Plan:
    """transaction type -> (bounds, rules to call per segment): segment 2i is the open interval
    below bounds[i] (above bounds[i-1]), 2i+1 the point bounds[i]. A type not in the plan (a
    type of older rows) calls every rule."""
    gates = _gates(t)
    out: _Plan = {}
    for ttype in TRANSACTION_TYPES:
        mine = [(rule, gates.get(rule, (None, (), None))) for rule in rules]
        mine = [(rule, g) for rule, g in mine if g[0] is None or ttype in g[0]]
        bounds = sorted({b for _rule, g in mine for b in g[1]})
        points: list[float] = []
        for i, b in enumerate(bounds):
            below = bounds[i - 1] if i else b - abs(b) - 1.0
            points += [below + (b - below) / 2.0, b]
        points.append(bounds[-1] + abs(bounds[-1]) + 1.0 if bounds else 0.0)
        segments = [tuple(rule for rule, g in mine if g[2] is None or g[2](x)) for x in points]
        out[ttype] = (bounds, segments)
    return out


_PLANS: dict[tuple[int, int], tuple[Sequence[Rule], RuleThresholds, _Plan]] = {}
_LAST_PLAN: tuple[Sequence[Rule] | None, RuleThresholds | None, _Plan] = (None, None, {})  # the one in use


def _plan_for(rules: Sequence[Rule], t: RuleThresholds) -> _Plan:
    # By identity: the consumer keeps one rule set (rules and thresholds) for many batches, so
    # this is a dictionary hit per message; the objects are held, so an id is never reused.
    global _LAST_PLAN
    key = (id(rules), id(t))
    held = _PLANS.get(key)
    if held is not None and held[0] is rules and held[1] is t:
        _LAST_PLAN = held
        return held[2]
    if len(_PLANS) >= 16:
        _PLANS.clear()
    made = plan(rules, t)
    _PLANS[key] = _LAST_PLAN = (rules, t, made)
    return made


def dispatcher(rules: Sequence[Rule], t: RuleThresholds) -> Callable[[str, float], Sequence[Rule]]:
    """(transaction type, base amount) -> the rules of `rules` whose gates let such a message
    through, in RULES order: `evaluate`'s choice, worked out once for a batch's rule set."""
    typed_plan = _plan_for(rules, t)
    get = typed_plan.get

    def calls(ttype: str, amount: float) -> Sequence[Rule]:
        typed = get(ttype)
        if typed is None or amount != amount:  # NaN never reaches the rules; if it did, all run
            return rules
        bounds, segments = typed
        i = bisect_left(bounds, amount)
        return segments[2 * i + 1 if i < len(bounds) and bounds[i] == amount else 2 * i]

    return calls


def evaluate(
    txn: Transaction, history: AccountHistory, thresholds: RuleThresholds, rules: Sequence[Rule] = ALL_RULES
) -> list[Alert]:
    """Every alert `txn` raises against its account's history (which must not contain it yet),
    from `rules` (a rule set's enabled ones), in RULES order."""
    calls = rules
    last = _LAST_PLAN
    typed = (last[2] if last[0] is rules and last[1] is thresholds else _plan_for(rules, thresholds)).get(
        txn.transaction_type
    )
    amount = txn.amount_base
    if typed is not None and amount == amount:  # NaN never reaches the rules; if it did, all run
        bounds, segments = typed
        i = bisect_left(bounds, amount)
        calls = segments[2 * i + 1 if i < len(bounds) and bounds[i] == amount else 2 * i]
    alerts = []
    for rule in calls:
        alert = rule(txn, history, thresholds)
        if alert is not None:
            alerts.append(alert)
    return alerts
