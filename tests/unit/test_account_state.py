"""consumer.account_state: bounds in stream order, the cache, and live == loaded (Hypothesis)."""

from __future__ import annotations

import itertools
import random
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.account_state import AccountHistory, AccountStates, Event, HistoryRow
from consumer.rules import evaluate
from utils.config import RuleThresholds
from utils.models import Transaction

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC).timestamp()
_offsets = itertools.count()


def event(
    epoch: float, amount: float = 10.0, tid: str | None = None, where: bool = True, partition: int = 0
) -> Event:
    offset = next(_offsets)
    return Event(
        epoch,
        amount,
        "Shop",
        "US",
        40.0 if where else None,
        -74.0 if where else None,
        tid or f"e{offset}",
        "USD",
        amount,
        partition,
        offset,
    )


def txn(epoch: float, account: str = "ACC-1", partition: int = 0, amount: float = 12.34) -> Transaction:
    offset = next(_offsets)
    return Transaction(
        transaction_id=f"t{offset}",
        account_id=account,
        transaction_type="purchase",
        amount=amount,
        currency="EUR",
        amount_base=13.33,
        timestamp=datetime.fromtimestamp(epoch, UTC),
        channel="online",
        country="DE",
        merchant="Shop",
        kafka_topic="tx",
        kafka_partition=partition,
        kafka_offset=offset,
    )


def epochs(h: AccountHistory) -> list[float]:
    return [e.epoch for e in h]


def assert_indexes_match(h: AccountHistory) -> None:
    """The window's two indexes hold exactly what its events say: the epochs array, position by
    position, and the merchant index; and count_between, bisected on the array, equals a scan."""
    assert list(h.epochs) == epochs(h)
    merchants: dict[str | None, list[float]] = {}
    for e in h:
        merchants.setdefault(e.merchant, []).append(e.epoch)
    assert {m: list(v) for m, v in h.by_merchant.items()} == merchants
    # Raw doubles (no float object per epoch), never a list: what the rules bisect warm.
    assert all(isinstance(v, array) and v.typecode == "d" for v in h.by_merchant.values())
    # `run`, which the rules read their windows with, is a slice of the events, from either end.
    held = list(h)
    for lo, hi in itertools.product(range(len(held) + 1), repeat=2):  # bisections of `epochs`
        assert h.run(lo, hi) == held[lo:hi], (lo, hi)
    marks = sorted({e.epoch for e in h} | {e.epoch + 0.5 for e in h} | {e.epoch - 0.5 for e in h})
    for start, end in itertools.product(marks[:8] + marks[-8:], repeat=2):
        assert h.count_between(start, end) == sum(1 for e in h if start <= e.epoch <= end)


# -- AccountHistory


def test_count_bound_drops_the_oldest() -> None:
    h = AccountHistory(max_events=3, max_age_s=86_400)
    for i in range(5):
        assert h.add(event(T0 + i))
    assert epochs(h) == [T0 + 2, T0 + 3, T0 + 4]


def test_age_bound_is_relative_to_the_event_being_evaluated() -> None:
    """The history keeps the last max_events in stream order; what lies more than max_age before
    an evaluated event is out of that event's sight, however new or old the account's newest."""
    h = AccountHistory(max_events=50, max_age_s=100)
    for offset in (0, 50, 100, 160):
        h.add(event(T0 + offset))
    assert epochs(h) == [T0, T0 + 50, T0 + 100, T0 + 160]
    assert h.floor(T0 + 160) == T0 + 60
    assert h.count_between(h.floor(T0 + 160), T0 + 160) == 2  # T0 + 100 and T0 + 160


FAR_FUTURE = datetime(2099, 1, 1, tzinfo=UTC).timestamp()


