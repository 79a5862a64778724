"""The rules' CPU cuts (issue 23: one consumer at 0.7x the write_batch COPY ceiling) change no
decision: the consumer's path (`evaluate_batch` over consumer/rules.py and the account windows)
raises exactly what the rules raised before them (tests/unit/rules_before.py: the rewritten
rules as they were, every rule run without the dispatch's gates, one message at a time), alert for alert (type, severity, text,
details, order) and position for position:

* on seeded producer streams, with every rule set the repository configures (the environment's,
  a short horizon, a published set with rules off and retuned severities, and thresholds loose
  enough for every typology to fire often);
* on the example bank export (examples/bank-history.csv: rows someone else wrote, through the
  importer) and on Hypothesis streams of few accounts with late and replayed messages, tied
  event times, amounts at the thresholds and merchants shared between accounts;
* across cache evictions and rewinds: the new path with a cache of a few accounts that reloads
  them from the stored rows (as `AccountStates.load` from PostgreSQL), and after a rewind that
  clears the cache and evaluates stored messages again, against the old path through the very
  same schedule (and, without rewinds, against the old path that never forgets an account).
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import TopicPartition

from consumer import rules as NEW
from consumer.account_state import AccountStates, Event, HistoryRow
from consumer.batch import Batch, evaluate_batch, validate_records
from consumer.rulesets.active import ActiveRules
from producer.generator import TransactionGenerator
from producer.importer import load_mapping, map_rows, record_time_ms
from producer.pool import AccountPool
from tests.model import Record
from tests.retuned import retuned as retuned_set
from tests.unit import rules_before as OLD
from utils.config import RuleThresholds, Settings
from utils.models import TRANSACTION_TYPES, Alert, Transaction

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BASE = Settings()
TIGHT = dataclasses.replace(
    BASE,
    consumer=dataclasses.replace(BASE.consumer, state_history_hours=3.0, state_max_events_per_account=20),
)
# Every typology within reach of an ordinary stream: short bursts, one cycle, low floors.
LOOSE = dataclasses.replace(
    BASE,
    rules=dataclasses.replace(
        BASE.rules,
        velocity_count=3,
        velocity_window_s=600.0,
        card_testing_max_amount=20.0,
        card_testing_count=2,
        spike_multiplier=2.0,
        spike_min_history=2,
        spike_credit_multiplier=2.0,
        spike_min_amount=50.0,
        travel_min_km=50.0,
        duplicate_window_s=3_600.0,
        unusual_hour_min_amount=100.0,
        pass_through_min_cycles=1,
        pass_through_min_amount=100.0,
        refund_abuse_min_cycles=1,
        takeover_min_new=2,
        takeover_min_ratio=1.0,
        takeover_drain_share=0.05,
        takeover_min_history=3,
        takeover_payee_min_amount=50.0,
        structuring_threshold=500.0,
        structuring_margin=0.5,
        structuring_min_count=2,
        invoice_min_amount=100.0,
        invoice_min_history=2,
        dormant_idle_days=0.2,
        dormant_min_amount=50.0,
        card_burst_min_count=2,
        card_burst_multiplier=1.0,
        card_burst_min_amount=50.0,
    ),
)


def retuned(t: RuleThresholds) -> ActiveRules:
    """A published set with two rules off and two at other severities."""
    return retuned_set(t, critical="account_takeover")


RULE_SETS: dict[str, tuple[Settings, Callable[[RuleThresholds], ActiveRules]]] = {
    "environment": (BASE, ActiveRules.environment),
    "short-horizon": (TIGHT, ActiveRules.environment),
    "retuned": (BASE, retuned),
    "loose": (LOOSE, ActiveRules.environment),
    "loose-retuned": (LOOSE, retuned),
}

Raised = list[tuple[Alert, tuple[int, int]]]  # each alert with the position of its message
# A schedule: batches of messages, each after a rewind (the cache cleared) or not.
Schedule = Sequence[tuple[bool, Sequence[Transaction]]]


def row(t: Transaction) -> HistoryRow:
    """What storage.load_accounts reads back of a stored message (numeric columns as floats)."""
    return HistoryRow(
        t.account_id, t.transaction_id, t.amount, t.merchant, t.country, t.latitude, t.longitude,
        t.epoch, t.currency, t.amount_base, t.kafka_partition, t.kafka_offset, t.transaction_type,
        t.merchant_category,
    )  # fmt: skip


class Stored:
    """The database's transactions table, as far as loading accounts goes."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[tuple[int, int], HistoryRow]] = defaultdict(dict)

    def store(self, txns: Sequence[Transaction]) -> None:
        for t in txns:
            self.rows[t.account_id].setdefault((t.kafka_partition, t.kafka_offset), row(t))

    def load(self, states: AccountStates, txns: Sequence[Transaction]) -> None:
        missing = states.missing({t.account_id for t in txns})
        if missing:
            accounts = sorted(missing)
            states.load(accounts, [r for a in accounts for r in self.rows.get(a, {}).values()])


