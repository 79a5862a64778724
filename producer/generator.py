"""Seeded transaction stream: ordinary traffic of an account pool and labelled fraud incidents. No I/O.

The stream's content is a function of (seed, pool, fraud_rate, start, clones, account_interval_s);
the clock decides when messages happen:

* ``clock="simulated"``: an event clock starts at `start` and advances by a random gap per
  message (shorter when more accounts are awake), so a seed and a start give a byte-identical
  stream. An incident's messages are emitted one after the other, stamped forward from the event
  clock (its last leg at most `MAX_LEAD` ahead), while the account is reserved, so each account's
  own timestamps only ever move forward. `simulated_start` places a run after the previous one.
* ``clock="wall"``: every message is stamped with the time it is generated (`now`). Incident legs
  that happen later are held back until their time comes, so nothing is ever stamped ahead of the
  wall clock; legs still held when the run stops are never sent. To keep each account's own pace
  realistic at any rate, the pool is scaled to the rate with `clones`: account ACC00000042 and its
  clones ACC00000042.1 ... ACC00000042.(k-1) share its home and habits but transact separately.

An account transacts only while awake on its civil clock (its city's IANA zone), about once per
`account_interval_s` of event time, in its own currency. Ordinary traffic is designed to stay
below every rule (utils/config.py RuleThresholds, in US dollars): amounts between $2.50 and
$9,000 within about 7x of the account's median, no night payments, no move beyond ~8 km from
home, no second ATM withdrawal within an hour. The incidents are described in incidents.py.
"""

from __future__ import annotations

import heapq
import math
import zlib
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from random import Random
from statistics import median
from typing import Any, Literal

import orjson

from producer.incidents import MEAN_MESSAGES, NIGHT_TARGET_S, Incident, Victim, plan, wire_txn
from producer.pool import CATEGORIES, AccountPool, note, price
from utils.geo import country_zones, zone_hour
from utils.models import SCENARIOS

__all__ = [
    "DEFAULT_START",
    "MAX_LEAD",
    "AccountPool",
    "Clock",
    "TransactionGenerator",
    "clones_for_rate",
    "encode",
    "simulated_start",
]

Clock = Literal["wall", "simulated"]

# A fixed default keeps `--seed` alone enough to reproduce a stream in tests; the producer's
# command line places a simulated run after the previous one instead (simulated_start).
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
# How far ahead of the event clock a simulated incident may stamp its legs (the wait for a local
# night, the second leg of a journey), plus slack for the next message's gap.
MAX_LEAD = timedelta(hours=2, minutes=5)
# The unthrottled wall-clock producer is scaled for this rate (it does not reach it, so each
# account keeps at most its own pace).
FULL_SPEED_RATE = 50_000.0

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_S = 1_000_000
_US_PER_HOUR = 3600 * _US_PER_S
_US_PER_DAY = 24 * _US_PER_HOUR
_MAX_NIGHT_WAIT_US = 2 * _US_PER_HOUR
_NIGHT_CANDIDATES = 32
_RECENT = 25  # amounts remembered per account for the spike scenario's baseline
_WARM = 8  # ... and how many it needs first
_HABITS = 15  # ... and for a takeover (the rule wants 10 events before the burst)
_SLEEP_S = (1.5 * 3600, 4.0 * 3600)
# From a takeover's chosen start to its last leg at most: the half hour the start is spread over,
# then up to four 6-minute gaps and a 10-minute one before the payee transfer (incidents.py).
_TAKEOVER_SPAN_US = (
    1800 + 4 * 360 + 600
) * 1_000_000  # civil seconds of day a takeover may start: all asleep

MIN_USD = 2.50  # above card_testing's $2.00: ordinary payments are never probes
NORMAL_MAX_USD = 9_000.0  # below high_amount's $10,000
_Z_CLIP = 2.0  # ordinary amounts stay within 2 sigma of the account's habit

