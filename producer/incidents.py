"""Fraud incidents as plans: which messages, how far apart, and what the account does afterwards.
Pure: every draw comes from the caller's seeded RNG.

An incident is planned forward from its start: `Leg.offset_us` >= 0 is how long after the first
leg each message happens. The generator decides when the start is and how the legs reach the
stream (see generator.py). Every message of an incident carries the same `simulated_incident`
id and its `simulated_scenario`; the account is reserved while the incident runs (and for
`cooldown_us` after it), so ordinary traffic never lands inside one and attribution stays clean.

The scenarios are designed against the default RuleThresholds (utils/config.py), amounts in US
dollars priced into the account's own currency:

* card_testing: 5-8 online amounts of $0.50-1.90 at different shops, 5-40 s apart
  (rule: 4 amounts <= $2 within 600 s).
* velocity_burst, an account-takeover spree: 10-16 online purchases of $15-250 at different
  shops, 1.5-4.5 s apart, so the ninth lands within 40 s (rule: more than 8 within 60 s).
* amount_spike: one payment of 15-30x the account's recent median, at least $450, below the
  high-amount threshold (rule: 8x the median of the past day, >= $300).
* impossible_travel: a payment at home, then one in a city >= 3,000 km away in another country
  30-60 minutes later (>= 3,000 km/h; rule: 900 km/h over >= 500 km). Aftermath: the owner's
  next located payment back home while the journey back would still be impossible belongs to
  the incident too (the rule is built not to fire on it).
* rapid_repeat: the same merchant and amount 2-3 times, 15-55 s apart (duplicate rule: 300 s).
* unusual_hour_high_value: $2,500-9,000 online at 03:00-03:45 on the account's civil clock
  (rule: >= $2,000 at local 01:00-05:00).
* high_amount: $12,000-60,000 (rule: >= $10,000).
* pass_through (money mule): 2-3 cycles, each an incoming transfer (a deposit) of $800-6,000
  passed on 5-25 minutes later by a transfer of 85-98 % of it to a payee, the next cycle 5-15
  minutes after (rule: 2 cycles of >= $500 out at 0.8-1.25x within 2 h). Like every incident
  here, it fits within MAX_LEAD (generator.py); real mules are slower, which the rule's window
  (a day) allows.
* refund_abuse: 2-3 online purchases of $40-600 at a shop, each refunded in full or to 96 %
  at that shop 10-30 minutes later, the next 5-15 minutes after (rule: 2 pairs within a day,
  refund >= 90 % of the purchase).
* account_takeover: at 01:30-04:30 on the account's civil clock (when it never pays; the generator
  picks an account whose last day shows no activity within an hour of the burst), 3-5 online
  payments to shops it never used, 1-6 minutes apart, draining 60-90x its median payment
  (about its day's spending); half the time then a first transfer of $800-5,000 to a new payee
  (rule: 3 first-time payees in an hour at an unused hour, >= 50 % of the window's spending).
* structuring: 3-4 cash deposits or transfers out of $9,050-9,900, 10-35 minutes apart (rule:
  3 within 10 % below $10,000 in a day, summing above it).
* invoice_fraud: one round payment ($2,000-9,000 in hundreds of the account's currency) to a
  vendor or shop the account never paid (rule: a first payment >= $2,000, round or 5x the median).
* dormant_reactivation: an account whose last 1-3 small payments were 45-150 days ago moves
  $1,500-8,000 (rule: idle >= 30 days, then >= $1,000). Its own account id (the victim's id with
  a `.dormant` suffix), since the pool's accounts are never idle that long.
* high_risk_card_burst: 3-5 card purchases at gift-card, crypto, wallet top-up or jewellery shops,
  2-10 minutes apart, summing to 15-30x the account's median payment (rule: 3 within an hour,
  >= 10x the median debit and >= $500).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from random import Random
from typing import Any

from producer.pool import CITIES, Account, AccountPool, City, Merchant, note, price
from utils.geo import haversine_km
from utils.models import SCHEMA_VERSION
from utils.money import MINOR_UNITS, USD_PER_UNIT

__all__ = [
    "NIGHT_TARGET_S",
    "Incident",
    "Leg",
    "Victim",
    "new_uuid",
    "plan",
    "wire_txn",
]

_US_PER_S = 1_000_000
_JITTER_DEG = 0.05  # ~5 km: card terminals around town, far below the travel rule's 500 km
IMPOSSIBLE_TRAVEL_MIN_KM = 3_000.0
# A trip back faster than this is not possible either, so the owner's next payment at home
# within distance / this speed is the journey's aftermath.
_RETURN_KMH = 800.0
# Civil local seconds of day an unusual-hour incident aims at: 03:00-03:45. The rules read civil
# time where the country's zones agree and solar time elsewhere; solar time lags civil time by up
# to two hours in our cities (Anchorage, Santiago in summer), and 01:00 is still inside the rule.
NIGHT_TARGET_S = (3 * 3600, 3 * 3600 + 45 * 60)  # the generator aims at its first half hour
_ONLINE_CATEGORIES = ("digital_goods", "entertainment", "retail", "electronics", "clothing")

# Mean messages per incident, needed to turn "share of messages" into "chance to start one".
MEAN_MESSAGES = {
    "card_testing": 6.5,
    "velocity_burst": 13.0,
    "amount_spike": 1.0,
    "impossible_travel": 2.5,  # two legs, and often the owner's next payment at home
    "rapid_repeat": 2.5,
    "unusual_hour_high_value": 1.0,
    "high_amount": 1.0,
    "pass_through": 5.0,
    "refund_abuse": 5.0,
    "account_takeover": 4.5,
    "structuring": 3.5,
    "invoice_fraud": 1.0,
    "dormant_reactivation": 3.0,
    "high_risk_card_burst": 4.0,
}
# How long before its reactivation a dormant account last moved money (days).
DORMANT_IDLE_DAYS = (45.0, 150.0)


@dataclass(frozen=True, slots=True)
class Victim:
    account: Account
    account_id: str  # the account's id, or its clone's (generator.py)
    median_usd: float  # its recent median amount, as the spike rule will see it


@dataclass(slots=True)
class Leg:
    offset_us: int  # >= 0: after the incident's first message
    txn: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Incident:
    scenario: str
    incident_id: str
    legs: list[Leg]  # in time order; the first at offset 0 but for an unusual-hour one (its wait)
    cooldown_us: int = 0  # the account stays quiet this long after the last leg
    # impossible_travel: the owner's next located payment within this long after the last leg
    # is part of the incident (its aftermath)
    aftermath_us: int = 0


def new_uuid(rng: Random) -> str:
    """A UUID4 string from the seeded RNG (uuid.uuid4() reads os.urandom and would break replays)."""
    n = (rng.getrandbits(128) & ~(0xF000 << 64) & ~(0xC000 << 48)) | (0x4000 << 64) | (0x8000 << 48)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def wire_txn(
    rng: Random,
    account_id: str,
    acc: Account,
    ttype: str,
    amount: float,
    channel: str,
    merchant: Merchant | str | None,
    city: City | None,
    scenario: str | None = None,
    incident: str | None = None,
) -> dict[str, Any]:
    """One wire-format message (utils/models.py), its timestamp left to the caller. `city` None:
    card not present (online), so no place and no coordinates; the country is the account's."""
    name: str | None
    category: str | None
    if isinstance(merchant, Merchant):
        name, category = merchant.name, merchant.category
    else:
        # A name alone: an ATM's operator for a withdrawal, else a payee (no category).
        name, category = merchant, ("atm" if merchant is not None and ttype == "withdrawal" else None)
    where = city or acc.city
    return {
        "schema_version": SCHEMA_VERSION,
        "transaction_id": new_uuid(rng),
        "account_id": account_id,
        "transaction_type": ttype,
        "amount": amount,
        "currency": acc.currency,
        "timestamp": "",  # stamped by the caller: the clock is the only non-deterministic input
        "channel": channel,
        "country": where.country,
        "merchant": name,
        "merchant_category": category,
        "city": None if city is None else city.name,
        "latitude": None if city is None else round(city.lat + rng.uniform(-_JITTER_DEG, _JITTER_DEG), 5),
        "longitude": None if city is None else round(city.lon + rng.uniform(-_JITTER_DEG, _JITTER_DEG), 5),
        "simulated_scenario": scenario,
        "simulated_incident": incident,
    }


