"""The rules issue 23's CPU cuts rewrote (velocity, impossible_travel, duplicate, account_takeover
with its `_hour_used`, high_risk_card_burst), as they were at 5b8e8d9, and those the account
windows' epochs array rewrote (below), as they were at e618f32, kept verbatim for
tests/unit/test_rules_equivalence.py to hold today's rules to: the same alerts, in the same order,
with the same text and details, message for message. Every other rule and helper is today's
(unchanged by the cuts), imported from consumer.rules. Reference code: not used by the pipeline;
delete it with the test once the cuts have lived through a release."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from itertools import islice
from types import FunctionType
from typing import cast

from consumer import rules as current
from consumer.account_state import AccountHistory, Event
from consumer.rules import (
    _CATEGORY_OF,
    _EPOCH_OF,
    _HALF_CIRCUMFERENCE_KM,
    _KM_PER_DEGREE,
    HABIT_EVENTS,
    Rule,
    _categories,
    _hour,
    _median,
    _money,
    _seen,
    _way_back,
)
from utils.config import RuleThresholds
from utils.geo import haversine_km
from utils.models import DEBIT_TYPES, Alert, Transaction


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


def duplicate(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    merchant = txn.merchant
    if merchant is None:
        return None
    now = txn.epoch
    start = now - min(t.duplicate_window_s, history.max_age_s)
    # The window's merchant index first: most payments have no earlier one at the same merchant
    # within the window, and then the scan below is skipped.
    epochs = history.by_merchant.get(merchant)
    if epochs is None:
        return None
    i = bisect_left(epochs, start)
    if i == len(epochs) or epochs[i] > now:
        return None
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


def _hour_used(history: AccountHistory, before: float, floor: float, hour: int) -> bool:
    """Whether the account uses `hour` (UTC hour of day) on the evidence of its events in
    [floor, before) alone: at least HABIT_EVENTS of them fell within an hour of it (a cheap
    exit; account_takeover also counts the window's payments at known merchants). One payment
    at 3 a.m., often itself an alerted anomaly, does not make 3 a.m. a habit. Newest first: an
    account active at this time of day shows it within its last few events."""
    n = 0
    for event in history.newest_first():
        epoch = event.epoch
        if floor <= epoch < before and (int(epoch % 86_400.0 // 3_600.0) - hour) % 24 in (0, 1, 23):
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
            for event in reversed(events):
                epoch = event.epoch
                if epoch < start:
                    return None
                if epoch <= now and event.debit and event.merchant is not None:
                    epochs = index[event.merchant]
                    i = bisect_left(epochs, floor)
                    if i == len(epochs) or epochs[i] >= start:
                        need -= 1
                        if need == 0:
                            break
            else:
                return None
        if _hour_used(history, start, floor, _hour(now)):
            return None
    before = [e for e in events if floor <= e.epoch < start]
    if len(before) < t.takeover_min_history:
        return None
    known = {e.merchant for e in before}
    recent = [e for e in events if start <= e.epoch <= now]
    # The account's hours: its events before the window, and those within it at merchants it
    # knew (the owner paying as usual while the window runs); never the first-time ones.
    used = Counter(_hour(e.epoch) for e in before)
    used.update(_hour(e.epoch) for e in recent if e.merchant in known)

    def unusual(epoch: float) -> bool:
        h = _hour(epoch)
        return used[h] + used[(h + 1) % 24] + used[(h - 1) % 24] < HABIT_EVENTS

    usual = [e.amount_base for e in before if e.debit]
    big = t.takeover_min_ratio * _median(usual) if usual else 0.0
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
    if txn.transaction_type == "transfer" and txn.amount_base >= t.takeover_payee_min_amount:
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


def high_risk_card_burst(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    """Card purchases at high-risk categories (`card_burst_categories`) the account does not
    use otherwise (none of its window's earlier debits): `card_burst_min_count` within
    `card_burst_window_s`, summing to `card_burst_multiplier` times the account's own median
    debit (the window's other debits) and to at least `card_burst_min_amount`."""
    category = txn.merchant_category
    if txn.transaction_type != "purchase" or category is None:
        return None
    risky = _categories(t.card_burst_categories)
    if category.lower() not in risky or len(history.events) + 1 < t.card_burst_min_count:
        return None
    now = txn.epoch
    start = now - t.card_burst_window_s
    events = history.events
    if category in map(_CATEGORY_OF, islice(events, bisect_left(events, start, key=_EPOCH_OF))):
        return None  # the account buys there anyway (a refund there is as telling)
    burst = [txn.amount_base]
    usual = []
    habits = set()
    floor = history.floor(now)
    for event in history.events:
        if event.epoch > now or event.epoch < floor or not event.debit:
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


# The rules the windows' epochs array rewrote (card_testing, amount_spike, invoice_fraud,
# dormant_reactivation; pass_through, refund_abuse and structuring through `_window`), as they
# were at e618f32: scans of the events newest first, where today's bisect `history.epochs`.
# (`AccountHistory.count_between` itself bisects now; tests/unit/test_account_state.py holds it
# to the scan.)


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
    for event in history.newest_first():
        epoch = event.epoch
        if epoch < start:
            break
        if epoch < now and event.amount_base > probe and event.debit is debit:
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


def _window_scan(history: AccountHistory, start: float, now: float) -> list[Event]:
    """The events with start <= epoch <= now, oldest first; never older than the account's
    horizon (`AccountHistory.floor`)."""
    start = max(start, history.floor(now))
    out = []
    for event in history.newest_first():
        epoch = event.epoch
        if epoch < start:
            break
        if epoch <= now:
            out.append(event)
    out.reverse()
    return out


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
    debits = [e.amount_base for e in history.events if e.debit and floor <= e.epoch <= now]
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
    last = None
    for event in history.newest_first():
        if event.epoch <= now:
            last = event
            break
    if last is None:
        return None
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


def _with_scan_window(rule: Rule) -> Rule:
    """`rule` (today's code, unchanged by the epochs array) calling the scan-based `_window` it
    called before: the same function with that one global rebound."""
    return cast(Rule, FunctionType(rule.__code__, {**vars(current), "_window": _window_scan}, rule.__name__))


_BEFORE: dict[str, Rule] = {
    "card_testing": card_testing,
    "amount_spike": amount_spike,
    "pass_through": _with_scan_window(current.pass_through),
    "refund_abuse": _with_scan_window(current.refund_abuse),
    "structuring": _with_scan_window(current.structuring),
    "invoice_fraud": invoice_fraud,
    "dormant_reactivation": dormant_reactivation,
    "velocity": velocity,
    "impossible_travel": impossible_travel,
    "duplicate": duplicate,
    "account_takeover": account_takeover,
    "high_risk_card_burst": high_risk_card_burst,
}
# consumer.rules.RULES with the rewritten rules as they were: same names, same order.
RULES: tuple[tuple[str, Rule], ...] = tuple((name, _BEFORE.get(name, fn)) for name, fn in current.RULES)


def evaluate(
    txn: Transaction, history: AccountHistory, thresholds: RuleThresholds, rules: tuple[Rule, ...]
) -> list[Alert]:
    """Every rule of `rules` on `txn`, in order, ungated: the dispatch's gates only skip rules
    that could not fire (tests/unit/test_rule_dispatch.py), so the oracle does without them."""
    return [alert for rule in rules if (alert := rule(txn, history, thresholds)) is not None]
