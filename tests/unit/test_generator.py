"""The transaction generator: determinism, wire format, fraud share, scenario shapes, clocks."""

from __future__ import annotations

import bisect
import random
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from faker import Faker
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.generator import (
    CITIES,
    DEFAULT_START,
    AccountPool,
    TransactionGenerator,
    encode,
    haversine_km,
    local_hour,
)
from utils.config import RuleThresholds
from utils.models import CHANNELS, CURRENCIES, SCENARIOS, SCHEMA_VERSION, TRANSACTION_TYPES

RULES = RuleThresholds()  # the defaults the scenarios are designed to cross

WIRE_FIELDS = {
    "schema_version",
    "transaction_id",
    "account_id",
    "transaction_type",
    "amount",
    "currency",
    "timestamp",
    "channel",
    "country",
    "merchant",
    "merchant_category",
    "city",
    "latitude",
    "longitude",
    "simulated_scenario",
}
ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def check_wire(txn: dict[str, Any]) -> None:
    """The wire format of utils/models.py's docstring, plus the producer's own promises."""
    assert set(txn) == WIRE_FIELDS
    assert txn["schema_version"] == SCHEMA_VERSION
    assert isinstance(txn["transaction_id"], str) and UUID4_RE.match(txn["transaction_id"])
    assert isinstance(txn["account_id"], str) and ID_RE.match(txn["account_id"])
    assert txn["transaction_type"] in TRANSACTION_TYPES
    amount = txn["amount"]
    assert isinstance(amount, float) and amount > 0
    assert round(amount, 2) == amount, f"more than 2 decimals: {amount!r}"
    assert txn["currency"] in CURRENCIES
    ts = datetime.fromisoformat(txn["timestamp"])
    assert txn["timestamp"].endswith("+00:00") and ts.utcoffset() == timedelta(0)
    assert txn["channel"] in CHANNELS
    assert re.fullmatch(r"[A-Z]{2}", txn["country"])
    for key in ("merchant", "merchant_category", "city"):
        assert txn[key] is None or (isinstance(txn[key], str) and txn[key])
    assert txn["latitude"] is None or -90 <= txn["latitude"] <= 90
    assert txn["longitude"] is None or -180 <= txn["longitude"] <= 180
    assert txn["simulated_scenario"] is None or txn["simulated_scenario"] in SCENARIOS
    # type/channel consistency
    ttype, channel = txn["transaction_type"], txn["channel"]
    if ttype == "withdrawal":
        assert channel == "atm"
    if ttype in ("deposit", "transfer"):
        assert txn["merchant"] is None and txn["merchant_category"] is None
    if ttype in ("purchase", "refund"):
        assert channel in ("pos", "online") and txn["merchant"] and txn["merchant_category"]