def _far_cities() -> dict[str, tuple[City, ...]]:
    return {
        home.name: tuple(
            c
            for c in CITIES
            if c.country != home.country
            and haversine_km(home.lat, home.lon, c.lat, c.lon) >= IMPOSSIBLE_TRAVEL_MIN_KM
        )
        for home in CITIES
    }


_FAR_CITIES = _far_cities()


def _offsets(gaps_s: Sequence[float]) -> list[int]:
    """Offsets (us) of events separated by `gaps_s`, the first at 0."""
    out = [0]
    for g in gaps_s:
        out.append(out[-1] + int(g * _US_PER_S))
    return out


def _shrink(amount: float, currency: str) -> float:
    """`amount` rounded down to the currency's minor unit (a refund never exceeds its purchase)."""
    decimals = MINOR_UNITS[currency] if USD_PER_UNIT[currency] >= 0.01 else 0
    scale = 10**decimals
    return math.floor(amount * scale + 1e-9) / scale


def _round_hundreds(usd: float, currency: str) -> float:
    """About `usd` as a whole number of hundreds of `currency` (an invoice's round figure), never
    below `usd`'s value rounded down by more than one hundred."""
    per_unit = USD_PER_UNIT[currency]
    step = 100.0
    while step * per_unit < 1.0:  # a hundred yen or rupiah is no round figure for an invoice
        step *= 10
    return float(max(1, math.ceil(usd / per_unit / step)) * step)


