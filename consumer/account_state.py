"""Bounded per-account history that the alert rules read; pure data, no I/O.

An account's history is a function of the set of its events processed so far, and of nothing
else: the last `max_events` of them in stream order. Stream order is (event time, partition,
offset), the order in which
ties in event time are broken everywhere (live, in the database query that loads an account, and
in the tests' model). Because it depends only on the set, the history built live one message at a
time equals the one loaded from the stored rows (`AccountStates.load`), in whatever order they
arrive: tests/unit/test_account_state.py proves it with Hypothesis.

The age bound (`max_age_s`, STATE_HISTORY_HOURS) is relative to the event being evaluated, not
to the account's newest event: a rule evaluating an event at time t counts held events in
[t - max_age_s, t] (`floor`; the rules' windows are capped by it). Anchored
at the newest event instead, one message dated 2099 (a client sets the Kafka record's CreateTime)
would evict every real event on arrival and blind the account's rules for good, also after a
restart. Now such an outlier costs one of the `max_events` slots and nothing else
(docs/event-time.md says what the rules see of late and out-of-order events).

That makes `AccountStates` a cache: any account may be dropped from memory at any time and loaded
again from PostgreSQL before its next message is evaluated. The consumer drops the accounts of
partitions it loses, every account after a fenced or rewound batch, and the least recently used
ones beyond `max_accounts` (the memory bound).
"""

from __future__ import annotations

import itertools
import sys
from array import array
from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from itertools import islice
from typing import Any, NamedTuple, cast

from utils.models import DEBIT_TYPES, TRANSACTION_TYPES, Transaction

__all__ = ["AccountHistory", "AccountStates", "Event", "HistoryRow"]

_intern = sys.intern
# (debit, refund, moved_on) per transaction type: one look-up per event. An unknown type (rows
# stored before directions, tools) counts as a debit, as every amount did before.
_KIND: dict[str | None, tuple[bool, bool, bool]] = {
    t: (t in DEBIT_TYPES, t == "refund", t in ("transfer", "withdrawal")) for t in TRANSACTION_TYPES
}
_UNKNOWN_KIND = (True, False, False)


@dataclass(slots=True)
class Event:
    """What the rules need of one past transaction, and its place in the stream. Treat as
    immutable (not frozen: a frozen dataclass's __init__ costs about twice as much, and one is
    built per message)."""

    epoch: float
    amount: float  # as sent, in `currency`
    merchant: str | None
    country: str
    latitude: float | None
    longitude: float | None
    transaction_id: str
    currency: str
    amount_base: float  # in the base currency (Transaction.amount_base): what thresholds compare
    partition: int
    offset: int
    # Direction and category, for the typology rules (money in vs out, refunds, high-risk
    # merchants): two small fields, the category interned like the merchant.
    debit: bool = True  # utils.models.DEBIT_TYPES; a credit (deposit, refund) otherwise
    refund: bool = False
    moved_on: bool = False  # a transfer or a cash withdrawal: money leaving the bank
    category: str | None = None

    @classmethod
    def of(cls, txn: Transaction) -> Event:
        # Interning shares the few hundred distinct merchant and country strings across all
        # events instead of keeping one copy per message (~100 bytes per event).
        # Indexing the kind, not *-unpacking it: a call with a starred argument builds its
        # arguments as a tuple first, which cost more than the rest of this one per message.
        merchant = txn.merchant
        category = txn.merchant_category
        debit, refund, moved_on = _KIND.get(txn.transaction_type, _UNKNOWN_KIND)
        return cls(
            txn.epoch,
            txn.amount,
            None if merchant is None else _intern(merchant),
            _intern(txn.country),
            txn.latitude,
            txn.longitude,
            txn.transaction_id,
            _intern(txn.currency),
            txn.amount_base,
            txn.kafka_partition,
            txn.kafka_offset,
            debit,
            refund,
            moved_on,
            None if category is None else _intern(category),
        )


class HistoryRow(NamedTuple):
    """One row of the account-loading query (`consumer.storage.load_accounts`), in this order.
    Plain tuples in the same order work too; `amount`, `epoch` and `amount_base` may be Decimal
    (numeric)."""

    account_id: str
    transaction_id: str
    amount: float | Decimal
    merchant: str | None
    country: str
    latitude: float | None
    longitude: float | None
    epoch: float | Decimal
    currency: str
    amount_base: float | Decimal
    partition: int
    offset: int
    # Rows without these (older callers) are debits without a category, as before directions.
    transaction_type: str | None = None
    merchant_category: str | None = None


def _after(a: Event, b: Event) -> bool:
    """a comes after b in stream order: (epoch, partition, offset)."""
    if a.epoch != b.epoch:
        return a.epoch > b.epoch
    return (a.partition, a.offset) > (b.partition, b.offset)


