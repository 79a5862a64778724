"""consumer.rules, the typologies: money in vs out, pass-through, refund abuse, account takeover,
structuring, invoice fraud, dormant reactivation, high-risk card bursts. Each fires on its
pattern and stays quiet on the ordinary look-alike next to it."""

from __future__ import annotations

import dataclasses

from consumer import rules
from consumer.account_state import AccountHistory
from tests.unit.test_rules import NOON, T, history, only, txn
from utils.config import RuleThresholds
from utils.models import Transaction

H = 3_600.0


def habits(n: int = 20, end: float = NOON - 2 * H, amount: float = 40.0) -> list[Transaction]:
    """An account's ordinary day: `n` purchases at three shops, every 20 minutes up to `end`."""
    return [
        txn(end - 1_200.0 * (n - i), amount + i % 3, merchant=f"Usual {i % 3}", category="grocery")
        for i in range(n)
    ]


# -- direction


def test_high_amount_judges_credits_against_their_own_threshold() -> None:
    salary = txn(amount=12_000.0, ttype="deposit", merchant="Employer")
    assert rules.high_amount(salary, history(), T) is None  # a large credit is not a large spend
    assert (
        only(rules.high_amount(txn(amount=12_000.0), history(), T), "high_amount").details["direction"]
        == "debit"
    )
    windfall = only(rules.high_amount(txn(amount=60_000.0, ttype="deposit"), history(), T), "high_amount")
    assert windfall.details["direction"] == "credit" and windfall.details["threshold"] == 50_000.0


def test_amount_spike_compares_debits_with_debits_and_leaves_credits_alone() -> None:
    past = [txn(NOON - H * i, 50.0) for i in range(6, 0, -1)]
    assert rules.amount_spike(txn(NOON, 3_000.0, ttype="deposit"), history(*past), T) is None  # salary
    assert rules.amount_spike(txn(NOON, 500.0), history(*past), T) is not None
    # Big credits in the window do not raise the median debits are judged against.
    mixed = past + [txn(NOON - 600 + i, 5_000.0, ttype="deposit") for i in range(6)]
    assert rules.amount_spike(txn(NOON, 500.0), history(*mixed), T) is not None
    # Credits against credits, when asked for.
    credits = [txn(NOON - H * i, 100.0, ttype="deposit") for i in range(6, 0, -1)]
    on = dataclasses.replace(T, spike_credit_multiplier=8.0)
    alert = only(rules.amount_spike(txn(NOON, 900.0, ttype="deposit"), history(*credits), on), "amount_spike")
    assert alert.details["direction"] == "credit" and "credits" in alert.message
    assert rules.amount_spike(txn(NOON, 900.0, ttype="deposit"), history(*past), on) is None  # no credits


# -- pass_through


def mule(
    cycles: int, *, ratio: float = 0.95, delay: float = 900.0, out: str = "transfer"
) -> list[Transaction]:
    legs = []
    for k in range(cycles):
        at = NOON - (cycles - k) * 2 * H
        legs.append(txn(at, 2_000.0, ttype="deposit", merchant=None))
        legs.append(txn(at + delay, 2_000.0 * ratio, ttype=out, merchant="Payee"))
    return legs


def test_pass_through_fires_on_the_closing_debit_of_the_second_cycle() -> None:
    *before, closing = mule(2)
    alert = only(rules.pass_through(closing, history(*before), T), "pass_through")
    assert alert.details["cycles"] == 2 and alert.details["received"] == 4_000.0
    assert alert.details["ratio"] == 0.95 and alert.severity == "high"
    assert rules.pass_through(mule(1)[-1], history(*mule(1)[:-1]), T) is None  # once is no pattern


def test_pass_through_needs_most_of_the_money_out_soon_by_transfer_or_cash() -> None:
    for legs in (mule(2, ratio=0.5), mule(2, delay=3 * H), mule(2, out="purchase")):
        *before, closing = legs
        assert rules.pass_through(closing, history(*before), T) is None
    *before, closing = mule(2, out="withdrawal")
    assert rules.pass_through(closing, history(*before), T) is not None
    small = [dataclasses.replace(t, amount=t.amount / 10, amount_base=t.amount_base / 10) for t in mule(2)]
    assert rules.pass_through(small[-1], history(*small[:-1]), T) is None  # below the minimum