def test_one_far_future_event_evicts_nothing_and_hides_nothing() -> None:
    """A message dated 2099 (a producer's broken clock) joins the history as its newest event. It
    must not push the account's real events out (they stay in sight of the rules), neither live
    nor when the account is loaded again; and beyond STATE_MAX_EVENTS_PER_ACCOUNT newer real
    events, the rules fire exactly as on a history that never saw it, but for its one slot."""
    k = 8
    thresholds = RuleThresholds(velocity_count=3, velocity_window_s=60.0)
    clean = AccountStates(k, 86_400)
    poisoned = AccountStates(k, 86_400)
    for states in (clean, poisoned):
        states.load(["A"], [])
    outlier = txn(FAR_FUTURE, "A")
    poisoned.active("A", 0).add(Event.of(outlier))
    stored = [outlier]
    fired_clean: list[list[str]] = []
    fired_poisoned: list[list[str]] = []
    for i in range(3 * k):  # beyond max_events newer (real) events
        t = txn(T0 + 10.0 * i, "A", amount=10.0 + i)
        for states, fired in ((clean, fired_clean), (poisoned, fired_poisoned)):
            history = states.active("A", 0)
            fired.append(sorted(a.alert_type for a in evaluate(t, history, thresholds)))
            history.add(Event.of(t))
        stored.append(t)
    assert fired_poisoned == fired_clean
    assert fired_clean.count(["velocity"]) == 3 * k - 3  # from the fourth on
    held = poisoned.get("A")
    assert held is not None and len(held) == k
    assert [e.epoch for e in held][:-1] == [T0 + 10.0 * i for i in range(2 * k + 1, 3 * k)]
    # Loaded again (a restart): the same history, the outlier included, nothing evicted.
    reloaded = AccountStates(k, 86_400)
    rows = [
        ("A", t.transaction_id, t.amount, t.merchant, t.country, None, None, t.epoch, t.currency,
         t.amount_base, t.kafka_partition, t.kafka_offset)
        for t in sorted(stored, key=lambda t: (t.epoch, t.kafka_partition, t.kafka_offset))[-k:]
    ]  # fmt: skip
    reloaded.load(["A"], rows)
    again = reloaded.get("A")
    assert again is not None and [e.transaction_id for e in again] == [e.transaction_id for e in held]


def test_the_same_message_twice_changes_nothing() -> None:
    h = AccountHistory(10, 86_400)
    e = event(T0)
    assert h.add(e)
    assert not h.add(
        Event(
            e.epoch,
            e.amount,
            e.merchant,
            e.country,
            1.0,
            2.0,
            "other",
            "USD",
            e.amount,
            e.partition,
            e.offset,
        )
    )
    assert len(h) == 1


def test_late_events_are_inserted_in_stream_order_ties_by_partition_and_offset() -> None:
    h = AccountHistory(10, 86_400)
    for offset in (0, 30, 10, 40, 20, 5):
        h.add(event(T0 + offset))
    assert epochs(h) == sorted(epochs(h))
    assert h.newest_epoch == T0 + 40
    tie = AccountHistory(10, 86_400)
    a, b, c = event(T0, partition=1), event(T0, partition=0), event(T0, partition=1)
    for e in (c, a, b):
        tie.add(e)
    assert [(e.partition, e.offset) for e in tie] == [(0, b.offset), (1, a.offset), (1, c.offset)]
    assert_indexes_match(h)
    assert_indexes_match(tie)


def test_the_epochs_array_follows_late_inserts_ties_evictions_and_replays() -> None:
    """`AccountHistory.epochs` is what the rules bisect: it must stay aligned with `events`
    through every kind of add, and hold nothing an eviction removed."""
    h = AccountHistory(4, 86_400)
    late = event(T0 + 5)
    for e in (event(T0 + 10), event(T0 + 20), late, event(T0 + 20, partition=1), event(T0 + 1)):
        h.add(e)
        assert_indexes_match(h)
    assert list(h.epochs) == [T0 + 5, T0 + 10, T0 + 20, T0 + 20]  # T0 + 1 came in oldest: evicted
    assert not h.add(late)  # a replay changes neither index
    assert_indexes_match(h)
    for offset in range(30, 40):
        h.add(event(T0 + offset))
    assert list(h.epochs) == [T0 + 36, T0 + 37, T0 + 38, T0 + 39]
    assert_indexes_match(h)