def ts(txn: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(txn["timestamp"])


def gen(seed: int = 1, n_accounts: int = 200, fraud_rate: float = 0.02, **kw: Any) -> TransactionGenerator:
    return TransactionGenerator(seed, AccountPool.create(n_accounts, seed), fraud_rate, **kw)


@pytest.fixture(scope="module")
def pool() -> AccountPool:
    return AccountPool.create(200, 11)


@pytest.fixture(scope="module")
def mixed(pool: AccountPool) -> list[dict[str, Any]]:
    """20k messages with a generous fraud share, so every scenario shows up many times."""
    return TransactionGenerator(11, pool, fraud_rate=0.05).next_batch(20_000)


@pytest.fixture(scope="module")
def normal_only(pool: AccountPool) -> list[dict[str, Any]]:
    return TransactionGenerator(12, pool, fraud_rate=0.0).next_batch(20_000)


# -- determinism ------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_stream() -> None:
    a = [encode(t) for t in gen(seed=5).next_batch(5_000)]
    b = [encode(t) for t in gen(seed=5).next_batch(5_000)]
    assert a == b
    assert AccountPool.create(50, 5) == AccountPool.create(50, 5)


def test_different_seed_gives_different_stream() -> None:
    a = gen(seed=5).next_batch(1_000)
    b = gen(seed=6).next_batch(1_000)
    assert {t["transaction_id"] for t in a}.isdisjoint(t["transaction_id"] for t in b)
    assert [t["amount"] for t in a] != [t["amount"] for t in b]
    assert AccountPool.create(50, 5) != AccountPool.create(50, 6)


def test_global_random_state_is_not_used() -> None:
    random.seed(1)
    Faker.seed(1)
    a = gen(seed=7).next_batch(2_000)
    random.seed(2)
    Faker.seed(2)
    random.random()
    b = gen(seed=7).next_batch(2_000)
    assert a == b


def test_iteration_and_batches_give_the_same_stream() -> None:
    it = gen(seed=3)
    one_by_one = [next(it) for _ in range(300)]
    batched = gen(seed=3).next_batch(100) + gen(seed=3).next_batch(300)[100:]
    assert one_by_one == batched


# -- wire format ------------------------------------------------------------------------------


def test_every_message_matches_the_wire_format(mixed: list[dict[str, Any]]) -> None:
    for txn in mixed:
        check_wire(txn)
    assert len({t["transaction_id"] for t in mixed}) == len(mixed)
    # every type and channel occurs, so the checks above were exercised
    assert {t["transaction_type"] for t in mixed} == set(TRANSACTION_TYPES)
    assert {t["channel"] for t in mixed} == set(CHANNELS)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**63), n_accounts=st.integers(1, 60))
def test_wire_format_holds_for_any_seed_and_pool_size(seed: int, n_accounts: int) -> None:
    for txn in gen(seed, n_accounts, fraud_rate=0.2).next_batch(300):
        check_wire(txn)


def test_encode_keys_by_account_and_round_trips_json(mixed: list[dict[str, Any]]) -> None:
    for txn in mixed[:500]:
        key, value = encode(txn)
        assert key == txn["account_id"].encode()
        assert orjson.loads(value) == txn


def test_pool_accounts_are_unique_and_consistent(pool: AccountPool) -> None:
    ids = [a.account_id for a in pool.accounts]
    assert len(ids) == len(set(ids)) == 200
    assert len({m.name for m in pool.merchants}) == len(pool.merchants)
    for acc in pool.accounts:
        assert acc.currency == acc.city.currency in CURRENCIES
        assert acc.merchants and all(m.category in acc.categories for m in acc.merchants)
        assert 6 <= acc.active_start < acc.active_end <= 24


def test_normal_messages_come_from_the_account_home(
    pool: AccountPool, normal_only: list[dict[str, Any]]
) -> None:
    accounts = {a.account_id: a for a in pool.accounts}
    for txn in normal_only:
        acc = accounts[txn["account_id"]]
        assert txn["currency"] == acc.currency and txn["country"] == acc.city.country
        assert haversine_km(txn["latitude"], txn["longitude"], acc.city.lat, acc.city.lon) < 10


# -- fraud share --------------------------------------------------------------------------------


@pytest.mark.parametrize("fraud_rate", [0.02, 0.1])
def test_fraud_rate_is_the_share_of_messages(fraud_rate: float) -> None:
    stream = gen(seed=21, fraud_rate=fraud_rate).next_batch(20_000)
    share = sum(t["simulated_scenario"] is not None for t in stream) / len(stream)
    assert share == pytest.approx(fraud_rate, rel=0.3)
    labels = Counter(t["simulated_scenario"] for t in stream if t["simulated_scenario"])
    assert set(labels) == set(SCENARIOS)


def test_fraud_rate_bounds() -> None:
    assert all(t["simulated_scenario"] is None for t in gen(fraud_rate=0.0).next_batch(5_000))
    assert all(t["simulated_scenario"] for t in gen(fraud_rate=1.0).next_batch(2_000))
    with pytest.raises(ValueError):
        gen(fraud_rate=1.5)


def test_scenarios_can_be_restricted() -> None:
    stream = gen(fraud_rate=0.3, scenarios=("high_amount",)).next_batch(2_000)
    assert {t["simulated_scenario"] for t in stream} == {None, "high_amount"}
    with pytest.raises(ValueError):
        gen(scenarios=("no_such_scenario",))