class AccountHistory:
    """Recent events of one account in stream order, oldest first, bounded by count; the rules
    see those at most `max_age_s` before the event they evaluate (`floor`).

    `events` is public for the rules to scan (read it, never mutate it). `partition` is where the
    account's latest message came from (the consumer drops the account when it loses that
    partition).

    `by_merchant` indexes the same events: merchant or payee -> their epochs, ascending. It is
    kept on every insert and eviction (so it holds exactly what `events` holds: no bound of its
    own), and answers "did the window pay or hear from this merchant in [start, before)?" with a
    dictionary look-up and a bisection (`seen`), where a scan of the window costs microseconds
    per payment. Each merchant's epochs are an `array('d')`, not a list of floats: a list's
    bisection reads one float object per step, each allocated with a different message and a
    cache miss of its own once the windows are warm (docs/performance-investigations.md, "the
    whole pure path over warm windows"). Read it, never mutate it.

    `epochs` is the events' epochs in the same order (`epochs[i] == events[i].epoch`), as raw
    doubles in one array: a rule that looks for where its time window starts bisects it instead
    of reading one `Event` and one float object per step. Once every account's window is full
    (a million events, hundreds of MB), each of those objects is a cache miss of its own, and
    those misses, not the rules' arithmetic, are what made the rules dearer as windows filled
    (docs/performance-investigations.md, "warm windows"). Read it, never mutate it.
    """

    __slots__ = ("by_merchant", "epochs", "events", "max_age_s", "max_events", "partition")

    def __init__(self, max_events: int, max_age_s: float, partition: int = -1) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {max_events}")
        self.events: deque[Event] = deque()
        self.epochs = array("d")
        self.by_merchant: dict[str | None, array[float]] = {}
        self.max_events = max_events
        self.max_age_s = max_age_s
        self.partition = partition

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[Event]:
        """Oldest first."""
        return iter(self.events)

    def __repr__(self) -> str:
        return f"AccountHistory({len(self.events)} events, max {self.max_events}, {self.max_age_s:g}s)"

    def newest_first(self) -> Iterator[Event]:
        return reversed(self.events)

    def run(self, lo: int, hi: int) -> list[Event]:
        """`events[lo:hi]`, oldest first, reading no event outside it. A rule's window is found by
        bisecting `epochs`; `islice(events, lo, hi)` then steps through (and touches the reference
        count of) every event before `lo`, each a cache miss of its own once the windows are warm.
        The run is taken from the nearer end: a window of recent events is a few steps from the
        newest, and its older events are never read. `lo` and `hi` are in [0, len]: bisections
        of `epochs`."""
        events = self.events
        n = len(events)
        if hi <= lo:
            return []
        if n - hi < lo:
            out = list(islice(reversed(events), n - hi, n - lo))
            out.reverse()
            return out
        return list(islice(events, lo, hi))

    @property
    def newest_epoch(self) -> float | None:
        return self.events[-1].epoch if self.events else None

    def floor(self, now: float) -> float:
        """The oldest event time in sight of an event at `now`."""
        return now - self.max_age_s

    def count_between(self, start: float, end: float) -> int:
        """Events with start <= epoch <= end."""
        epochs = self.epochs
        return max(0, bisect_right(epochs, end) - bisect_left(epochs, start))

    def seen(self, merchant: str | None, start: float, before: float) -> bool:
        """Whether an event with `merchant` and start <= epoch < before is held."""
        epochs = self.by_merchant.get(merchant)
        if epochs is None:
            return False
        i = bisect_left(epochs, start)
        return i < len(epochs) and epochs[i] < before

    def last_located(self, before: float) -> Event | None:
        """The newest event with coordinates at or before `before`, if any, however old (where
        the cardholder was last seen; a rule that needs it recent checks `floor`)."""
        for event in reversed(self.events):
            if event.latitude is not None and event.epoch <= before:
                return event
        return None

    def add(self, event: Event) -> bool:
        """Insert in stream order and enforce the count bound; False if this very message (same
        partition and offset) is already held, so adding a replayed message changes nothing."""
        events = self.events
        held = self.epochs  # events[i].epoch == held[i]
        index = self.by_merchant
        merchant, epoch = event.merchant, event.epoch
        epochs = index.get(merchant)
        # `_after(event, events[-1])` inlined for the common case (an event newer than the
        # window's newest): this runs for every message. The newest epoch from the array, not
        # from the newest Event: that object is cold by the account's next message.
        if not events or epoch > held[-1] or (epoch == held[-1] and _after(event, events[-1])):
            events.append(event)
            held.append(epoch)
            if epochs is None:
                index[merchant] = array("d", (epoch,))
            else:
                epochs.append(epoch)  # the newest event: the newest of its merchant too
        else:
            # Late arrival (or a replay): walk back from the newest, almost always a step or two.
            i = len(events)
            while i > 0 and _after(events[i - 1], event):
                i -= 1
            if i > 0:
                before = events[i - 1]
                if before.partition == event.partition and before.offset == event.offset:
                    return False
            events.insert(i, event)
            held.insert(i, epoch)
            if epochs is None:
                index[event.merchant] = array("d", (event.epoch,))
            else:
                insort(epochs, event.epoch)
        if len(events) > self.max_events:
            # The oldest event in stream order has the smallest epoch held, so it is the first
            # of its merchant's (equal epochs are interchangeable: only values are kept).
            gone = events.popleft()
            del held[0]
            epochs = index[gone.merchant]
            if len(epochs) == 1:
                del index[gone.merchant]
            else:
                del epochs[0]
        return True