def test_count_between_is_inclusive() -> None:
    h = AccountHistory(10, 86_400)
    for offset in (0, 10, 20, 30, 40):
        h.add(event(T0 + offset))
    assert h.count_between(T0 + 10, T0 + 30) == 3
    assert h.count_between(T0 + 41, T0 + 50) == 0
    assert h.count_between(T0 - 100, T0 + 100) == 5
    assert h.count_between(T0 + 30, T0 + 10) == 0  # an empty range, not a negative count


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
    got = (e.epoch, e.amount, e.currency, e.amount_base, e.merchant, e.country, e.transaction_id)
    assert (*got, e.partition, e.offset) == (
        T0,
        12.34,
        "EUR",
        13.33,  # the base amount validation computed: what the rules compare with thresholds
        "Shop",
        "DE",
        t.transaction_id,
        0,
        t.kafka_offset,
    )
    assert (e.latitude, e.longitude) == (None, None)


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_events"):
        AccountHistory(0, 60)
    with pytest.raises(ValueError, match="max_events"):
        AccountStates(0, 60)
    with pytest.raises(ValueError, match="max_accounts"):
        AccountStates(5, 60, max_accounts=0)


# -- AccountStates: a cache by account


def test_an_account_must_be_loaded_before_it_is_used() -> None:
    states = AccountStates(10, 3_600)
    assert states.missing(["A", "B"]) == {"A", "B"}
    with pytest.raises(KeyError):
        states.active("A", 0)  # never an empty history made up for an account that may have one
    states.load(["A", "B"], [])
    assert states.missing(["A", "B", "C"]) == {"C"}
    assert len(states.active("A", 0)) == 0


def test_load_from_database_rows() -> None:
    states = AccountStates(10, 86_400)
    rows = [
        HistoryRow(
            "ACC-1",
            "r1",
            Decimal("10.50"),
            "Shop",
            "US",
            40.0,
            -74.0,
            Decimal(T0) + Decimal("0.123456"),
            "USD",
            Decimal("10.50"),
            4,
            7,
        ),
        (
            "ACC-2",
            "r3",
            Decimal("1.00"),
            "Cafe",
            "FR",
            Decimal("48.85"),
            Decimal("2.35"),
            T0,
            "EUR",
            1.08,
            4,
            9,
        ),
        ("ACC-1", "r2", 20.0, None, "US", None, None, T0 + 60, "USD", 20.0, 4, 8),
    ]
    assert states.load(["ACC-1", "ACC-2", "ACC-3"], rows) == 3
    h1 = states.get("ACC-1")
    assert h1 is not None and [e.transaction_id for e in h1] == ["r1", "r2"]
    assert h1.events[0].amount == 10.5 and type(h1.events[0].epoch) is float and h1.partition == 4
    h2 = states.get("ACC-2")
    assert h2 is not None and h2.events[0].latitude == 48.85
    assert (h2.events[0].currency, h2.events[0].amount_base) == ("EUR", 1.08)
    assert len(states) == 3 and len(states.get("ACC-3") or ()) == 0


def test_drop_partitions_forgets_the_accounts_last_seen_there() -> None:
    states = AccountStates(10, 3_600)
    states.load(["A", "B", "C"], [])
    for account, partition in (("A", 0), ("B", 1), ("C", 2), ("A", 1)):
        states.active(account, partition).add(Event.of(txn(T0, account, partition)))
    assert states.drop_partitions([1, 7]) == 2  # A moved to partition 1 with its latest message
    assert states.missing(["A", "B", "C"]) == {"A", "B"}