def plan(name: str, rng: Random, pool: AccountPool, victim: Victim, *, wait_us: int = 0) -> Incident:
    """One incident of scenario `name` on `victim`. `wait_us` (unusual_hour_high_value only) is
    how long after the incident's start the account's local night begins."""
    acc, aid = victim.account, victim.account_id
    incident = new_uuid(rng)

    def txn(ttype: str, usd: float, channel: str, merchant: Merchant | str | None, city: City | None) -> Leg:
        return Leg(
            0,
            wire_txn(rng, aid, acc, ttype, price(usd, acc.currency), channel, merchant, city, name, incident),
        )

    legs: list[Leg]
    cooldown_us = aftermath_us = 0
    if name == "card_testing":
        # Different shops each time: testers probe many, and a repeated shop and amount would
        # look like rapid_repeat too.
        shops = rng.sample([m for m in pool.merchants if m.category in _ONLINE_CATEGORIES], rng.randint(5, 8))
        legs = [txn("purchase", rng.uniform(0.50, 1.90), "online", m, None) for m in shops]
        offsets = _offsets([rng.uniform(5.0, 40.0) for _ in shops[1:]])
    elif name == "velocity_burst":
        shops = rng.sample(
            [m for m in pool.merchants if m.category in _ONLINE_CATEGORIES], rng.randint(10, 16)
        )
        legs = [txn("purchase", rng.uniform(15.0, 250.0), "online", m, None) for m in shops]
        offsets = _offsets([rng.uniform(1.5, 4.5) for _ in shops[1:]])
        cooldown_us = 120 * _US_PER_S  # the owner's next payment must not land in the burst's minute
    elif name == "amount_spike":
        usd = min(9_500.0, max(450.0, victim.median_usd * rng.uniform(15.0, 30.0)))
        m = rng.choice(pool.merchants)
        located = rng.random() < 0.5
        legs = [txn("purchase", usd, "pos" if located else "online", m, acc.city if located else None)]
        offsets = [0]
    elif name == "impossible_travel":
        far = rng.choice(_FAR_CITIES[acc.city.name])
        home = txn(
            "purchase", rng.uniform(0.6, 1.4) * acc.typical_amount, "pos", rng.choice(acc.merchants), acc.city
        )
        if rng.random() < 0.5:
            away = txn("purchase", rng.uniform(40.0, 900.0), "pos", rng.choice(pool.merchants), far)
        else:
            away = Leg(0, wire_txn(rng, aid, acc, "withdrawal", note(rng.uniform(100.0, 800.0), acc.currency),
                                   "atm", rng.choice(pool.atm_operators), far, name, incident))  # fmt: skip
        legs = [home, away]
        offsets = _offsets([rng.uniform(30 * 60, 60 * 60)])
        km = haversine_km(acc.city.lat, acc.city.lon, far.lat, far.lon)
        aftermath_us = int(km / _RETURN_KMH * 3600 * _US_PER_S)
    elif name == "rapid_repeat":
        m = rng.choice(acc.merchants)
        usd = max(3.0, rng.lognormvariate(acc.amount_mu, acc.amount_sigma) * 1.5)
        located = rng.random() >= acc.online_share
        one = txn("purchase", usd, "pos" if located else "online", m, acc.city if located else None)
        legs = [one]
        for _ in range(rng.randint(1, 2)):
            again = dict(one.txn, transaction_id=new_uuid(rng))
            legs.append(Leg(0, again))
        offsets = _offsets([rng.uniform(15.0, 55.0) for _ in legs[1:]])
    elif name == "unusual_hour_high_value":
        usd = rng.uniform(2_500.0, 9_000.0)
        if rng.random() < 0.6:
            legs = [txn("purchase", usd, "online", rng.choice(pool.merchants), None)]
        else:
            legs = [txn("transfer", usd, "online", None, None)]
        offsets = [wait_us]
    elif name == "high_amount":
        usd = rng.uniform(12_000.0, 60_000.0)
        if rng.random() < 0.5:
            located = rng.random() < 0.5
            m = rng.choice(pool.merchants)
            legs = [txn("purchase", usd, "pos" if located else "online", m, acc.city if located else None)]
        else:
            legs = [txn("transfer", usd, "online", None, None)]
        offsets = [0]
    elif name == "pass_through":
        legs, offsets = [], []
        payee = rng.choice(pool.payees) if pool.payees else None
        at = 0.0
        for _ in range(rng.randint(2, 3)):
            usd = rng.uniform(800.0, 6_000.0)
            delay = rng.uniform(5 * 60, 25 * 60)
            legs.append(txn("deposit", usd, "online", None, None))
            legs.append(txn("transfer", usd * rng.uniform(0.85, 0.98), "online", payee, None))
            offsets += [int(at * _US_PER_S), int((at + delay) * _US_PER_S)]
            at += delay + rng.uniform(5 * 60, 15 * 60)
    elif name == "refund_abuse":
        shops = [m for m in pool.merchants if m.category in _ONLINE_CATEGORIES and m not in acc.merchants]
        legs, offsets = [], []
        at = 0.0
        for _ in range(rng.randint(2, 3)):
            m = rng.choice(shops)
            one = txn("purchase", rng.uniform(40.0, 600.0), "online", m, None)
            paid = float(one.txn["amount"])
            share = 1.0 if rng.random() < 0.5 else rng.uniform(0.96, 1.0)
            back = Leg(0, wire_txn(rng, aid, acc, "refund", _shrink(paid * share, acc.currency), "online", m,
                                   None, name, incident))  # fmt: skip
            delay = rng.uniform(10 * 60, 30 * 60)
            legs += [one, back]
            offsets += [int(at * _US_PER_S), int((at + delay) * _US_PER_S)]
            at += delay + rng.uniform(5 * 60, 15 * 60)
    elif name == "account_takeover":
        known = set(acc.merchants)
        shops = [m for m in pool.merchants if m not in known and m.category in _ONLINE_CATEGORIES]
        n = rng.randint(3, 5)
        total = victim.median_usd * rng.uniform(60.0, 90.0)
        legs = [txn("purchase", min(8_500.0, total / n * rng.uniform(0.8, 1.2)), "online", m, None)
                for m in rng.sample(shops, n)]  # fmt: skip
        gaps = [rng.uniform(60.0, 360.0) for _ in legs[1:]]
        if pool.payees and rng.random() < 0.5:
            legs.append(txn("transfer", rng.uniform(800.0, 5_000.0), "online", rng.choice(pool.payees), None))
            gaps.append(rng.uniform(120.0, 600.0))
        offsets = [wait_us + o for o in _offsets(gaps)]
    elif name == "structuring":
        cash = rng.random() < 0.5
        legs = [
            txn("deposit", rng.uniform(9_050.0, 9_900.0), "atm", None, acc.city)
            if cash
            else txn("transfer", rng.uniform(9_050.0, 9_900.0), "online", None, None)
            for _ in range(rng.randint(3, 4))
        ]
        offsets = _offsets([rng.uniform(10 * 60, 35 * 60) for _ in legs[1:]])
    elif name == "invoice_fraud":
        usd = rng.uniform(2_100.0, 9_000.0)
        amount = _round_hundreds(usd, acc.currency)
        if pool.payees and rng.random() < 0.6:
            vendor: Merchant | str = rng.choice(pool.payees)
            ttype, channel = "transfer", "online"
        else:
            vendor = rng.choice([m for m in pool.merchants if m not in acc.merchants])
            ttype, channel = "purchase", "online"
        legs = [Leg(0, wire_txn(rng, aid, acc, ttype, amount, channel, vendor, None, name, incident))]
        offsets = [0]
    elif name == "dormant_reactivation":
        sleeper = f"{aid}.dormant{rng.randrange(1_000_000)}"
        idle_us = int(rng.uniform(*DORMANT_IDLE_DAYS) * 86_400 * _US_PER_S)
        before = [
            Leg(
                0,
                wire_txn(
                    rng,
                    sleeper,
                    acc,
                    "purchase",
                    price(rng.uniform(10.0, 80.0), acc.currency),
                    "pos",
                    rng.choice(acc.merchants),
                    acc.city,
                    name,
                    incident,
                ),
            )
            for _ in range(rng.randint(1, 3))
        ]
        ttype = rng.choice(("transfer", "withdrawal", "purchase"))
        usd = rng.uniform(1_500.0, 8_000.0)
        if ttype == "withdrawal":
            last = Leg(0, wire_txn(rng, sleeper, acc, "withdrawal", note(min(usd, 1_900.0), acc.currency), "atm",
                                   acc.atm_operator, acc.city, name, incident))  # fmt: skip
        elif ttype == "transfer":
            last = Leg(0, wire_txn(rng, sleeper, acc, "transfer", price(usd, acc.currency), "online", None, None,
                                   name, incident))  # fmt: skip
        else:
            last = Leg(0, wire_txn(rng, sleeper, acc, "purchase", price(usd, acc.currency), "online",
                                   rng.choice(pool.merchants), None, name, incident))  # fmt: skip
        legs = [*before, last]
        # Negative offsets: the account's last payments happened long before the incident starts.
        offsets = [-idle_us - (len(before) - 1 - k) * 3_600 * _US_PER_S for k in range(len(before))] + [0]
    elif name == "high_risk_card_burst":
        risky = pool.risky_merchants or tuple(m for m in pool.merchants if m.category == "electronics")
        n = rng.randint(3, 5)
        total = max(600.0, victim.median_usd * rng.uniform(15.0, 30.0))
        located = rng.random() < 0.3
        legs = [
            txn(
                "purchase",
                min(8_500.0, total / n * rng.uniform(0.8, 1.2)),
                "pos" if located else "online",
                m,
                acc.city if located else None,
            )
            for m in (rng.choice(risky) for _ in range(n))
        ]
        offsets = _offsets([rng.uniform(120.0, 600.0) for _ in legs[1:]])
    else:
        raise ValueError(f"unknown scenario {name!r}")
    for leg, off in zip(legs, offsets, strict=True):
        leg.offset_us = off
    return Incident(name, incident, legs, cooldown_us, aftermath_us)
