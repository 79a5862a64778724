"""consumer.account_state: bounds, eviction, seen(), load and drop."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from consumer.account_state import AccountHistory, AccountStates, Event, HistoryRow
from utils.models import Transaction

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC).timestamp()
_ids = itertools.count()


def event(epoch: float, amount: float = 10.0, tid: str | None = None, where: bool = True) -> Event:
    return Event(
        epoch,
        amount,
        "Shop",
        "US",
        40.0 if where else None,
        -74.0 if where else None,
        tid or f"e{next(_ids)}",
        "USD",
        amount,
    )


def txn(epoch: float, account: str = "ACC-1", partition: int = 0, tid: str | None = None) -> Transaction:
    return Transaction(
        transaction_id=tid or f"t{next(_ids)}",
        account_id=account,
        transaction_type="purchase",
        amount=12.34,
        currency="EUR",
        amount_base=13.33,
        timestamp=datetime.fromtimestamp(epoch, UTC),
        channel="online",
        country="DE",
        merchant="Shop",
        kafka_partition=partition,
    )


def epochs(h: AccountHistory) -> list[float]:
    return [e.epoch for e in h]


def add(states: AccountStates, t: Transaction) -> bool:
    """What the consumer does with a message once the rules have seen it."""
    return states.active(t.kafka_partition, t.account_id).add(Event.of(t))


def partitions(states: AccountStates) -> list[int]:
    return sorted(p for p, accounts in states._partitions.items() if accounts)


def account_count(states: AccountStates, partition: int | None = None) -> int:
    held = states._partitions
    return sum(len(held.get(p, ())) for p in ([partition] if partition is not None else list(held)))


def event_count(states: AccountStates) -> int:
    return sum(len(h) for accounts in states._partitions.values() for h in accounts.values())


# -- AccountHistory


def test_count_bound_drops_oldest_and_forgets_its_id() -> None:
    h = AccountHistory(max_events=3, max_age_s=86_400)
    for i in range(5):
        assert h.add(event(T0 + i, tid=f"id{i}"))
    assert epochs(h) == [T0 + 2, T0 + 3, T0 + 4]
    assert not h.seen("id0") and not h.seen("id1")
    assert h.seen("id2") and h.seen("id4")


def test_age_bound_is_relative_to_newest_event() -> None:
    h = AccountHistory(max_events=50, max_age_s=100)
    for offset in (0, 50, 100):
        h.add(event(T0 + offset))
    assert epochs(h) == [T0, T0 + 50, T0 + 100]  # exactly max_age old is kept
    h.add(event(T0 + 160))
    assert epochs(h) == [T0 + 100, T0 + 160]


def test_seen_and_idempotent_add() -> None:
    h = AccountHistory(10, 86_400)
    assert h.add(event(T0, tid="x"))
    assert h.seen("x") and not h.seen("y")
    assert not h.add(event(T0 + 1, tid="x"))
    assert len(h) == 1


def test_late_events_are_inserted_in_time_order() -> None:
    h = AccountHistory(10, 86_400)
    for offset in (0, 30, 10, 40, 20, 5):
        h.add(event(T0 + offset))
    assert epochs(h) == sorted(epochs(h))
    assert [e.epoch for e in h.newest_first()] == sorted(epochs(h), reverse=True)
    assert h.newest_epoch == T0 + 40


def test_mean_stays_exact_through_evictions() -> None:
    h = AccountHistory(max_events=3, max_age_s=86_400)
    for i, amount in enumerate([0.1, 0.2, 0.3, 1_000_000.0, 0.7, 0.01]):
        h.add(event(T0 + i, amount))
    assert h.mean_amount() == pytest.approx((0.7 + 0.01 + 1_000_000.0) / 3, abs=1e-9)
    empty = AccountHistory(3, 60)
    assert empty.mean_amount() == 0.0


def test_count_between_is_inclusive() -> None:
    h = AccountHistory(10, 86_400)
    for offset in (0, 10, 20, 30, 40):
        h.add(event(T0 + offset))
    assert h.count_between(T0 + 10, T0 + 30) == 3
    assert h.count_between(T0 + 41, T0 + 50) == 0
    assert h.count_between(T0 - 100, T0 + 100) == 5


def test_last_located_skips_events_without_coordinates_and_later_ones() -> None:
    h = AccountHistory(10, 86_400)
    h.add(event(T0, tid="located"))
    h.add(event(T0 + 10, where=False))
    h.add(event(T0 + 20, tid="later"))
    found = h.last_located(T0 + 15)
    assert found is not None and found.transaction_id == "located"
    assert h.last_located(T0 - 1) is None


def test_event_of_transaction() -> None:
    t = txn(T0)
    e = Event.of(t)
    assert (e.epoch, e.amount, e.currency, e.amount_base, e.merchant, e.country, e.transaction_id) == (
        T0,
        12.34,
        "EUR",
        13.33,  # the base amount validation computed: what the rules compare with thresholds
        "Shop",
        "DE",
        t.transaction_id,
    )
    assert (e.latitude, e.longitude) == (None, None)


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_events"):
        AccountHistory(0, 60)
    with pytest.raises(ValueError, match="max_events"):
        AccountStates(0, 60)


# -- AccountStates


def test_history_is_per_partition_and_account() -> None:
    states = AccountStates(max_events=10, history_seconds=3_600)
    assert len(states.history(0, "ACC-1")) == 0
    assert add(states, txn(T0, "ACC-1", partition=0))
    assert add(states, txn(T0, "ACC-1", partition=1))
    assert add(states, txn(T0 + 1, "ACC-2", partition=1))
    assert len(states.history(0, "ACC-1")) == 1
    assert len(states.history(1, "ACC-1")) == 1
    assert partitions(states) == [0, 1]
    assert account_count(states) == 3 and account_count(states, 1) == 2
    assert event_count(states) == 3


def test_add_is_idempotent_per_transaction_id() -> None:
    states = AccountStates(10, 3_600)
    t = txn(T0)
    assert add(states, t)
    assert not add(states, t)
    assert states.history(0, "ACC-1").seen(t.transaction_id)
    assert event_count(states) == 1


def test_load_from_database_rows_and_transactions() -> None:
    states = AccountStates(10, 86_400)
    rows = [
        HistoryRow(
            "r1",
            "ACC-1",
            Decimal("10.50"),
            "Shop",
            "US",
            40.0,
            -74.0,
            Decimal(T0) + Decimal("0.123456"),
            "USD",
            Decimal("10.50"),
        ),
        ("r2", "ACC-1", 20.0, None, "US", None, None, T0 + 60, "USD", 20.0),
        (
            "r3",
            "ACC-2",
            Decimal("1.00"),
            "Cafe",
            "FR",
            Decimal("48.85"),
            Decimal("2.35"),
            T0,
            "EUR",
            Decimal("1.08"),
        ),
    ]
    assert states.load(4, [*rows, txn(T0 + 120, "ACC-2", partition=99)]) == 4
    h1 = states.history(4, "ACC-1")
    assert [e.transaction_id for e in h1] == ["r1", "r2"]
    assert h1.events[0].amount == 10.5 and type(h1.events[0].epoch) is float
    h2 = states.history(4, "ACC-2")
    assert len(h2) == 2 and h2.events[0].latitude == 48.85
    assert (h2.events[0].currency, h2.events[0].amount_base) == ("EUR", 1.08)
    assert type(h2.events[0].amount_base) is float
    assert partitions(states) == [4]  # loaded into the partition asked for, whatever the row says
    assert states.load(4, rows) == 0  # loading again adds nothing


def test_drop_partitions_forgets_their_accounts() -> None:
    states = AccountStates(10, 3_600)
    for p in (0, 1, 2):
        add(states, txn(T0, partition=p))
    states.drop_partitions([0, 2, 7])
    assert partitions(states) == [1]
    assert len(states.history(0, "ACC-1")) == 0  # a fresh, empty history after revoke


def test_evict_drops_old_events_and_quiet_accounts() -> None:
    states = AccountStates(10, history_seconds=3_600)
    add(states, txn(T0, "quiet"))
    add(states, txn(T0 + 100, "busy"))
    add(states, txn(T0 + 4_000, "busy"))
    states.history(0, "never-added")  # created by a look-up, never filled
    assert states.evict(T0 + 3_000) == 0  # "quiet" is still inside the window
    assert states.evict(T0 + 3_601) == 1
    assert account_count(states) == 2
    assert states.evict(T0 + 10_000) == 2
    assert account_count(states) == 0


def test_evict_sees_an_account_as_active_after_its_latest_add() -> None:
    # "first" is created first but active last: evict must remove "second", not stop at "first".
    states = AccountStates(10, history_seconds=3_600)
    add(states, txn(T0, "first"))
    add(states, txn(T0 + 10, "second"))
    add(states, txn(T0 + 3_000, "first"))
    assert states.evict(T0 + 3_700) == 1
    assert len(states.history(0, "first")) == 1  # its T0 event aged out, the account stays
    assert account_count(states) == 1


def test_memory_stays_bounded_over_many_accounts_and_transactions() -> None:
    # 200k transactions over 20k accounts across ~55 simulated hours, with a 1 h history and
    # an evict per 1,000 messages: only accounts active within about the last hour survive.
    rnd = random.Random(7)
    states = AccountStates(max_events=5, history_seconds=3_600)
    epoch = T0
    for i in range(200_000):
        epoch += 1.0
        add(states, txn(epoch, f"A{rnd.randrange(20_000)}", partition=i % 3))
        if i % 1_000 == 0:
            states.evict(epoch)
    states.evict(epoch)
    active_last_hour = 3_600  # at most one new account per message-second
    assert account_count(states) <= active_last_hour + 1_000
    assert event_count(states) <= 5 * account_count(states)


def test_active_is_the_same_history_moved_to_the_recent_end() -> None:
    states = AccountStates(10, history_seconds=3_600)
    add(states, txn(T0, "old"))
    add(states, txn(T0, "new"))
    history = states.active(0, "old")  # a message for "old" arrives: it is active again
    assert history is states.history(0, "old") and len(history) == 1
    assert states.active(0, "fresh") is states.history(0, "fresh")  # created on first sight
    history.add(Event.of(txn(T0 + 3_000, "old")))
    # "new" is now the least recently active: eviction removes it and stops at "old", which
    # still holds an event inside the window (so "fresh", behind it, is not looked at).
    assert states.evict(T0 + 3_601) == 1
    assert account_count(states) == 2 and len(states.history(0, "old")) == 1