def test_trim_drops_the_least_recently_used_accounts() -> None:
    states = AccountStates(10, 3_600, max_accounts=2)
    states.load(["old", "mid"], [])
    states.active("old", 0)  # "old" used again: "mid" is now the least recently used
    states.load(["new"], [])
    assert states.trim() == 1
    assert states.missing(["old", "mid", "new"]) == {"mid"}
    assert AccountStates(10, 60).trim() == 0  # unbounded


def test_memory_stays_bounded_over_many_accounts_and_transactions() -> None:
    rnd = random.Random(7)
    states = AccountStates(max_events=5, history_seconds=3_600, max_accounts=1_000)
    epoch = T0
    for i in range(100_000):
        epoch += 1.0
        t = txn(epoch, f"A{rnd.randrange(20_000)}", partition=i % 3)
        states.load(states.missing([t.account_id]), [])
        states.active(t.account_id, t.kafka_partition).add(Event.of(t))
        if i % 500 == 0:
            states.trim()
    states.trim()
    assert len(states) == 1_000
    assert sum(len(states.get(a) or ()) for a in list(states._accounts)) <= 5 * 1_000


# -- Live == loaded: the property that makes the state a cache


@dataclass(frozen=True)
class Msg:
    account: str
    epoch: float
    amount: float
    partition: int
    offset: int
    kind: int = 0  # which of KINDS: type, merchant, category, coordinates


# (transaction type, merchant, category, latitude, longitude): every field of the window in
# play, None where one may be absent (a deposit without merchant, a payment without
# coordinates), and the three direction flags (purchase, refund, transfer, deposit, withdrawal).
KINDS: list[tuple[str, str | None, str | None, float | None, float | None]] = [
    ("purchase", "Shop", None, None, None),
    ("purchase", "Casino", "gambling", 48.85, 2.35),
    ("refund", "Shop", "grocery", -33.87, 151.21),
    ("transfer", "Payee", None, 0.0, -0.0),
    ("deposit", None, None, None, None),
    ("withdrawal", "ATM", "cash", 90.0, -180.0),
]


def expected_history(msgs: list[Msg], k: int, h: float) -> list[tuple[int, int]]:
    """The definition: the last k of the account's events in stream order (the age bound `h`
    applies relative to each evaluated event, not to what is held). Returned as (partition,
    offset) in stream order."""
    ordered = sorted(msgs, key=lambda m: (m.epoch, m.partition, m.offset))[-k:]
    return [(m.partition, m.offset) for m in ordered]


def stored_rows(msgs: list[Msg], k: int) -> list[HistoryRow]:
    """What consumer.storage.load_accounts returns: the newest k per account in stream order."""
    newest = sorted(msgs, key=lambda m: (m.epoch, m.partition, m.offset), reverse=True)[:k]
    return [
        HistoryRow(
            m.account,
            f"{m.partition}-{m.offset}",
            m.amount,
            KINDS[m.kind][1],
            "DE",
            KINDS[m.kind][3],
            KINDS[m.kind][4],
            m.epoch,
            "EUR",
            m.amount,
            m.partition,
            m.offset,
            KINDS[m.kind][0],
            KINDS[m.kind][2],
        )
        for m in newest
    ]


def as_txn(m: Msg) -> Transaction:
    return Transaction(
        transaction_id=f"{m.partition}-{m.offset}",
        account_id=m.account,
        transaction_type=KINDS[m.kind][0],
        amount=m.amount,
        currency="EUR",
        timestamp=datetime.fromtimestamp(m.epoch, UTC),
        channel="online",
        country="DE",
        merchant=KINDS[m.kind][1],
        merchant_category=KINDS[m.kind][2],
        latitude=KINDS[m.kind][3],
        longitude=KINDS[m.kind][4],
        kafka_topic="tx",
        kafka_partition=m.partition,
        kafka_offset=m.offset,
    )