def new_path(s: Settings, rules: ActiveRules, schedule: Schedule, max_accounts: int | None) -> Raised:
    """The consumer's: `evaluate_batch` per batch, accounts loaded from the stored rows."""
    cs = s.consumer
    states = AccountStates(cs.state_max_events_per_account, cs.state_history_hours * 3600.0, max_accounts)
    stored, out = Stored(), Raised()
    for rewind, txns in schedule:
        if rewind:
            states.clear()
        stored.load(states, txns)
        batch = Batch(txns=list(txns))
        evaluate_batch(batch, states, rules)
        states.trim()
        stored.store(txns)
        out += zip(batch.alerts, batch.alert_positions, strict=True)
    return out


def old_path(s: Settings, rules: ActiveRules, schedule: Schedule, max_accounts: int | None) -> Raised:
    """The rules before the cuts, through their own `evaluate`, one message at a time."""
    cs = s.consumer
    functions = dict(OLD.RULES)
    old_functions = tuple(functions[name] for name, fn in NEW.RULES if fn in rules.functions)
    assert len(old_functions) == len(rules.functions)
    states = AccountStates(cs.state_max_events_per_account, cs.state_history_hours * 3600.0, max_accounts)
    stored, out = Stored(), Raised()
    for rewind, txns in schedule:
        if rewind:
            states.clear()
        stored.load(states, txns)
        for t in txns:
            history = states.active(t.account_id, t.kafka_partition)
            raised = OLD.evaluate(t, history, rules.thresholds, old_functions)
            history.add(Event.of(t))
            if raised and rules.retune is not None:
                raised = rules.adjusted(raised)
            out += [(a, (t.kafka_partition, t.kafka_offset)) for a in raised]
        states.trim()
        stored.store(txns)
    return out


def batches(txns: Sequence[Transaction], size: int) -> Schedule:
    return [(False, txns[k : k + size]) for k in range(0, len(txns), size)]


def kinds(raised: Raised) -> Counter[str]:
    return Counter(a.alert_type for a, _ in raised)


@cache
def produced(seed: int, count: int = 6000, fraud_rate: float = 0.1) -> tuple[Transaction, ...]:
    """Producer output (the bench's generator), validated as the consumer polls it."""
    gen = TransactionGenerator(seed, AccountPool.create(100, seed), fraud_rate, "simulated")
    offsets: dict[int, int] = defaultdict(int)
    by_tp: dict[TopicPartition, list[Record]] = defaultdict(list)
    for msg in gen.next_batch(count):
        key = msg["account_id"].encode()
        p = zlib.crc32(key) % 3
        sent_ms = int(datetime.fromisoformat(msg["timestamp"]).timestamp() * 1000)
        by_tp[TopicPartition("tx", p)].append(Record(p, offsets[p], key, orjson.dumps(msg), sent_ms))
        offsets[p] += 1
    batch = validate_records(dict(sorted(by_tp.items())), BASE.validation, BASE.rules.rate_table())
    assert not batch.rejections
    return tuple(batch.txns)


@pytest.mark.parametrize("seed", [11, 12])
@pytest.mark.parametrize("which", list(RULE_SETS))
def test_seeded_streams_raise_what_the_rules_raised_before(seed: int, which: str) -> None:
    s, make = RULE_SETS[which]
    rules = make(s.rules)
    txns = produced(seed)
    old = old_path(s, rules, batches(txns, len(txns)), None)
    new = new_path(s, rules, batches(txns, 500), None)
    assert new == old
    # Not vacuous: most rules fire (the typologies on the loose sets).
    fired = kinds(new)
    assert len(fired) >= (12 if which.startswith("loose") else 8), fired
    if which.startswith("loose"):
        assert {"account_takeover", "high_risk_card_burst", "pass_through", "refund_abuse"} <= set(fired)