class AccountStates:
    """account_id -> AccountHistory for the accounts held in memory, least recently used first.

    `max_accounts` bounds memory (None: unbounded, for the tests' single-pass model). Dropping an
    account is always safe: `missing` names the accounts to load before a batch is evaluated, and
    `load` installs them from the stored rows exactly as live processing would have built them.
    """

    __slots__ = ("_accounts", "history_seconds", "max_accounts", "max_events")

    def __init__(self, max_events: int, history_seconds: float, max_accounts: int | None = None) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {max_events}")
        if max_accounts is not None and max_accounts < 1:
            raise ValueError(f"max_accounts must be at least 1, not {max_accounts}")
        self.max_events = max_events
        self.history_seconds = history_seconds
        self.max_accounts = max_accounts
        self._accounts: dict[str, AccountHistory] = {}

    def __len__(self) -> int:
        return len(self._accounts)

    def __contains__(self, account_id: object) -> bool:
        return account_id in self._accounts

    def get(self, account_id: str) -> AccountHistory | None:
        """The held history (None if not in memory), without touching its recency."""
        return self._accounts.get(account_id)

    def missing(self, account_ids: Iterable[str]) -> set[str]:
        """Those of `account_ids` not in memory: load them before evaluating their messages."""
        held = self._accounts
        return {a for a in account_ids if a not in held}

    def active(self, account_id: str, partition: int) -> AccountHistory:
        """The history of an account with a message in hand, moved to the recently used end.
        The account must be held (`missing` / `load` first): a KeyError here is a bug, never an
        empty history made up for an account that may have one in the database."""
        accounts = self._accounts
        history = accounts.pop(account_id)
        accounts[account_id] = history
        history.partition = partition
        return history

    def load(self, account_ids: Iterable[str], rows: Iterable[HistoryRow | tuple[Any, ...]]) -> int:
        """Install `account_ids` from their stored rows (any order; HistoryRow order of fields),
        replacing what is held; an account without rows starts empty. Returns the events kept."""
        fresh: dict[str, AccountHistory] = {}
        for account_id in account_ids:
            fresh[account_id] = AccountHistory(self.max_events, self.history_seconds)
        by_account: dict[str, list[Event]] = {}
        for row in rows:
            account_id, tid, amount, merchant, country, lat, lon, epoch, currency, base, partition, offset = (
                cast(HistoryRow, row)[:12]
            )
            ttype = row[12] if len(row) > 12 else None
            category = row[13] if len(row) > 13 else None
            by_account.setdefault(account_id, []).append(
                Event(
                    float(epoch),
                    float(amount),
                    None if merchant is None else _intern(merchant),
                    _intern(country),
                    None if lat is None else float(lat),
                    None if lon is None else float(lon),
                    tid,
                    _intern(currency),
                    float(base),
                    int(partition),
                    int(offset),
                    *_KIND.get(ttype, _UNKNOWN_KIND),
                    None if category is None else _intern(category),
                )
            )
        kept = 0
        for account_id, events in by_account.items():
            history = fresh.setdefault(account_id, AccountHistory(self.max_events, self.history_seconds))
            events.sort(key=lambda e: (e.epoch, e.partition, e.offset))
            for event in events:  # ascending: every add appends
                history.add(event)
            history.partition = events[-1].partition
            kept += len(history)
        for account_id, history in fresh.items():
            self._accounts.pop(account_id, None)
            self._accounts[account_id] = history
        return kept

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget the accounts whose latest message came from `partitions`; returns how many."""
        parts = set(partitions)
        gone = [a for a, h in self._accounts.items() if h.partition in parts]
        for account_id in gone:
            del self._accounts[account_id]
        return len(gone)

    def clear(self) -> None:
        self._accounts.clear()

    def trim(self) -> int:
        """Drop the least recently used accounts beyond `max_accounts`; returns how many."""
        if self.max_accounts is None:
            return 0
        accounts = self._accounts
        excess = len(accounts) - self.max_accounts
        if excess <= 0:
            return 0
        for account_id in list(itertools.islice(accounts, excess)):
            del accounts[account_id]
        return excess