@st.composite
def streams(draw: st.DrawFn) -> list[Msg]:
    """Messages of a few accounts over two partitions, with ties and late arrivals in event
    time (whole seconds from a small range, so equal timestamps are common) and the odd event
    far in the future."""
    n = draw(st.integers(1, 60))
    offsets = [0, 0]
    out = []
    for _ in range(n):
        partition = draw(st.integers(0, 1))
        out.append(
            Msg(
                draw(st.sampled_from(["A", "B", "C"])),
                # Now and then a far-future outlier (a producer's broken clock).
                FAR_FUTURE if draw(st.integers(0, 30)) == 0 else T0 + draw(st.integers(0, 40)) * 30.0,
                draw(st.sampled_from([1.0, 5.0, 20.0, 450.0, 900.0])),
                partition,
                offsets[partition],
                draw(st.integers(0, len(KINDS) - 1)),
            )
        )
        offsets[partition] += 1
    return out


@given(
    msgs=streams(),
    k=st.integers(1, 6),
    h=st.sampled_from([60.0, 300.0, 900.0, 1e9]),
    drops=st.lists(st.integers(0, 59), max_size=10),
    max_accounts=st.sampled_from([1, 2, None]),
)
@settings(max_examples=400, deadline=None)
def test_live_history_equals_the_one_loaded_from_stored_rows(
    msgs: list[Msg], k: int, h: float, drops: list[int], max_accounts: int | None
) -> None:
    """Process a stream live, dropping accounts from memory at random points (a trim, a lost
    partition, a rewind) and loading them again from what is stored: every account's history
    equals the definition, and every rule fires exactly as in one uninterrupted pass."""
    thresholds = RuleThresholds(
        velocity_count=2, velocity_window_s=120.0, card_testing_max_amount=5.0, card_testing_count=2,
        spike_min_history=2, spike_min_amount=300.0, spike_window_s=600.0, duplicate_window_s=300.0,
    )  # fmt: skip
    live = AccountStates(k, h, max_accounts)
    once = AccountStates(k, h)  # never drops anything
    stored: list[Msg] = []
    drop_at = set(drops)
    for i, m in enumerate(msgs):
        if i in drop_at and i % 2:
            live.clear()  # a rewind or a fence
        elif i in drop_at:
            live.drop_partitions([m.partition])  # the partition went elsewhere and came back
        for states, rows_of in ((live, stored), (once, [])):
            missing = states.missing([m.account])
            states.load(
                missing, [r for a in missing for r in stored_rows([s for s in rows_of if s.account == a], k)]
            )
        t = as_txn(m)
        got = evaluate(t, live.active(m.account, m.partition), thresholds)
        want = evaluate(t, once.active(m.account, m.partition), thresholds)
        assert got == want, f"message {i}"
        live.active(m.account, m.partition).add(Event.of(t))
        once.active(m.account, m.partition).add(Event.of(t))
        stored.append(m)
        live.trim()
        mine = [s for s in stored if s.account == m.account]
        history = live.get(m.account)
        assert history is not None
        # Late, tied and replayed adds, evictions, loads after a drop or a rewind: the epochs
        # array and the merchant index follow every one of them.
        assert_indexes_match(history)
        assert_indexes_match(once.active(m.account, m.partition))
        assert [(e.partition, e.offset) for e in history] == expected_history(mine, k, h)
        reloaded = AccountStates(k, h)
        reloaded.load([m.account], stored_rows(mine, k))
        assert [(e.partition, e.offset) for e in reloaded.get(m.account) or ()] == expected_history(
            mine, k, h
        )
        assert_indexes_match(reloaded.get(m.account) or AccountHistory(k, h))
        # Field by field, not only by place: the window holds the very events that were added,
        # live and reloaded alike (every field a rule reads: amounts, merchant, category,
        # coordinates or none, direction), as a layout of its own would have to keep them.
        added = {(s.partition, s.offset): Event.of(as_txn(s)) for s in mine}
        held = [added[place] for place in expected_history(mine, k, h)]
        assert list(history) == held
        assert list(reloaded.get(m.account) or ()) == held