@pytest.mark.parametrize("which", ["environment", "short-horizon", "loose"])
def test_evicted_and_rewound_accounts_decide_as_before(which: str) -> None:
    s, make = RULE_SETS[which]
    rules = make(s.rules)
    txns = produced(13)
    # A cache of 7 of the ~100 accounts: nearly every batch reloads accounts from the stored rows.
    plain = batches(txns, 300)
    assert new_path(s, rules, plain, 7) == old_path(s, rules, plain, None)
    # Rewinds: the cache cleared, then stored messages evaluated again (they meet their own
    # stored copies), then new ones; the old path through the same schedule.
    rewound = [*plain[:6], (True, txns[900:2400]), *batches(txns[2400:3000], 300), (True, txns[2000:])]
    old = old_path(s, rules, rewound, None)
    assert new_path(s, rules, rewound, 7) == old
    assert len(kinds(old)) >= 8, kinds(old)


def test_the_example_bank_export_raises_what_it_raised_before() -> None:
    text = (EXAMPLES / "bank-history.csv").read_text()
    mapping = load_mapping(json.loads((EXAMPLES / "bank-history.mapping.json").read_text()))
    out = map_rows(text, mapping, name="bank-history.csv")
    records = [
        Record(0, k, msg["account_id"].encode(), orjson.dumps(msg), record_time_ms(msg))
        for k, (_line, msg) in enumerate(out.messages)
    ]
    batch = validate_records({TopicPartition("tx", 0): records}, BASE.validation, BASE.rules.rate_table())
    txns = batch.txns
    assert len(txns) >= 20
    seen = 0
    for which, (s, make) in RULE_SETS.items():
        s = dataclasses.replace(s, consumer=dataclasses.replace(s.consumer, state_history_hours=24.0 * 60))
        rules = make(s.rules)
        new = new_path(s, rules, batches(txns, 5), None)
        assert new == old_path(s, rules, batches(txns, 5), None), which
        seen += len(new)
    assert seen > 0


# -- Hypothesis: few accounts, adversarial streams --------------------------------------------

CITIES = (None, (52.37, 4.90), (40.71, -74.01), (35.68, 139.69))
AMOUNTS = (1.0, 2.0, 19.99, 40.0, 50.0, 120.0, 250.0, 499.99, 500.0, 900.0, 2_000.0, 9_500.0, 10_000.0, 60_000.0)  # fmt: skip
MERCHANTS = (None, "Corner Shop", "Casino Royal", "Acme Ltd", "Landlord BV")
CATEGORIES = (None, "grocery", "gambling", "Gambling", "crypto", "jewelry")
T0 = datetime(2026, 3, 1, tzinfo=UTC).timestamp()


@st.composite
def streams(draw: st.DrawFn) -> list[Transaction]:
    """Messages of three accounts in arrival order: time mostly forward (seconds to days), some
    late, some at the same instant, some sent twice (a replay: same partition and offset)."""
    out: list[Transaction] = []
    clock = T0
    offsets = [0, 0]
    for k in range(draw(st.integers(1, 60))):
        if out and draw(st.integers(0, 14)) == 0:
            out.append(draw(st.sampled_from(out)))
            continue
        step = draw(st.sampled_from((0.0, 1.0, 30.0, 400.0, 3_000.0, 20_000.0, 100_000.0, -500.0, -30_000.0)))
        clock += step
        account = draw(st.integers(0, 2))
        partition = min(account, 1)
        where = draw(st.sampled_from(CITIES))
        amount = draw(st.sampled_from(AMOUNTS))
        out.append(
            Transaction(
                transaction_id=f"t{k}",
                account_id=f"ACC-{account}",
                transaction_type=draw(st.sampled_from(TRANSACTION_TYPES)),
                amount=amount,
                currency="USD",
                amount_base=amount,
                timestamp=datetime.fromtimestamp(clock, UTC),
                channel="pos",
                country=draw(st.sampled_from(("US", "NL", "JP"))),
                merchant=draw(st.sampled_from(MERCHANTS)),
                merchant_category=draw(st.sampled_from(CATEGORIES)),
                latitude=None if where is None else where[0],
                longitude=None if where is None else where[1],
                kafka_topic="tx",
                kafka_partition=partition,
                kafka_offset=offsets[partition],
            )
        )
        offsets[partition] += 1
    return out


@settings(max_examples=250, deadline=None)
@given(streams(), st.sampled_from(list(RULE_SETS)), st.integers(1, 9), st.sampled_from((None, 1, 2)))
def test_adversarial_streams_raise_what_they_raised_before(
    txns: list[Transaction], which: str, size: int, max_accounts: int | None
) -> None:
    s, make = RULE_SETS[which]
    s = dataclasses.replace(
        s, consumer=dataclasses.replace(s.consumer, state_max_events_per_account=12, state_history_hours=30.0)
    )
    rules = make(s.rules)
    schedule = batches(txns, size)
    assert new_path(s, rules, schedule, max_accounts) == old_path(s, rules, schedule, max_accounts)