# -- scenario shapes (each must cross the default rule threshold) -------------------------------


def instances(name: str, n: int = 150, seed: int = 31) -> list[list[dict[str, Any]]]:
    g = gen(seed=seed, fraud_rate=0.0)
    g.next_batch(3_000)  # history first, as the spike rule needs it
    return [g.scenario(name) for _ in range(n)]


def test_card_testing_is_a_burst_of_tiny_online_amounts() -> None:
    for burst in instances("card_testing"):
        assert 5 <= len(burst) <= 8
        assert len({t["account_id"] for t in burst}) == 1
        assert all(0.5 <= t["amount"] < RULES.card_testing_max_amount for t in burst)
        assert all(t["channel"] == "online" for t in burst)
        assert len({t["merchant"] for t in burst}) == len(burst)  # not a rapid_repeat
        times = [ts(t) for t in burst]
        assert times == sorted(times)
        assert (times[-1] - times[0]).total_seconds() <= min(300, RULES.card_testing_window_s)
        assert len(burst) >= RULES.card_testing_count


def test_amount_spike_is_far_above_the_account_history() -> None:
    g = gen(seed=41, fraud_rate=0.0)
    history: dict[str, list[float]] = defaultdict(list)
    for txn in g.next_batch(8_000):
        history[txn["account_id"]].append(txn["amount"])
    typical = {a.account_id: a.typical_amount for a in g.pool.accounts}
    for _ in range(150):
        (spike,) = g.scenario("amount_spike")
        past = history[spike["account_id"]]
        assert len(past) >= RULES.spike_min_history
        assert spike["amount"] >= RULES.spike_multiplier * (sum(past) / len(past))
        assert spike["amount"] >= 8 * typical[spike["account_id"]]
        assert RULES.spike_min_amount <= spike["amount"] < RULES.high_amount


def test_impossible_travel_is_far_apart_and_close_in_time() -> None:
    homes = {c.name for c in CITIES}
    for first, second in instances("impossible_travel"):
        assert first["account_id"] == second["account_id"]
        assert first["city"] in homes and first["country"] != second["country"]
        km = haversine_km(first["latitude"], first["longitude"], second["latitude"], second["longitude"])
        hours = (ts(second) - ts(first)).total_seconds() / 3600
        assert km >= 3_000 and 0.5 <= hours <= 1.0
        assert km >= RULES.travel_min_km and km / hours > RULES.travel_max_kmh


def test_rapid_repeat_is_the_same_merchant_and_amount() -> None:
    for repeat in instances("rapid_repeat"):
        assert 2 <= len(repeat) <= 3
        assert len({(t["account_id"], t["merchant"], t["amount"]) for t in repeat}) == 1
        span = (ts(repeat[-1]) - ts(repeat[0])).total_seconds()
        assert 0 < span <= 120 <= RULES.duplicate_window_s
        assert repeat[0]["amount"] >= RULES.card_testing_max_amount


def test_unusual_hour_high_value_is_at_local_night() -> None:
    for (txn,) in instances("unusual_hour_high_value"):
        hour = local_hour(ts(txn), txn["longitude"])
        assert 2.0 <= hour < 4.0
        assert RULES.unusual_hour_start <= hour < RULES.unusual_hour_end
        assert RULES.unusual_hour_min_amount <= 2_500 <= txn["amount"] < RULES.high_amount


def test_high_amount_is_above_the_threshold() -> None:
    for (txn,) in instances("high_amount"):
        assert txn["amount"] >= 12_000 > RULES.high_amount