# (type, cumulative weight): purchases dominate card traffic; refunds are rare (about 1.5 %).
_TYPE_CUM = (
    (0.745, "purchase"),
    (0.845, "withdrawal"),
    (0.925, "transfer"),
    (0.985, "deposit"),
    (1.0, "refund"),
)
# Every tenth account of the pool is a business: irregular income from clients, payments to a few
# usual vendors, no salary.
_BUSINESS_EVERY = 10
_CLIENT_SHARE = 0.06  # of a business account's messages: a client's payment (a credit)
_VENDOR_SHARE = 0.05  # ... a payment to one of its usual vendors
# Ordinary credits and debits stay out of the structuring band (utils/config.py: $9,000-10,000).
_BAND = (8_800.0, 10_050.0)


def simulated_start(now: datetime, frontier: datetime | None, *, days_back: float) -> datetime:
    """Where a simulated run begins: right after `frontier` (the latest event time already in the
    stream, padded by MAX_LEAD) so that no account's history is written twice, but never more than
    `days_back` before `now` (the data stays well inside retention) and never after `now`."""
    earliest = (now - timedelta(days=days_back)).replace(microsecond=0)
    if frontier is None or frontier <= earliest:
        return earliest
    return min(frontier, now)


def clones_for_rate(rate: float, natural_rate: float) -> int:
    """How many copies of each account the wall clock needs so that `rate` messages per second
    (0: full speed) keep every account at its own pace (`natural_rate` is the pool's)."""
    wanted = FULL_SPEED_RATE if rate <= 0 else rate
    return max(1, math.ceil(wanted / natural_rate))