# -- refund_abuse


def cycles(n: int, share: float = 1.0) -> list[Transaction]:
    legs = []
    for k in range(n):
        at = NOON - (n - k) * 3 * H
        shop = f"Shop {k}"
        legs.append(txn(at, 300.0, merchant=shop))
        legs.append(txn(at + H, 300.0 * share, ttype="refund", merchant=shop))
    return legs


def test_refund_abuse_counts_purchase_refund_pairs_at_the_same_merchant() -> None:
    *before, last = cycles(2)
    alert = only(rules.refund_abuse(last, history(*before), T), "refund_abuse")
    assert alert.details["pairs"] == 2 and alert.details["merchants"] == ["Shop 0", "Shop 1"]
    assert rules.refund_abuse(cycles(1)[-1], history(*cycles(1)[:-1]), T) is None  # one return is ordinary


def test_refund_abuse_wants_the_same_merchant_and_most_of_the_money_back() -> None:
    *before, last = cycles(2, share=0.5)
    assert rules.refund_abuse(last, history(*before), T) is None  # partial refunds
    *before, last = cycles(2)
    elsewhere = dataclasses.replace(last, merchant="Another Shop")
    assert rules.refund_abuse(elsewhere, history(*before), T) is None
    # A refund with no purchase in the window: a return of something bought long ago.
    lone = [txn(NOON - H * k, 300.0, ttype="refund", merchant=f"Shop {k}") for k in range(3, 0, -1)]
    assert rules.refund_abuse(txn(NOON, 300.0, ttype="refund", merchant="Shop 9"), history(*lone), T) is None


# -- account_takeover


def burst(n: int, each: float = 900.0, hour_offset: float = 0.0) -> list[Transaction]:
    """`n` online payments at new shops at 03:00 UTC the next night (the account pays 08-18 UTC)."""
    at = NOON + 15 * H + hour_offset
    return [txn(at + 300.0 * i, each, merchant=f"New {i}", where=None) for i in range(n)]


def test_account_takeover_burst_of_new_payees_at_an_unused_hour_draining_spend() -> None:
    day = habits(30, end=NOON + 6 * H)  # 20-minute steps from 08:00 to 18:00 UTC
    *early, last = burst(3)
    alert = only(rules.account_takeover(last, history(*day, *early), T), "account_takeover")
    assert alert.details["signal"] == "burst" and alert.details["new_payees"] == 3
    assert alert.details["utc_hour"] == 3 and alert.details["share"] >= 0.5


def test_account_takeover_stays_quiet_on_ordinary_look_alikes() -> None:
    day = habits(30, end=NOON + 6 * H)
    *early, last = burst(3, hour_offset=-10 * H)  # 17:00 UTC: an hour the account uses
    assert rules.account_takeover(last, history(*day, *early), T) is None
    *early, last = burst(3, each=60.0)  # small amounts: no drain
    assert rules.account_takeover(last, history(*day, *early), T) is None
    *early, last = burst(2)  # two are no burst
    assert rules.account_takeover(last, history(*day, *early), T) is None
    *early, last = burst(3)
    assert rules.account_takeover(last, history(*day[-5:], *early), T) is None  # too little known


def test_account_takeover_one_earlier_payment_at_night_is_no_habit() -> None:
    day = habits(30, end=NOON + 6 * H)
    *early, last = burst(3)  # 03:00 UTC the next night
    once = txn(NOON + 14 * H + 600.0, 45.0, merchant="Usual 0")  # 02:10 UTC: within an hour of 03
    assert only(rules.account_takeover(last, history(*day, once, *early), T), "account_takeover")
    twice = txn(NOON + 14 * H + 1_500.0, 45.0, merchant="Usual 1")  # 02:25 UTC: two make a habit
    assert rules.account_takeover(last, history(*day, once, twice, *early), T) is None


