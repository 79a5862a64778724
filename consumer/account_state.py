"""Bounded per-account history that the alert rules read; pure data, no I/O.

Kafka keys messages by account_id, so each account lives in exactly one partition and this
state is kept per partition: on revoke the consumer drops the partition's accounts, on assignment
it rebuilds them from the transactions table (`AccountStates.load`). Memory stays bounded:
each account keeps at most `max_events` events no older than `history_seconds` (before its
newest event), and `evict` removes accounts that have gone quiet.

Events are kept in event-time order, oldest first, even when messages arrive slightly out of
order, so the rules can scan newest-first and stop at the start of their window.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple, cast

from utils.models import Transaction

__all__ = ["AccountHistory", "AccountStates", "Event", "HistoryRow"]

_intern = sys.intern


@dataclass(slots=True)
class Event:
    """What the rules need of one past transaction. Treat as immutable (not frozen: a frozen
    dataclass's __init__ costs about twice as much, and one is built per message)."""

    epoch: float
    amount: float  # as sent, in `currency`
    merchant: str | None
    country: str
    latitude: float | None
    longitude: float | None
    transaction_id: str
    currency: str
    amount_base: float  # in the base currency (Transaction.amount_base): what thresholds compare

    @classmethod
    def of(cls, txn: Transaction) -> Event:
        # Interning shares the few hundred distinct merchant and country strings across all
        # events instead of keeping one copy per message (~100 bytes per event).
        merchant = txn.merchant
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
        )


class HistoryRow(NamedTuple):
    """One row of the state-rebuild query, in this column order:

    SELECT transaction_id, account_id, amount, merchant, country, latitude, longitude,
           extract(epoch FROM "timestamp"), currency, amount_base
    FROM transactions WHERE ... ORDER BY "timestamp"

    Plain tuples in the same order work too; `amount`, `epoch` and `amount_base` may be Decimal
    (numeric).
    """

    transaction_id: str
    account_id: str
    amount: float | Decimal
    merchant: str | None
    country: str
    latitude: float | None
    longitude: float | None
    epoch: float | Decimal
    currency: str
    amount_base: float | Decimal


class AccountHistory:
    """Recent events of one account, oldest first, bounded by count and by age.

    `events` is public for the rules to scan (read it, never mutate it); `seen` is O(1) through
    a set of transaction ids that is evicted together with the events.
    """

    __slots__ = ("_amount_cents", "_ids", "events", "max_age_s", "max_events")

    def __init__(self, max_events: int, max_age_s: float) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {max_events}")
        self.events: deque[Event] = deque()
        self._ids: set[str] = set()
        # Amounts have two decimals, so summing integer cents keeps the running mean exact
        # however many events come and go (a float sum would drift).
        self._amount_cents = 0
        self.max_events = max_events
        self.max_age_s = max_age_s

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[Event]:
        """Oldest first."""
        return iter(self.events)

    def __repr__(self) -> str:
        return f"AccountHistory({len(self.events)} events, max {self.max_events}, {self.max_age_s:g}s)"

    def newest_first(self) -> Iterator[Event]:
        return reversed(self.events)

    def seen(self, transaction_id: str) -> bool:
        return transaction_id in self._ids

    @property
    def newest_epoch(self) -> float | None:
        return self.events[-1].epoch if self.events else None

    def mean_amount(self) -> float:
        """Mean amount of all events held; 0.0 when empty."""
        n = len(self.events)
        return self._amount_cents / n / 100.0 if n else 0.0

    def count_between(self, start: float, end: float) -> int:
        """Events with start <= epoch <= end."""
        n = 0
        for event in reversed(self.events):
            epoch = event.epoch
            if epoch < start:
                break
            if epoch <= end:
                n += 1
        return n

    def last_located(self, before: float) -> Event | None:
        """The newest event with coordinates at or before `before`, if any."""
        for event in reversed(self.events):
            if event.latitude is not None and event.epoch <= before:
                return event
        return None

    def add(self, event: Event) -> bool:
        """Insert in time order and enforce both bounds; False if the id is already held."""
        ids = self._ids
        if event.transaction_id in ids:
            return False
        events = self.events
        epoch = event.epoch
        if not events or events[-1].epoch <= epoch:
            events.append(event)
        else:
            # Late arrival: walk back from the newest (almost always one or two steps).
            i = len(events) - 1
            while i > 0 and events[i - 1].epoch > epoch:
                i -= 1
            events.insert(i, event)
        ids.add(event.transaction_id)
        self._amount_cents += round(event.amount * 100.0)
        if len(events) > self.max_events:
            self._drop_oldest()
        cutoff = events[-1].epoch - self.max_age_s
        if events[0].epoch < cutoff:
            self.evict_before(cutoff)
        return True

    def discard(self, transaction_id: str) -> bool:
        """Forget one event (a message the database rejected after the rules saw it)."""
        if transaction_id not in self._ids:
            return False
        for event in self.events:
            if event.transaction_id == transaction_id:
                self.events.remove(event)
                self._ids.discard(transaction_id)
                self._amount_cents -= round(event.amount * 100.0)
                return True
        return False  # pragma: no cover - _ids and events are kept in step

    def evict_before(self, cutoff: float) -> int:
        """Drop events older than `cutoff`; returns how many were dropped."""
        events = self.events
        dropped = 0
        while events and events[0].epoch < cutoff:
            self._drop_oldest()
            dropped += 1
        return dropped

    def _drop_oldest(self) -> None:
        event = self.events.popleft()
        self._ids.discard(event.transaction_id)
        self._amount_cents -= round(event.amount * 100.0)


