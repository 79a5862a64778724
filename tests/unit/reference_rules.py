"""The scan-based versions of the rules the merchant index and the dispatch sped up, as they were
before (consumer/rules.py at 23a1dd9), for tests/unit/test_rule_dispatch.py to compare with:
the same alerts, message for message (with the hour test of HABIT_EVENTS, which they share).
Reference code: not used by the pipeline."""

from __future__ import annotations

import operator
from bisect import bisect_left
from collections import Counter
from itertools import islice

from consumer.account_state import AccountHistory
from consumer.rules import HABIT_EVENTS, _median, _money
from utils.config import RuleThresholds
from utils.models import DEBIT_TYPES, Alert, Transaction

_EPOCH_OF = operator.attrgetter("epoch")
_MERCHANT_OF = operator.attrgetter("merchant")


def seen_scan(history: AccountHistory, merchant: str, before: float, now: float) -> bool:
    """Whether the window holds a payment to or from `merchant` in sight of `now` and before
    `before`. It runs for most payments, so the scan is done in C (the window is in event-time
    order)."""
    events = history.events
    first = bisect_left(events, history.floor(now), key=_EPOCH_OF)
    return merchant in map(_MERCHANT_OF, islice(events, first, bisect_left(events, before, key=_EPOCH_OF)))


def duplicate_scan(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
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


def _hour(epoch: float) -> int:
    return int(epoch % 86_400.0 // 3_600.0)


def _hour_used(history: AccountHistory, before: float, floor: float, hour: int) -> bool:
    """Whether the account uses `hour` (UTC hour of day): at least HABIT_EVENTS of its events
    in [floor, before) fell within an hour of it. One payment at 3 a.m. (often itself an alerted
    anomaly) does not make 3 a.m. a habit. Newest first: an account active at this time of day
    shows it within its last few events."""
    n = 0
    for event in history.newest_first():
        epoch = event.epoch
        if floor <= epoch < before and (int(epoch % 86_400.0 // 3_600.0) - hour) % 24 in (0, 1, 23):
            n += 1
            if n >= HABIT_EVENTS:
                return True
    return False


def account_takeover_scan(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> Alert | None:
    """Two signals of a taken-over account, judged against the account's own window:

    * burst: `takeover_min_new` debits, each `takeover_min_ratio` times the account's median
      debit or more, to merchants or payees the window never saw before the burst, within
      `takeover_window_s`, at an hour of day the account does not use (none of its
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
    floor = history.floor(now)
    # Cheap exits first (this runs for most payments): a burst needs an hour the account does
    # not use, the payee signal a large transfer; either needs a merchant the window never saw.
    if seen_scan(history, merchant, start, now):
        return None
    payee = txn.transaction_type == "transfer" and txn.amount_base >= t.takeover_payee_min_amount
    if not payee and _hour_used(history, start, floor, _hour(now)):
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