def test_account_takeover_first_transfer_to_a_new_payee_after_unusual_activity() -> None:
    day = habits(30, end=NOON + 6 * H)
    odd = txn(NOON + 15 * H, 30.0, merchant="Usual 1")  # at 03:00 UTC, a usual shop
    payee = txn(NOON + 15 * H + 600.0, 2_000.0, ttype="transfer", merchant="Stranger Ltd", where=None)
    alert = only(rules.account_takeover(payee, history(*day, odd), T), "account_takeover")
    assert alert.details["signal"] == "new_payee" and alert.details["payee"] == "Stranger Ltd"
    assert rules.account_takeover(payee, history(*day), T) is None  # nothing unusual before it
    known = dataclasses.replace(payee, merchant="Usual 2")
    assert rules.account_takeover(known, history(*day, odd), T) is None


# -- structuring


def test_structuring_several_amounts_just_under_the_threshold() -> None:
    legs = [txn(NOON - H * k, 9_500.0, ttype="deposit", merchant=None) for k in (3, 2)]
    alert = only(rules.structuring(txn(NOON, 9_400.0, ttype="deposit"), history(*legs), T), "structuring")
    assert alert.details == {
        "count": 3,
        "total": 28_400.0,
        "threshold": 10_000.0,
        "margin": 0.1,
        "direction": "credit",
        "window_s": 86_400.0,
    }
    assert rules.structuring(txn(NOON, 9_400.0, ttype="deposit"), history(*legs[:1]), T) is None  # two
    assert rules.structuring(txn(NOON, 8_900.0, ttype="deposit"), history(*legs), T) is None  # not near
    # Debits and credits are separate streams of money.
    assert rules.structuring(txn(NOON, 9_400.0, ttype="transfer"), history(*legs), T) is None
    lower = dataclasses.replace(T, structuring_threshold=5_000.0)
    near = [txn(NOON - H * k, 4_800.0, ttype="transfer") for k in (3, 2)]
    assert rules.structuring(txn(NOON, 4_700.0, ttype="transfer"), history(*near), lower) is not None


# -- invoice_fraud


def test_invoice_fraud_first_round_payment_to_a_new_vendor() -> None:
    day = habits(10)
    invoice = txn(NOON, 4_500.0, ttype="transfer", merchant="Fresh Vendor Ltd", where=None)
    alert = only(rules.invoice_fraud(invoice, history(*day), T), "invoice_fraud")
    assert alert.details["round"] is True
    odd = dataclasses.replace(invoice, amount=4_512.37, amount_base=4_512.37)
    assert only(rules.invoice_fraud(odd, history(*day), T), "invoice_fraud").details["round"] is False  # 100x
    paid_before = [*day, txn(NOON - H, 4_000.0, ttype="transfer", merchant="Fresh Vendor Ltd")]
    assert rules.invoice_fraud(invoice, history(*paid_before), T) is None
    assert rules.invoice_fraud(invoice, history(*day[:3]), T) is None  # too little history
    assert (
        rules.invoice_fraud(
            dataclasses.replace(invoice, amount=1_500.0, amount_base=1_500.0), history(*day), T
        )
        is None
    )
    rich = [dataclasses.replace(t, amount=2_000.0, amount_base=2_000.0) for t in day]
    uneven = dataclasses.replace(invoice, amount=4_512.37, amount_base=4_512.37)
    assert rules.invoice_fraud(uneven, history(*rich), T) is None  # not round, 2x the median


def test_invoice_fraud_needs_its_history_in_sight_not_only_held() -> None:
    """A quiet account's window may hold events older than STATE_HISTORY_HOURS: they are no history
    of its vendors, so a payment there is not "to a vendor never paid" (the window keeps the last N
    events whatever their age; only those in sight count)."""
    invoice = txn(NOON, 4_500.0, ttype="transfer", merchant="Fresh Vendor Ltd", where=None)
    three_days_ago = habits(10, end=NOON - 3 * 86_400.0)
    assert rules.invoice_fraud(invoice, history(*three_days_ago), T) is None
    in_sight = habits(10)
    assert only(rules.invoice_fraud(invoice, history(*three_days_ago, *in_sight), T), "invoice_fraud")


# -- dormant_reactivation