class AccountStates:
    """partition -> account_id -> AccountHistory, for the partitions this consumer owns.

    Within a partition, accounts are kept in order of their last `add` (dict order, moved to the
    end on each add), so `evict` only looks at the quiet end and costs O(what it removes).
    """

    __slots__ = ("_partitions", "history_seconds", "max_events")

    def __init__(self, max_events: int, history_seconds: float) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {max_events}")
        self.max_events = max_events
        self.history_seconds = history_seconds
        self._partitions: dict[int, dict[str, AccountHistory]] = {}

    def history(self, partition: int, account_id: str) -> AccountHistory:
        """The account's history, created empty if unknown (what the rules get for a new account)."""
        accounts = self._partitions.get(partition)
        if accounts is None:
            accounts = self._partitions[partition] = {}
        history = accounts.get(account_id)
        if history is None:
            history = accounts[account_id] = AccountHistory(self.max_events, self.history_seconds)
        return history

    def active(self, partition: int, account_id: str) -> AccountHistory:
        """The history of an account with a message in hand: like `history`, and also moved to
        the recently-active end that `evict` never walks, so the consumer looks it up once per
        message and then calls `AccountHistory.add(Event.of(txn))` itself."""
        accounts = self._partitions.get(partition)
        if accounts is None:
            accounts = self._partitions[partition] = {}
        history = accounts.pop(account_id, None)
        if history is None:
            history = AccountHistory(self.max_events, self.history_seconds)
        accounts[account_id] = history
        return history

    def load(self, partition: int, rows: Iterable[Transaction | HistoryRow | tuple[Any, ...]]) -> int:
        """Rebuild (or top up) a partition from stored rows ordered by timestamp.

        Rows are `Transaction`s or `HistoryRow`-ordered tuples. Ids already held are skipped,
        so loading twice is harmless. Returns the number of events added.
        """
        added = 0
        for row in rows:
            if isinstance(row, Transaction):
                account_id, event = row.account_id, Event.of(row)
            else:
                tid, account_id, amount, merchant, country, lat, lon, epoch, currency, base = cast(
                    HistoryRow, row
                )
                event = Event(
                    float(epoch),
                    float(amount),
                    None if merchant is None else _intern(merchant),
                    _intern(country),
                    None if lat is None else float(lat),
                    None if lon is None else float(lon),
                    tid,
                    _intern(currency),
                    float(base),
                )
            added += self.active(partition, account_id).add(event)
        return added

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Forget revoked partitions: whoever owns them next rebuilds from the database."""
        for partition in partitions:
            self._partitions.pop(partition, None)

    def evict(self, now_epoch: float) -> int:
        """Drop events older than `history_seconds` before `now_epoch` and accounts left empty.

        Pass event time (e.g. the newest transaction timestamp processed), not the wall clock,
        so that replaying old data does not evict everything. Each call looks only at the
        least recently active accounts and stops at the first that is still active, so calling
        it once per batch costs O(removed) amortised. Returns the number of accounts removed.
        """
        cutoff = now_epoch - self.history_seconds
        removed = 0
        for accounts in self._partitions.values():
            empty: list[str] = []
            for account_id, history in accounts.items():
                history.evict_before(cutoff)
                if history.events:
                    break
                empty.append(account_id)
            for account_id in empty:
                del accounts[account_id]
            removed += len(empty)
        return removed