class TransactionGenerator:
    """An endless iterator of wire-format dicts (utils/models.py); fraud is labelled per incident.

    `fraud_rate` is the expected share of *messages* that belong to an incident. `scenarios`
    restricts which ones are injected (all of SCENARIOS by default, chosen uniformly).
    `account_interval_s` is the mean event-time gap between two transactions of an average
    account while it is awake. `clones` > 1 scales the pool (see the module docstring).
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
        clones: int = 1,
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
        if account_interval_s <= 0 or clones < 1:
            raise ValueError("account_interval_s must be positive and clones at least 1")

        self._rng = Random(f"txmon-stream:{seed}")
        self.pool = accounts
        self._accounts = accounts.accounts
        self.fraud_rate = fraud_rate
        self.clock: Clock = clock
        self.clones = clones
        self._interval_s = account_interval_s
        self._now = now or (lambda: datetime.now(UTC))
        self._t_us = (start - _EPOCH) // timedelta(microseconds=1)
        self._scenarios = tuple(scenarios)
        mean_len = sum(MEAN_MESSAGES[s] for s in self._scenarios) / len(self._scenarios)
        # share f of messages: p*L / (p*L + 1 - p) = f  =>  p = f / (L(1-f) + f)
        self._p_incident = fraud_rate / (mean_len * (1 - fraud_rate) + fraud_rate) if fraud_rate else 0.0
        self._pending: deque[dict[str, Any]] = deque()  # simulated: the incident being emitted
        self._held: list[tuple[int, int, dict[str, Any]]] = []  # wall: (due, seq, txn) heap
        self._held_seq = 0
        self._reserved: dict[int, int] = {}  # account key -> reserved until (event time, us)
        self._aftermath: dict[int, tuple[str, str, int]] = {}  # key -> (scenario, incident, deadline)
        n = len(self._accounts)
        # Per-account memory only for an unscaled pool: with clones each copy is rarely seen twice.
        self._recent: list[deque[float]] = [deque(maxlen=_RECENT) for _ in range(n)] if clones == 1 else []
        # When each account (key) last took cash; keys share a slot beyond a million accounts,
        # which only ever turns a withdrawal into a purchase, and keeps the memory bounded.
        self._last_atm_us = array("q", [-(1 << 62)]) * min(n * clones, 1 << 20)
        self._last_located_us = [-(1 << 62)] * n if clones == 1 else []
        # When each account last paid in each UTC hour of day (24 slots per account): a takeover
        # needs a victim whose last day shows no activity near the hours of the burst.
        self._hour_used_us = array("q", [-(1 << 62)]) * (24 * n) if clones == 1 else array("q")
        # The UTC day each account (key) last saw its calendar (salary, bill, subscription).
        self._calendar_day = array("q", [-1]) * min(n * clones, 1 << 20)
        digital = [m for m in accounts.merchants if m.category == "digital_goods"]
        self._subscriptions = tuple(digital) or accounts.merchants
        self._table_day = -1
        self._awake: list[tuple[tuple[int, ...], tuple[float, ...], float]] = []
        self._gap_rate: list[float] = []
        self._tables_for(self._t_us)
        self.natural_rate = sum(total for _, _, total in self._awake) / 24 / account_interval_s
        self.latest: datetime | None = None  # latest timestamp stamped so far

    # -- iteration ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._pending:
            return self._pending.popleft()
        if self.clock == "wall":
            now_us = (self._now() - _EPOCH) // timedelta(microseconds=1)
            self._t_us = now_us
            self._tables_for(now_us)
            if self._held and self._held[0][0] <= now_us:
                return self._stamp(heapq.heappop(self._held)[2], now_us)
        else:
            self._advance()
        rng = self._rng
        if self._p_incident and rng.random() < self._p_incident:
            first = self._start(rng.choice(self._scenarios))
            if first is not None:
                return first
        return self._normal()

    def next_batch(self, n: int, *, not_after: datetime | None = None) -> list[dict[str, Any]]:
        """Up to `n` messages. Simulated clock: stops early rather than let any timestamp pass
        `not_after` (so a run that catches up with the present goes on at its pace, not ahead)."""
        nxt = self.__next__
        if not_after is None or self.clock == "wall":
            return [nxt() for _ in range(n)]
        limit = (not_after - MAX_LEAD - _EPOCH) // timedelta(microseconds=1)
        out: list[dict[str, Any]] = []
        while len(out) < n and (self._pending or self._t_us <= limit):
            out.append(nxt())
        return out

    def scenario(self, name: str) -> list[dict[str, Any]]:
        """One incident of scenario `name`, all its messages, stamped on the event clock: for rule
        tests and demos. Same RNG and clock as the stream, but it does not count towards
        `fraud_rate`. Raises ValueError if no account can take it now."""
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; one of {SCENARIOS}")
        self._advance()
        clock, self.clock = self.clock, "simulated"
        try:
            first = self._start(name)
        finally:
            self.clock = clock
        if first is None:
            raise ValueError(f"no account can take a {name} incident at {self.event_time}")
        legs = [first, *self._pending]
        self._pending.clear()
        return legs

    @property
    def event_time(self) -> datetime:
        """Where the event clock stands."""
        return _EPOCH + timedelta(microseconds=self._t_us)

    # -- clock -------------------------------------------------------------------------------

    def _advance(self) -> None:
        hour = self._skip_sleeping_hours()
        self._t_us += int(self._rng.expovariate(self._gap_rate[hour]) * _US_PER_S)
        self._skip_sleeping_hours()

    def _skip_sleeping_hours(self) -> int:
        # An hour with nobody awake (small pools) is skipped rather than filled with night traffic.
        self._tables_for(self._t_us)
        hour = (self._t_us // _US_PER_HOUR) % 24
        while not self._gap_rate[hour]:
            self._t_us = (self._t_us // _US_PER_HOUR + 1) * _US_PER_HOUR
            self._tables_for(self._t_us)
            hour = (self._t_us // _US_PER_HOUR) % 24
        return hour

    def _tables_for(self, t_us: int) -> None:
        """Who is awake in each UTC hour of `t_us`'s day (civil time moves with daylight saving)."""
        day = t_us // _US_PER_DAY
        if day == self._table_day:
            return
        self._table_day = day
        noon = day * 86_400 + 43_200
        offset_h = {z: (zone_hour(noon, z) - 12.0) % 24 for z in {a.city.zone for a in self._accounts}}
        self._awake, self._gap_rate = [], []
        for utc_h in range(24):
            idx: list[int] = []
            cum: list[float] = []
            total = 0.0
            for i, acc in enumerate(self._accounts):
                local = int((utc_h + 0.5 + offset_h[acc.city.zone]) % 24)
                if acc.active_start <= local < acc.active_end:
                    total += acc.activity
                    idx.append(i)
                    cum.append(total)
            self._awake.append((tuple(idx), tuple(cum), total))
            self._gap_rate.append(total * self.clones / self._interval_s)  # events per second

    def _iso(self, t_us: int) -> str:
        return (_EPOCH + timedelta(microseconds=t_us)).isoformat(timespec="microseconds")

    def _stamp(self, txn: dict[str, Any], t_us: int) -> dict[str, Any]:
        txn["timestamp"] = self._iso(t_us)
        when = _EPOCH + timedelta(microseconds=t_us)
        if self.latest is None or when > self.latest:
            self.latest = when
        return txn

    # -- accounts ----------------------------------------------------------------------------

    def _key(self, i: int) -> int:
        return i * self.clones + (self._rng.randrange(self.clones) if self.clones > 1 else 0)

    def _account_id(self, key: int) -> str:
        i, j = divmod(key, self.clones)
        base = self._accounts[i].account_id
        return base if j == 0 else f"{base}.{j}"

    def _pick_awake(self) -> int:
        idx, cum, total = self._awake[(self._t_us // _US_PER_HOUR) % 24]
        return idx[min(bisect_right(cum, self._rng.random() * total), len(idx) - 1)]

    def _free(self, key: int) -> bool:
        until = self._reserved.get(key)
        if until is None:
            return True
        if until < self._t_us:
            del self._reserved[key]
            return True
        return False

    def _pick_free(self) -> int | None:
        """An awake account (key) with no incident running; None if ten tries find none."""
        for _ in range(10):
            key = self._key(self._pick_awake())
            if self._free(key):
                return key
        return None

    # -- ordinary traffic --------------------------------------------------------------------

    def _normal(self) -> dict[str, Any]:
        rng = self._rng
        key = self._pick_free()
        while key is None:  # a tiny pool with every awake account inside an incident
            if self.clock == "wall":  # the wall clock cannot wait: someone awake pays after all
                key = self._key(self._pick_awake())
                break
            self._t_us += _US_PER_S * 60
            self._skip_sleeping_hours()
            key = self._pick_free()
        i = key // self.clones
        acc = self._accounts[i]
        if self._hour_used_us:
            self._hour_used_us[24 * i + (self._t_us // _US_PER_HOUR) % 24] = self._t_us
        slot = key % len(self._calendar_day)
        day = self._t_us // _US_PER_DAY
        if self._calendar_day[slot] != day:
            self._calendar_day[slot] = day
            due = self._calendar(key, acc, day)
            if due is not None:
                return self._stamp(due, self._t_us)
        if i % _BUSINESS_EVERY == 0 and self.pool.payees:
            r = rng.random()
            if r < _CLIENT_SHARE + _VENDOR_SHARE:
                return self._stamp(self._business(key, acc, client=r < _CLIENT_SHARE), self._t_us)
        r = rng.random()
        ttype = next(t for cum, t in _TYPE_CUM if r < cum)
        if ttype == "withdrawal":
            # Nobody takes cash twice within an hour; round ATM amounts would otherwise repeat
            # and look like rapid_repeat to the duplicate rule.
            slot = key % len(self._last_atm_us)
            if self._t_us - self._last_atm_us[slot] < _US_PER_HOUR:
                ttype = "purchase"
            else:
                self._last_atm_us[slot] = self._t_us
        z = rng.gauss(0.0, 1.0)
        while abs(z) > _Z_CLIP:  # redrawn, not clipped: a clipped tail repeats one amount exactly
            z = rng.gauss(0.0, 1.0)
        base = math.exp(acc.amount_mu + acc.amount_sigma * z)
        merchant: Any
        if ttype == "purchase":
            m = rng.choice(acc.merchants) if rng.random() < 0.9 else rng.choice(self.pool.merchants)
            merchant = m
            channel = "online" if rng.random() < acc.online_share else "pos"
            usd = base * CATEGORIES[m.category]
        elif ttype == "refund":
            # A legitimate refund: part of a purchase made days ago at a shop the account rarely
            # uses (a return), so no purchase of the account's recent window matches it.
            m = rng.choice(self.pool.merchants)
            merchant = m
            channel = "online" if rng.random() < acc.online_share else "pos"
            usd = base * CATEGORIES[m.category] * rng.uniform(0.2, 0.8)
        elif ttype == "withdrawal":
            merchant, channel = acc.atm_operator, "atm"
            usd = min(800.0, max(20.0, base * 1.5))
        else:  # transfer, deposit: account to account, no merchant
            merchant = None
            channel = "online" if ttype == "transfer" or rng.random() < 0.5 else "atm"
            usd = base * 1.5
        usd = min(NORMAL_MAX_USD, max(MIN_USD, usd))
        amount = note(usd, acc.currency) if ttype == "withdrawal" else price(usd, acc.currency)
        city = None if channel == "online" else acc.city
        if self._recent:
            self._recent[i].append(usd)
            if city is not None:
                self._last_located_us[i] = self._t_us
        txn = wire_txn(rng, self._account_id(key), acc, ttype, amount, channel, merchant, city)
        after = self._aftermath.get(key) if self._aftermath else None
        if after is not None:
            scenario, incident, deadline = after
            if self._t_us > deadline:
                del self._aftermath[key]
            elif city is not None:  # the owner's first located payment since the journey
                txn["simulated_scenario"], txn["simulated_incident"] = scenario, incident
                del self._aftermath[key]
        return self._stamp(txn, self._t_us)

    def _calendar(self, key: int, acc: Any, day: int) -> dict[str, Any] | None:
        """The account's first message of a UTC day when the day is due: its monthly salary (a
        credit from its employer), a utility bill (a transfer to its utility) or a subscription
        (the same amount at the same digital shop). None on other days."""
        payees = self.pool.payees
        if not payees:
            return None
        aid = self._account_id(key)
        h = zlib.crc32(acc.account_id.encode())
        dom = (_EPOCH + timedelta(days=day)).day
        rng = self._rng
        if dom == h % 28 + 1 and (key // self.clones) % _BUSINESS_EVERY:
            usd = _out_of_band(acc.typical_amount * 35.0)
            return wire_txn(
                rng, aid, acc, "deposit", price(usd, acc.currency), "online", payees[h % len(payees)], None
            )
        if dom == (h >> 8) % 28 + 1:
            usd = min(450.0, max(MIN_USD, acc.typical_amount * rng.uniform(1.5, 3.0)))
            utility = payees[(h >> 4) % len(payees)]
            return wire_txn(rng, aid, acc, "transfer", price(usd, acc.currency), "online", utility, None)
        if dom == (h >> 16) % 28 + 1:
            shop = self._subscriptions[h % len(self._subscriptions)]
            usd = max(MIN_USD, round(acc.typical_amount * 0.3, 2))
            return wire_txn(rng, aid, acc, "purchase", price(usd, acc.currency), "online", shop, None)
        return None

    def _business(self, key: int, acc: Any, *, client: bool) -> dict[str, Any]:
        """A business account's irregular income (a client's payment) or a payment to one of its
        three usual vendors."""
        rng = self._rng
        payees = self.pool.payees
        h = zlib.crc32(acc.account_id.encode())
        aid = self._account_id(key)
        if client:
            usd = _out_of_band(acc.typical_amount * rng.uniform(6.0, 30.0))
            return wire_txn(
                rng, aid, acc, "deposit", price(usd, acc.currency), "online", rng.choice(payees), None
            )
        vendor = payees[(h + rng.randrange(3) * 7) % len(payees)]
        usd = max(MIN_USD, acc.typical_amount * rng.uniform(1.5, 4.0))
        return wire_txn(rng, aid, acc, "transfer", price(usd, acc.currency), "online", vendor, None)

    # -- incidents ---------------------------------------------------------------------------

    def _victim(self, name: str) -> tuple[int, Victim, int] | None:
        """(key, victim, wait) for a new incident of `name`, or None if no account fits now."""
        rng = self._rng
        wait = 0
        if name == "dormant_reactivation" and self.clock == "wall":
            return None  # its lead-in lies months back: only a simulated clock can stamp it
        if name in ("unusual_hour_high_value", "account_takeover"):
            # The account whose civil night comes soonest among a few: a sleeping one, so no
            # ordinary payment of its own falls inside the wait.
            best: tuple[int, int] | None = None
            # A takeover wants an account both asleep and warm: more candidates to find one.
            for _ in range(_NIGHT_CANDIDATES * (1 if name == "unusual_hour_high_value" else 4)):
                key = self._key(rng.randrange(len(self._accounts)))
                if not self._free(key):
                    continue
                if name == "unusual_hour_high_value" and not self._local_clock_known(key):
                    continue
                if name == "account_takeover" and (not self._recent or len(self._recent[key]) < _HABITS):
                    continue  # the rule needs the account's habits: hours, payees, spending
                zone = self._accounts[key // self.clones].city.zone
                w = (
                    _wait_for_night(self._t_us, zone)
                    if name == "unusual_hour_high_value"
                    else _wait_for_sleep(self._t_us, zone)
                )
                if name == "account_takeover" and self._night_disturbed(key, self._t_us + w):
                    continue
                if best is None or w < best[1]:
                    best = (key, w)
            # A takeover's burst and payee transfer take up to 35 minutes after the wait.
            limit = (
                _MAX_NIGHT_WAIT_US if name == "unusual_hour_high_value" else _MAX_NIGHT_WAIT_US - _US_PER_HOUR
            )
            if best is None or best[1] > limit:
                return None
            key, wait = best
            # Somewhere in the first half hour of the target, not all on the same second.
            wait += int(rng.uniform(0, 1800) * _US_PER_S)
        elif name in ("amount_spike", "invoice_fraud", "high_risk_card_burst") and self._recent:
            # An account with enough recent history for the rule to judge a spike against.
            for _ in range(20):
                warm = self._pick_free()
                if warm is not None and len(self._recent[warm]) >= _WARM:
                    key = warm
                    break
            else:
                return None
        else:
            picked = self._pick_free()
            if picked is None:
                return None
            key = picked
        acc = self._accounts[key // self.clones]
        recent = self._recent[key] if self._recent else ()
        typical = median(recent) if recent else math.exp(acc.amount_mu)
        return key, Victim(acc, self._account_id(key), typical), wait

    def _night_disturbed(self, key: int, start_us: int) -> bool:
        """Whether the account's last day shows activity within an hour of a takeover starting
        at `start_us` (UTC hours of day from an hour before the start to an hour after the
        latest its legs may run). Ordinary traffic never does (every account sleeps from
        midnight to 07:00); an earlier night-time incident does: another takeover an hour ago,
        an unusual-hour payment last night. In the real world that night is not the owner's
        habit but the same intruder, alerted the first time; a second takeover of the same
        account planted in it would be judged against the first one's hours and shops."""
        used = self._hour_used_us
        first = start_us // _US_PER_HOUR - 1
        last = (start_us + _TAKEOVER_SPAN_US) // _US_PER_HOUR + 1
        since = start_us - _US_PER_DAY
        base = 24 * (key // self.clones)
        return any(used[base + h % 24] >= since for h in range(first, last + 1))

    def _local_clock_known(self, key: int) -> bool:
        """Whether the rules can tell this account's local time for a payment without coordinates:
        its country's zones agree, or it paid somewhere located within the last 20 hours (the
        rules then read solar time where it was last seen)."""
        acc = self._accounts[key // self.clones]
        if _zones_agree(acc.city.country):
            return True
        return bool(self._last_located_us) and self._t_us - self._last_located_us[key] < 20 * _US_PER_HOUR

    def _start(self, name: str) -> dict[str, Any] | None:
        """Plan an incident of `name` starting now and return its first message (the rest are
        queued); None when no account can take it, and ordinary traffic goes on instead."""
        chosen = self._victim(name)
        if chosen is None:
            return None
        key, victim, wait = chosen
        incident: Incident = plan(name, self._rng, self.pool, victim, wait_us=wait)
        t0 = self._t_us
        last = t0 + incident.legs[-1].offset_us
        self._reserved[key] = last + incident.cooldown_us
        if self._hour_used_us:
            used, base, aid = self._hour_used_us, 24 * (key // self.clones), victim.account_id
            for leg in incident.legs:
                if leg.txn["account_id"] == aid:  # not a dormant account's own lead-in
                    at = t0 + leg.offset_us
                    slot = base + (at // _US_PER_HOUR) % 24
                    used[slot] = max(used[slot], at)
        if incident.aftermath_us:
            self._aftermath[key] = (name, incident.incident_id, last + incident.aftermath_us)
        if self.clock == "simulated":
            self._pending.extend(self._stamp(leg.txn, t0 + leg.offset_us) for leg in incident.legs)
            return self._pending.popleft()
        first = None
        for leg in incident.legs:
            if leg.offset_us == 0 and first is None:
                first = self._stamp(leg.txn, t0)
            else:
                self._held_seq += 1
                heapq.heappush(self._held, (t0 + leg.offset_us, self._held_seq, leg.txn))
        return first if first is not None else self._normal()


def _out_of_band(usd: float) -> float:
    """`usd`, moved below the structuring band when it falls inside (ordinary money is never
    structured)."""
    low, high = _BAND
    return usd * 0.85 if low <= usd < high else usd


@cache
def _zones_agree(country: str) -> bool:
    """True when every zone of `country` keeps the same offset (in January and in July)."""
    zones = country_zones(country)
    for month in (1, 7):
        noon = datetime(2026, month, 15, 12, tzinfo=UTC).timestamp()
        if len({zone_hour(noon, z) for z in zones}) > 1:
            return False
    return True


def _wait_for_night(t_us: int, zone: str) -> int:
    """Microseconds from `t_us` until the civil local time in `zone` next reaches the start of
    NIGHT_TARGET_S."""
    epoch = t_us / _US_PER_S
    local_s = zone_hour(epoch, zone) * 3600.0
    lo, _hi = NIGHT_TARGET_S
    # A second late rather than a hair early: the target must hold after rounding to microseconds.
    return int(((lo - local_s) % 86_400.0 + 1.0) * _US_PER_S)


def _wait_for_sleep(t_us: int, zone: str) -> int:
    """Microseconds from `t_us` until the account in `zone` is deep asleep: 0 between 01:30 and
    04:00 civil time (every account sleeps from midnight to 07:00, and the hours either side of
    these are unused too), else until the next 01:30."""
    local_s = zone_hour(t_us / _US_PER_S, zone) * 3600.0
    if _SLEEP_S[0] <= local_s < _SLEEP_S[1]:
        return 0
    return int(((_SLEEP_S[0] - local_s) % 86_400.0 + 1.0) * _US_PER_S)


def encode(txn: dict[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) for Kafka: key = account_id so one account stays on one partition, in order."""
    return txn["account_id"].encode(), orjson.dumps(txn)