def test_scenario_messages_in_the_stream_are_consecutive(mixed: list[dict[str, Any]]) -> None:
    # Runs of one label on one account: a scenario is never interleaved with other traffic.
    runs: list[list[dict[str, Any]]] = []
    for txn in mixed:
        key = (txn["simulated_scenario"], txn["account_id"])
        if (
            txn["simulated_scenario"]
            and runs
            and (runs[-1][0]["simulated_scenario"], runs[-1][0]["account_id"]) == key
        ):
            runs[-1].append(txn)
        elif txn["simulated_scenario"]:
            runs.append([txn])
    by_label: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for run in runs:
        by_label[run[0]["simulated_scenario"]].append(run)
    assert set(by_label) == set(SCENARIOS)
    assert all(len(run) >= 5 for run in by_label["card_testing"])
    assert all(len(run) >= 2 for run in by_label["rapid_repeat"])
    for run in by_label["impossible_travel"]:
        assert len(run) % 2 == 0
        for first, second in zip(run[::2], run[1::2], strict=True):
            km = haversine_km(first["latitude"], first["longitude"], second["latitude"], second["longitude"])
            assert km >= 3_000


# -- normal traffic stays below the rules ---------------------------------------------------------


def test_normal_traffic_rarely_crosses_rule_thresholds(normal_only: list[dict[str, Any]]) -> None:
    assert max(t["amount"] for t in normal_only) < RULES.high_amount
    by_account: dict[str, list[float]] = defaultdict(list)
    for t in normal_only:
        by_account[t["account_id"]].append(ts(t).timestamp())
    worst = 0
    for times in by_account.values():
        times.sort()
        for i, t0 in enumerate(times):
            worst = max(worst, bisect.bisect_right(times, t0 + RULES.velocity_window_s) - i)
    assert worst <= RULES.velocity_count
    night_high = [
        t
        for t in normal_only
        if RULES.unusual_hour_start <= local_hour(ts(t), t["longitude"]) < RULES.unusual_hour_end
        and t["amount"] >= RULES.unusual_hour_min_amount
    ]
    assert night_high == []
    tiny = sum(t["amount"] < RULES.card_testing_max_amount for t in normal_only)
    assert tiny < 0.01 * len(normal_only)


# -- clocks ------------------------------------------------------------------------------------------


def strip_time(stream: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in t.items() if k != "timestamp"} for t in stream]


def test_simulated_clock_starts_at_start_and_moves_forward() -> None:
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    stream = gen(seed=2, fraud_rate=0.0, start=start).next_batch(2_000)
    times = [ts(t) for t in stream]
    assert times == sorted(times) and times[0] >= start
    assert timedelta(minutes=5) < times[-1] - times[0] < timedelta(days=2)


def test_wall_clock_changes_timestamps_only() -> None:
    wall = gen(seed=9, fraud_rate=0.1, clock="wall").next_batch(3_000)
    simulated = gen(seed=9, fraud_rate=0.1, clock="simulated").next_batch(3_000)
    assert strip_time(wall) == strip_time(simulated)
    assert [t["timestamp"] for t in wall] != [t["timestamp"] for t in simulated]


def test_wall_clock_is_now_and_never_in_the_future() -> None:
    before = datetime.now(UTC)
    stream = gen(seed=4, fraud_rate=0.2, clock="wall").next_batch(3_000)
    after = datetime.now(UTC)
    for txn in stream:
        when = ts(txn)
        assert when <= after
        if txn["simulated_scenario"] is None:
            assert before <= when
        else:  # back-dated legs of a scenario, at most a day for the local-night one
            assert before - timedelta(hours=24) <= when


def test_wall_clock_scenarios_are_backdated_from_now() -> None:
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    g = gen(seed=8, fraud_rate=0.0, clock="wall", now=lambda: now)
    assert {t["timestamp"] for t in g.next_batch(100)} == {now.isoformat(timespec="microseconds")}
    first, second = g.scenario("impossible_travel")
    assert ts(second) == now and timedelta(minutes=30) <= now - ts(first) <= timedelta(minutes=60)
    (night,) = g.scenario("unusual_hour_high_value")
    assert ts(night) <= now and 2.0 <= local_hour(ts(night), night["longitude"]) < 4.0


def test_invalid_arguments_are_rejected(pool: AccountPool) -> None:
    with pytest.raises(ValueError):
        TransactionGenerator(1, pool, start=datetime(2026, 1, 1))  # naive
    with pytest.raises(ValueError):
        TransactionGenerator(1, pool, clock="sundial")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AccountPool.create(0, 1)
    assert DEFAULT_START.tzinfo is UTC
