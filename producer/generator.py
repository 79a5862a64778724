"""Seeded transaction stream: an account pool, normal traffic and labelled fraud scenarios. No I/O.

The stream's *content* is a function of (seed, pool, fraud_rate, start, account_interval_s) only.
The clock decides nothing but the `timestamp` field:

* ``clock="simulated"``: timestamps come from an event clock that starts at `start` and advances
  by a random gap per transaction, so a seed gives a byte-identical stream (tests, replays).
* ``clock="wall"``: timestamps are ``datetime.now(UTC)`` when the message is generated, so the
  live producer's end-to-end latency is measurable. Content decisions still follow the event
  clock, which is why the same seed gives the same messages apart from their timestamps.

Fraud scenarios are emitted as consecutive messages. Their internal time gaps (e.g. 45 minutes
between the two legs of an impossible journey) are applied *backwards* from the scenario's
last event, which is stamped "now" (event clock or wall clock): no timestamp is ever ahead of
the clock, and the consumer sees them like a late batch upload from a terminal. (Measure
end-to-end latency on unlabelled messages: back-dated legs would inflate it.) Under the wall
clock "awake" still means awake on the event clock, so normal traffic may carry a local-night
wall timestamp; its amounts rarely reach the unusual-hour rule's 2,000.

Amounts are nominal and currency-agnostic, as the consumer's thresholds are (ALERT_HIGH_AMOUNT
applies to every currency). The city table therefore only uses currencies within roughly one
order of magnitude of the US dollar; JPY, KRW, INR and the like would turn every coffee into a
"high amount".

Scenarios are designed against the default RuleThresholds in utils/config.py so that each one
crosses its rule and normal traffic rarely does:

* normal amounts are capped at 9,000 (< ALERT_HIGH_AMOUNT 10,000); normal accounts only
  transact in their local daytime (never in the 01:00-05:00 unusual-hour window of the event
  clock), stay within ~8 km of home (travel rule needs 500 km), and average one transaction per
  `account_interval_s` (600 s) of event time, far below 8 per minute.
* card_testing: 5-8 online amounts of 0.50-1.99 within ~5 minutes (rule: 4 under 2.00 in 600 s).
* amount_spike: 8-20x the account's mean amount, at least 450, below 10,000; chosen among
  accounts with >= 5 earlier transactions so the rule has history (rule: 6x, >= 300, 5 txns).
* impossible_travel: home, then a city >= 3,000 km away in another country 30-60 minutes later
  (>= 3,000 km/h; rule: 900 km/h over >= 500 km).
* rapid_repeat: same merchant and amount 2-3 times, 15-55 s apart (rule: 300 s window).
* unusual_hour_high_value: 2,500-9,000 at local 02:05-03:55, local time = UTC + longitude/15 h
  (rule: >= 2,000 in local [01:00, 05:00)). It is back-dated to the account's latest such
  moment: the event clock picks the best of 16 accounts (usually < 2 h back); under the wall
  clock the same account may need up to 24 h.
* high_amount: 12,000-60,000 (rule: >= 10,000).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any, Literal

import orjson
from faker import Faker

from utils.models import CURRENCIES, SCENARIOS, SCHEMA_VERSION

Clock = Literal["wall", "simulated"]

# A fixed default keeps `--seed` alone enough to reproduce a stream on any day.
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_S = 1_000_000
_US_PER_HOUR = 3600 * _US_PER_S
_DAY_S = 86_400.0

NORMAL_MAX_AMOUNT = 9_000.0
MIN_HISTORY_FOR_SPIKE = 5


@dataclass(frozen=True, slots=True)
class City:
    name: str
    country: str  # ISO 3166-1 alpha-2
    currency: str  # ISO 4217
    lat: float
    lon: float


# Spread over every 30-degree longitude band but one (60-90 E has no dollar-scale currency), so at
# almost any UTC time some home city is in its local night for unusual_hour_high_value.
CITIES: tuple[City, ...] = (
    City("New York", "US", "USD", 40.7128, -74.0060),
    City("Los Angeles", "US", "USD", 34.0522, -118.2437),
    City("Chicago", "US", "USD", 41.8781, -87.6298),
    City("Miami", "US", "USD", 25.7617, -80.1918),
    City("Seattle", "US", "USD", 47.6062, -122.3321),
    City("Honolulu", "US", "USD", 21.3069, -157.8583),
    City("Anchorage", "US", "USD", 61.2181, -149.9003),
    City("Toronto", "CA", "CAD", 43.6532, -79.3832),
    City("Vancouver", "CA", "CAD", 49.2827, -123.1207),
    City("Montreal", "CA", "CAD", 45.5017, -73.5673),
    City("São Paulo", "BR", "BRL", -23.5505, -46.6333),
    City("Rio de Janeiro", "BR", "BRL", -22.9068, -43.1729),
    City("Lima", "PE", "PEN", -12.0464, -77.0428),
    City("London", "GB", "GBP", 51.5074, -0.1278),
    City("Manchester", "GB", "GBP", 53.4808, -2.2426),
    City("Edinburgh", "GB", "GBP", 55.9533, -3.1883),
    City("Paris", "FR", "EUR", 48.8566, 2.3522),
    City("Berlin", "DE", "EUR", 52.5200, 13.4050),
    City("Madrid", "ES", "EUR", 40.4168, -3.7038),
    City("Rome", "IT", "EUR", 41.9028, 12.4964),
    City("Amsterdam", "NL", "EUR", 52.3676, 4.9041),
    City("Lisbon", "PT", "EUR", 38.7223, -9.1393),
    City("Dublin", "IE", "EUR", 53.3498, -6.2603),
    City("Vienna", "AT", "EUR", 48.2082, 16.3738),
    City("Athens", "GR", "EUR", 37.9838, 23.7275),
    City("Helsinki", "FI", "EUR", 60.1699, 24.9384),
    City("Zurich", "CH", "CHF", 47.3769, 8.5417),
    City("Stockholm", "SE", "SEK", 59.3293, 18.0686),
    City("Oslo", "NO", "NOK", 59.9139, 10.7522),
    City("Copenhagen", "DK", "DKK", 55.6761, 12.5683),
    City("Warsaw", "PL", "PLN", 52.2297, 21.0122),
    City("Casablanca", "MA", "MAD", 33.5731, -7.5898),
    City("Tel Aviv", "IL", "ILS", 32.0853, 34.7818),
    City("Dubai", "AE", "AED", 25.2048, 55.2708),
    City("Riyadh", "SA", "SAR", 24.7136, 46.6753),
    City("Singapore", "SG", "SGD", 1.3521, 103.8198),
    City("Kuala Lumpur", "MY", "MYR", 3.1390, 101.6869),
    City("Hong Kong", "HK", "HKD", 22.3193, 114.1694),
    City("Shanghai", "CN", "CNY", 31.2304, 121.4737),
    City("Sydney", "AU", "AUD", -33.8688, 151.2093),
    City("Melbourne", "AU", "AUD", -37.8136, 144.9631),
    City("Perth", "AU", "AUD", -31.9505, 115.8605),
    City("Auckland", "NZ", "NZD", -36.8485, 174.7633),
)
assert all(c.currency in CURRENCIES for c in CITIES)

# Category -> amount factor relative to the account's typical spend. Kept within 0.4-2x so that a
# normal purchase seldom looks like an 8x spike to the consumer.
CATEGORIES: dict[str, float] = {
    "grocery": 1.0,
    "restaurant": 0.8,
    "fuel": 1.0,
    "retail": 1.3,
    "electronics": 2.0,
    "travel": 2.0,
    "entertainment": 0.7,
    "health": 1.0,
    "utilities": 1.5,
    "digital_goods": 0.4,
    "clothing": 1.2,
    "home_improvement": 1.6,
}
_ONLINE_CATEGORIES = ("digital_goods", "entertainment", "retail")
_MERCHANTS_PER_CATEGORY = 20
_ATM_OPERATORS = 24

# (type, cumulative weight): purchases dominate card traffic.
_TYPE_CUM = ((0.72, "purchase"), (0.82, "withdrawal"), (0.90, "transfer"), (0.96, "deposit"), (1.0, "refund"))

IMPOSSIBLE_TRAVEL_MIN_KM = 3_000.0
_JITTER_DEG = 0.05  # ~5 km: card terminals around town, far below the travel rule's 500 km


@dataclass(frozen=True, slots=True)
class Merchant:
    name: str
    category: str


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    city: City
    currency: str
    categories: tuple[str, ...]
    merchants: tuple[Merchant, ...]  # usual merchants, drawn from the account's categories
    atm_operator: str
    typical_amount: float  # mean of the account's purchase amounts (before category factor)
    amount_sigma: float  # lognormal shape: how spread out the account's spending is
    active_start: int  # local hour, inclusive
    active_end: int  # local hour, exclusive (24 = midnight)
    online_share: float
    activity: float  # relative transaction frequency; the pool's mean is about 1

    @property
    def amount_mu(self) -> float:
        # mu chosen so that the lognormal's *mean* (not median) is typical_amount
        return math.log(self.typical_amount) - self.amount_sigma**2 / 2


@dataclass(frozen=True, slots=True)
class AccountPool:
    accounts: tuple[Account, ...]
    merchants: tuple[Merchant, ...]
    atm_operators: tuple[str, ...]

    @classmethod
    def create(cls, n: int, seed: int) -> AccountPool:
        """`n` accounts with homes, habits and usual merchants; same (n, seed), same pool."""
        if n < 1:
            raise ValueError(f"account pool needs at least 1 account, got {n}")
        rng = Random(f"txmon-pool:{seed}")
        fake = Faker("en_US")
        fake.seed_instance(seed)
        # Names are drawn once here: Faker costs ~150 us a call, too slow per transaction.
        seen: set[str] = set()
        by_category = {
            category: [
                Merchant(_unique_company(fake, seen), category) for _ in range(_MERCHANTS_PER_CATEGORY)
            ]
            for category in CATEGORIES
        }
        merchants = tuple(m for ms in by_category.values() for m in ms)
        atms = tuple(f"{fake.last_name()} Bank ATM" for _ in range(_ATM_OPERATORS))
        width = max(8, len(str(n)))
        accounts = []
        for i in range(1, n + 1):
            city = rng.choice(CITIES)
            categories = tuple(rng.sample(list(CATEGORIES), rng.randint(3, 6)))
            usual = tuple(m for c in categories for m in rng.sample(by_category[c], rng.randint(1, 3)))
            accounts.append(
                Account(
                    account_id=f"ACC{i:0{width}d}",
                    city=city,
                    currency=city.currency,
                    categories=categories,
                    merchants=usual,
                    atm_operator=rng.choice(atms),
                    typical_amount=round(min(400.0, max(8.0, rng.lognormvariate(math.log(45.0), 0.7))), 2),
                    amount_sigma=rng.uniform(0.35, 0.75),
                    active_start=rng.randint(6, 9),
                    active_end=rng.randint(21, 24),
                    online_share=rng.uniform(0.15, 0.6),
                    activity=min(3.0, max(0.2, rng.lognormvariate(-0.125, 0.5))),
                )
            )
        return cls(tuple(accounts), merchants, atms)


def _unique_company(fake: Faker, seen: set[str]) -> str:
    # A name shared by two categories would blur "usual merchant" and the duplicate rule.
    while True:
        name = str(fake.company())
        if name not in seen:
            seen.add(name)
            return name


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance on a 6371 km sphere."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(a))


def local_hour(ts: datetime, longitude: float) -> float:
    """Solar local time of day in hours (0-24): UTC + longitude/15 h, as the rules approximate it."""
    utc = ts.astimezone(UTC)
    hours = utc.hour + utc.minute / 60 + utc.second / 3600 + utc.microsecond / 3.6e9
    return (hours + longitude / 15.0) % 24.0


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

# Mean messages per scenario, needed to turn "share of messages" into "chance to start one".
_SCENARIO_MEAN_LEN = {
    "card_testing": 6.5,
    "amount_spike": 1.0,
    "impossible_travel": 2.0,
    "rapid_repeat": 2.5,
    "unusual_hour_high_value": 1.0,
    "high_amount": 1.0,
}


@dataclass(slots=True)
class _Pending:
    """A scenario message waiting to be stamped and emitted."""

    txn: dict[str, Any]
    offset_us: int  # <= 0: how far before the scenario's anchor it happened
    night: tuple[float, float] | None = None  # (longitude, target local second of day)


class TransactionGenerator:
    """An endless iterator of wire-format dicts (see utils/models.py); fraud is labelled.

    `fraud_rate` is the expected share of *messages* that belong to a scenario. `scenarios`
    restricts which ones are injected (all of SCENARIOS by default, chosen uniformly per
    instance). `account_interval_s` is the mean event-time gap between two transactions of an
    average account while it is awake; the global gap follows from how many accounts are awake,
    so the stream has a day/night rhythm.
    """

    def __init__(
        self,
        seed: int,
        accounts: AccountPool,
        fraud_rate: float = 0.02,
        clock: Clock = "simulated",
        start: datetime = DEFAULT_START,
        *,
        account_interval_s: float = 600.0,
        scenarios: Sequence[str] = SCENARIOS,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        if not 0.0 <= fraud_rate <= 1.0:
            raise ValueError(f"fraud_rate must be within [0, 1], got {fraud_rate}")
        if clock not in ("wall", "simulated"):
            raise ValueError(f"clock must be 'wall' or 'simulated', got {clock!r}")
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        unknown = set(scenarios) - set(SCENARIOS)
        if unknown or not scenarios:
            raise ValueError(f"scenarios must be a non-empty subset of {SCENARIOS}, got {list(scenarios)}")
        if account_interval_s <= 0:
            raise ValueError("account_interval_s must be positive")

        self._rng = Random(f"txmon-stream:{seed}")
        self.pool = accounts
        self._accounts = accounts.accounts
        self.fraud_rate = fraud_rate
        self.clock: Clock = clock
        self._now = now or (lambda: datetime.now(UTC))
        self._t_us = (start - _EPOCH) // timedelta(microseconds=1)
        self._scenarios = tuple(scenarios)
        mean_len = sum(_SCENARIO_MEAN_LEN[s] for s in self._scenarios) / len(self._scenarios)
        # share f of messages: p*L / (p*L + 1 - p) = f  =>  p = f / (L(1-f) + f)
        self._p_scenario = fraud_rate / (mean_len * (1 - fraud_rate) + fraud_rate) if fraud_rate else 0.0
        self._pending: deque[_Pending] = deque()
        self._history_n = [0] * len(self._accounts)
        self._history_sum = [0.0] * len(self._accounts)
        self._last_atm_us = [-(1 << 62)] * len(self._accounts)
        self._warm: list[int] = []  # accounts with enough history for the spike rule to judge
        self._online = tuple(m for m in accounts.merchants if m.category in _ONLINE_CATEGORIES)
        self._build_hour_tables(account_interval_s)

    def _build_hour_tables(self, account_interval_s: float) -> None:
        # For each UTC hour: who is awake (local hour within active hours), weighted by activity,
        # and the mean global gap that gives each awake account one txn per account_interval_s.
        self._awake: list[tuple[tuple[int, ...], tuple[float, ...], float]] = []
        self._gap_rate: list[float] = []
        for utc_h in range(24):
            idx: list[int] = []
            cum: list[float] = []
            total = 0.0
            for i, acc in enumerate(self._accounts):
                local = int((utc_h + 0.5 + acc.city.lon / 15.0) % 24)
                if acc.active_start <= local < acc.active_end:
                    total += acc.activity
                    idx.append(i)
                    cum.append(total)
            self._awake.append((tuple(idx), tuple(cum), total))
            self._gap_rate.append(total / account_interval_s)  # events per second of event time

    # -- iteration ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._pending:
            return self._stamp(self._pending.popleft())
        self._advance()
        rng = self._rng
        if self._p_scenario and rng.random() < self._p_scenario:
            self._pending.extend(self._scenario(rng.choice(self._scenarios)))
            return self._stamp(self._pending.popleft())
        txn = self._normal(self._pick_awake())
        txn["timestamp"] = self._timestamp(0)
        return txn

    def next_batch(self, n: int) -> list[dict[str, Any]]:
        nxt = self.__next__
        return [nxt() for _ in range(n)]

    def scenario(self, name: str) -> list[dict[str, Any]]:
        """One instance of scenario `name`, all its messages at once: for rule tests and demos.

        It draws from the same RNG and event clock as the stream, so it stays deterministic,
        but it does not count towards `fraud_rate`.
        """
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; one of {SCENARIOS}")
        self._advance()
        return [self._stamp(p) for p in self._scenario(name)]

    @property
    def event_time(self) -> datetime:
        """Where the event clock stands (it drives content under both clocks)."""
        return _EPOCH + timedelta(microseconds=self._t_us)

    # -- clock -------------------------------------------------------------------------------

    def _advance(self) -> None:
        hour = self._skip_sleeping_hours()
        self._t_us += int(self._rng.expovariate(self._gap_rate[hour]) * _US_PER_S)
        self._skip_sleeping_hours()

    def _skip_sleeping_hours(self) -> int:
        # An hour with nobody awake (small pools) is skipped rather than filled with night traffic.
        hour = (self._t_us // _US_PER_HOUR) % 24
        while not self._gap_rate[hour]:
            self._t_us = (self._t_us // _US_PER_HOUR + 1) * _US_PER_HOUR
            hour = (hour + 1) % 24
        return hour

    def _timestamp(self, offset_us: int) -> str:
        if self.clock == "wall":
            when = self._now() + timedelta(microseconds=offset_us)
        else:
            when = _EPOCH + timedelta(microseconds=self._t_us + offset_us)
        return when.isoformat(timespec="microseconds")

    def _stamp(self, p: _Pending) -> dict[str, Any]:
        if p.night is None:
            p.txn["timestamp"] = self._timestamp(p.offset_us)
        else:
            lon, target = p.night
            anchor = self._now() if self.clock == "wall" else self.event_time
            back = _seconds_back_to_local(anchor, lon, target)
            p.txn["timestamp"] = (anchor - timedelta(seconds=back)).isoformat(timespec="microseconds")
        return p.txn

    # -- normal traffic ----------------------------------------------------------------------

    def _pick_awake(self) -> int:
        idx, cum, total = self._awake[(self._t_us // _US_PER_HOUR) % 24]
        return idx[min(bisect_right(cum, self._rng.random() * total), len(idx) - 1)]

    def _normal(self, i: int) -> dict[str, Any]:
        rng = self._rng
        acc = self._accounts[i]
        r = rng.random()
        ttype = next(t for cum, t in _TYPE_CUM if r < cum)
        if ttype == "withdrawal":
            # Nobody takes cash twice within an hour; round ATM amounts would otherwise repeat
            # and look like rapid_repeat to the duplicate rule.
            if self._t_us - self._last_atm_us[i] < _US_PER_HOUR:
                ttype = "purchase"
            else:
                self._last_atm_us[i] = self._t_us
        merchant: str | None
        category: str | None
        base = rng.lognormvariate(acc.amount_mu, acc.amount_sigma)
        if ttype == "purchase" or ttype == "refund":
            m = rng.choice(acc.merchants) if rng.random() < 0.9 else rng.choice(self.pool.merchants)
            merchant, category = m.name, m.category
            channel = "online" if rng.random() < acc.online_share else "pos"
            amount = base * CATEGORIES[m.category] * (0.8 if ttype == "refund" else 1.0)
        elif ttype == "withdrawal":
            merchant, category, channel = acc.atm_operator, "atm", "atm"
            amount = min(800.0, max(20.0, float(round(base * 1.5 / 20) * 20)))  # ATMs dispense notes
        else:  # transfer, deposit: account to account, no merchant
            merchant = category = None
            channel = "online" if ttype == "transfer" or rng.random() < 0.5 else "atm"
            amount = base * 2.0
        amount = round(min(NORMAL_MAX_AMOUNT, max(1.0, amount)), 2)
        self._history_n[i] += 1
        self._history_sum[i] += amount
        if self._history_n[i] == MIN_HISTORY_FOR_SPIKE:
            self._warm.append(i)
        return self._txn(acc, ttype, amount, channel, merchant, category, acc.city, None)

    def _txn(
        self,
        acc: Account,
        ttype: str,
        amount: float,
        channel: str,
        merchant: str | None,
        category: str | None,
        city: City,
        scenario: str | None,
    ) -> dict[str, Any]:
        rng = self._rng
        # UUID4 from the seeded RNG (uuid.uuid4() reads os.urandom and would break replays).
        n = (rng.getrandbits(128) & ~(0xF000 << 64) & ~(0xC000 << 48)) | (0x4000 << 64) | (0x8000 << 48)
        h = f"{n:032x}"
        return {
            "schema_version": SCHEMA_VERSION,
            "transaction_id": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
            "account_id": acc.account_id,
            "transaction_type": ttype,
            "amount": amount,
            "currency": acc.currency,
            "timestamp": "",  # stamped by the caller: the clock is the only non-deterministic input
            "channel": channel,
            "country": city.country,
            "merchant": merchant,
            "merchant_category": category,
            "city": city.name,
            "latitude": round(city.lat + rng.uniform(-_JITTER_DEG, _JITTER_DEG), 5),
            "longitude": round(city.lon + rng.uniform(-_JITTER_DEG, _JITTER_DEG), 5),
            "simulated_scenario": scenario,
        }

    # -- fraud scenarios ---------------------------------------------------------------------

    def _scenario(self, name: str) -> list[_Pending]:
        rng = self._rng
        if name == "card_testing":
            acc = self._accounts[self._pick_awake()]
            n = rng.randint(5, 8)
            offsets = _backwards([rng.uniform(5.0, 40.0) for _ in range(n - 1)])
            # Different merchants each time: testers probe many shops, and a repeated
            # merchant+amount would make this look like rapid_repeat too.
            shops = rng.sample(self._online, n)
            return [
                _Pending(
                    self._txn(
                        acc,
                        "purchase",
                        round(rng.uniform(0.50, 1.99), 2),
                        "online",
                        m.name,
                        m.category,
                        acc.city,
                        name,
                    ),
                    off,
                )
                for m, off in zip(shops, offsets, strict=True)
            ]
        if name == "amount_spike":
            # Only accounts with history can spike; before any exist the label is still ground
            # truth, the rule simply cannot see it (documented in the module docstring).
            i = rng.choice(self._warm) if self._warm else self._pick_awake()
            acc = self._accounts[i]
            mean = self._history_sum[i] / self._history_n[i] if self._history_n[i] else 0.0
            base = max(acc.typical_amount, mean)
            amount = round(min(9_500.0, max(450.0, base * rng.uniform(8.0, 20.0))), 2)
            m = rng.choice(self.pool.merchants)
            channel = "online" if rng.random() < 0.5 else "pos"
            return [
                _Pending(self._txn(acc, "purchase", amount, channel, m.name, m.category, acc.city, name), 0)
            ]
        if name == "impossible_travel":
            acc = self._accounts[self._pick_awake()]
            far = rng.choice(_FAR_CITIES[acc.city.name])
            gap_s = rng.uniform(30 * 60, 60 * 60)
            home_m = rng.choice(acc.merchants)
            home_amount = round(rng.lognormvariate(acc.amount_mu, acc.amount_sigma), 2)
            first = self._txn(
                acc, "purchase", max(1.0, home_amount), "pos", home_m.name, home_m.category, acc.city, name
            )
            if rng.random() < 0.5:
                away_m = rng.choice(self.pool.merchants)
                second = self._txn(
                    acc,
                    "purchase",
                    round(rng.uniform(40.0, 900.0), 2),
                    "pos",
                    away_m.name,
                    away_m.category,
                    far,
                    name,
                )
            else:
                second = self._txn(
                    acc,
                    "withdrawal",
                    float(rng.randint(5, 40) * 20),
                    "atm",
                    rng.choice(self.pool.atm_operators),
                    "atm",
                    far,
                    name,
                )
            return [_Pending(first, -int(gap_s * _US_PER_S)), _Pending(second, 0)]
        if name == "rapid_repeat":
            acc = self._accounts[self._pick_awake()]
            k = rng.randint(2, 3)
            m = rng.choice(acc.merchants)
            amount = round(max(1.0, rng.lognormvariate(acc.amount_mu, acc.amount_sigma) * 1.5), 2)
            amount = max(amount, 2.0)  # keep it out of card_testing's tiny-amount range
            channel = "online" if rng.random() < acc.online_share else "pos"
            offsets = _backwards([rng.uniform(15.0, 55.0) for _ in range(k - 1)])
            return [
                _Pending(self._txn(acc, "purchase", amount, channel, m.name, m.category, acc.city, name), off)
                for off in offsets
            ]
        if name == "unusual_hour_high_value":
            target = rng.uniform(2 * 3600 + 300, 4 * 3600 - 300)  # local second of day, 02:05-03:55
            # Prefer an account already in its local night, so the event is barely back-dated.
            now = self.event_time
            candidates = [rng.randrange(len(self._accounts)) for _ in range(16)]
            i = min(candidates, key=lambda j: _seconds_back_to_local(now, self._accounts[j].city.lon, target))
            acc = self._accounts[i]
            amount = round(rng.uniform(2_500.0, 9_000.0), 2)
            if rng.random() < 0.6:
                m = rng.choice(self.pool.merchants)
                txn = self._txn(acc, "purchase", amount, "online", m.name, m.category, acc.city, name)
            else:
                txn = self._txn(acc, "transfer", amount, "online", None, None, acc.city, name)
            return [_Pending(txn, 0, night=(txn["longitude"], target))]
        if name == "high_amount":
            acc = self._accounts[self._pick_awake()]
            amount = round(rng.uniform(12_000.0, 60_000.0), 2)
            if rng.random() < 0.5:
                m = rng.choice(self.pool.merchants)
                channel = "online" if rng.random() < 0.5 else "pos"
                txn = self._txn(acc, "purchase", amount, channel, m.name, m.category, acc.city, name)
            else:
                txn = self._txn(acc, "transfer", amount, "online", None, None, acc.city, name)
            return [_Pending(txn, 0)]
        raise ValueError(f"unknown scenario {name!r}")


def _backwards(gaps_s: list[float]) -> list[int]:
    """Offsets (us, <= 0) for events separated by `gaps_s`, the last one at 0."""
    offsets = [0]
    for g in reversed(gaps_s):
        offsets.append(offsets[-1] - int(g * _US_PER_S))
    return offsets[::-1]


def _seconds_back_to_local(anchor: datetime, longitude: float, target_s: float) -> float:
    """Seconds to go back from `anchor` to the latest moment whose local time is `target_s`."""
    utc_s = (anchor - _EPOCH) / timedelta(seconds=1)
    local_s = (utc_s + longitude * 240.0) % _DAY_S  # 240 s of local time per degree
    return (local_s - target_s) % _DAY_S


def encode(txn: dict[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) for Kafka: key = account_id so one account stays on one partition, in order."""
    return txn["account_id"].encode(), orjson.dumps(txn)