def test_dormant_reactivation_after_a_long_idle() -> None:
    old = txn(NOON - 40 * 86_400.0, 30.0)
    alert = only(
        rules.dormant_reactivation(txn(NOON, 2_500.0, ttype="transfer"), history(old), T),
        "dormant_reactivation",
    )
    assert (
        alert.details["idle_days"] == 40.0 and alert.details["previous_transaction_id"] == old.transaction_id
    )
    assert rules.dormant_reactivation(txn(NOON, 500.0), history(old), T) is None  # small
    recent = txn(NOON - 10 * 86_400.0, 30.0)
    assert rules.dormant_reactivation(txn(NOON, 2_500.0), history(recent), T) is None
    assert rules.dormant_reactivation(txn(NOON, 2_500.0), history(), T) is None  # a new account


# -- high_risk_card_burst


def test_high_risk_card_burst_relative_to_the_accounts_own_spend() -> None:
    day = habits(10)
    cards = [
        txn(NOON - 600.0 * (3 - i), 150.0, merchant=f"Gift {i}", category="gift_cards") for i in range(2)
    ]
    last = txn(NOON, 250.0, merchant="Coins", category="crypto")
    alert = only(rules.high_risk_card_burst(last, history(*day, *cards), T), "high_risk_card_burst")
    assert alert.details["count"] == 3 and alert.details["total"] == 550.0
    assert rules.high_risk_card_burst(last, history(*day, *cards[:1]), T) is None  # two
    rich = [dataclasses.replace(t, amount=200.0, amount_base=200.0) for t in day]
    assert rules.high_risk_card_burst(last, history(*rich, *cards), T) is None  # ordinary for this account
    habitual = [*day, txn(NOON - 5 * H, 40.0, merchant="Coins", category="crypto")]
    assert rules.high_risk_card_burst(last, history(*habitual, *cards), T) is None  # it buys crypto anyway
    assert (
        rules.high_risk_card_burst(
            dataclasses.replace(last, merchant_category="grocery"), history(*day, *cards), T
        )
        is None
    )
    narrower = RuleThresholds(card_burst_categories="jewelry")
    assert rules.high_risk_card_burst(last, history(*day, *cards), narrower) is None


def scenes() -> list[tuple[Transaction, AccountHistory]]:
    """One firing situation per typology rule (for the registry-wide tests in test_rules.py)."""
    day = habits(30, end=NOON + 6 * H)
    *early, last_burst = burst(3)
    *mule_before, mule_last = mule(2)
    *refund_before, refund_last = cycles(2)
    return [
        (mule_last, history(*mule_before)),
        (refund_last, history(*refund_before)),
        (last_burst, history(*day, *early)),
        (
            txn(NOON, 9_400.0, ttype="deposit"),
            history(*[txn(NOON - H * k, 9_500.0, ttype="deposit") for k in (3, 2)]),
        ),
        (txn(NOON, 4_500.0, ttype="transfer", merchant="Fresh Vendor Ltd"), history(*habits(10))),
        (txn(NOON, 2_500.0, ttype="transfer"), history(txn(NOON - 40 * 86_400.0, 30.0))),
        (
            txn(NOON, 250.0, merchant="Coins", category="crypto"),
            history(
                *habits(10),
                *[
                    txn(NOON - 600.0 * (3 - i), 150.0, merchant=f"G{i}", category="gift_cards")
                    for i in range(2)
                ],
            ),
        ),
    ]


# -- the horizon: the window keeps an account's last events whatever their age, and no rule
# but dormant_reactivation looks past STATE_HISTORY_HOURS before the event it evaluates


def test_typology_rules_do_not_see_past_the_accounts_horizon() -> None:
    invoice = txn(NOON, 4_500.0, ttype="transfer", merchant="Fresh Vendor Ltd", where=None)
    recent = habits(10)
    # The same vendor paid three days ago: out of sight, so this payment is still a first one.
    stale = txn(NOON - 72 * H, 4_000.0, ttype="transfer", merchant="Fresh Vendor Ltd", where=None)
    assert rules.invoice_fraud(invoice, history(stale, *recent), T) is not None
    # Habits older than the horizon give no history to judge a takeover against.
    *early, last = burst(3)
    now_habits = habits(30, end=NOON + 6 * H)
    assert rules.account_takeover(last, history(*now_habits, *early), T) is not None
    old_habits = habits(30, end=NOON + 6 * H - 48 * H)
    assert rules.account_takeover(last, history(*old_habits, *early), T) is None
