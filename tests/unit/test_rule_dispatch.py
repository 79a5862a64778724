"""The rules' fast paths raise the alerts of the plain ones.

* the window's merchant index (`AccountHistory.by_merchant`, `seen`) equals a scan of the window,
  through inserts, late arrivals, replays and evictions (Hypothesis);
* `evaluate`'s dispatch (a rule's gate on type and amount) equals calling every rule, on seeded
  streams and at every gate's bound and the floats either side of it;
* the indexed `account_takeover` and `duplicate` equal their scan-based versions as they were
  (tests/unit/reference_rules.py), message for message on seeded streams;
* `evaluate_batch` (the dispatch and the rule set looked up once per batch) raises, message for
  message, what `evaluate_message` raises, for the environment's set, a set with rules off and a
  retuned one; and `dispatcher` chooses the rules `evaluate` calls.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections import defaultdict
from datetime import datetime
from functools import cache

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import TopicPartition

from consumer.account_state import AccountHistory, AccountStates, Event
from consumer.batch import Batch, evaluate_batch, evaluate_message, validate_records
from consumer.rules import ALL_RULES, account_takeover, dispatcher, duplicate, evaluate, plan
from consumer.rulesets.active import ActiveRules
from producer.generator import TransactionGenerator
from producer.pool import AccountPool
from tests.model import Record
from tests.retuned import retuned
from tests.unit.reference_rules import account_takeover_scan, duplicate_scan, seen_scan
from utils.config import RuleThresholds, Settings
from utils.models import TRANSACTION_TYPES, Alert, Transaction

MERCHANTS = ("a", "b", "c", None)


@st.composite
def arrivals(draw: st.DrawFn) -> list[Event]:
    """Events in arrival order: epochs from a small set (ties), some late, some replayed."""
    out: list[Event] = []
    for k in range(draw(st.integers(0, 40))):
        if out and draw(st.integers(0, 9)) == 0:
            out.append(draw(st.sampled_from(out)))  # the same message again
            continue
        epoch = float(draw(st.integers(0, 30)))
        merchant = draw(st.sampled_from(MERCHANTS))
        partition = draw(st.integers(0, 1))
        out.append(Event(epoch, 1.0, merchant, "US", None, None, f"t{k}", "USD", 1.0, partition, k))
    return out


def rebuilt(history: AccountHistory) -> dict[str | None, list[float]]:
    index: dict[str | None, list[float]] = {}
    for e in history.events:
        index.setdefault(e.merchant, []).append(e.epoch)
    return {m: sorted(v) for m, v in index.items()}


@settings(max_examples=300, deadline=None)
@given(
    arrivals(), st.integers(1, 8), st.lists(st.tuples(st.integers(-2, 32), st.integers(-2, 32)), max_size=8)
)
def test_merchant_index_equals_a_scan_of_the_window(
    events: list[Event], max_events: int, queries: list[tuple[int, int]]
) -> None:
    history = AccountHistory(max_events, 10.0)
    for event in events:
        history.add(event)
        assert {m: list(v) for m, v in history.by_merchant.items()} == rebuilt(history)
        for start, before in queries:
            for m in MERCHANTS:
                expected = any(e.merchant == m and start <= e.epoch < before for e in history.events)
                assert history.seen(m, start, before) is expected
                if m is not None:  # the rules' old scan: from the horizon of `now` to `before`
                    assert seen_scan(history, m, before, start + 10.0) is expected


# -- seeded streams -------------------------------------------------------------------------

BASE = Settings()
TIGHT = dataclasses.replace(
    BASE,
    consumer=dataclasses.replace(BASE.consumer, state_history_hours=3.0, state_max_events_per_account=20),
)


@cache
def stream(seed: int) -> tuple[Transaction, ...]:
    gen = TransactionGenerator(seed, AccountPool.create(120, 1), 0.1, "simulated")
    offsets: dict[int, int] = defaultdict(int)
    by_tp: dict[TopicPartition, list[Record]] = defaultdict(list)
    for msg in gen.next_batch(8000):
        key = msg["account_id"].encode()
        p = zlib.crc32(key) % 3
        sent_ms = int(datetime.fromisoformat(msg["timestamp"]).timestamp() * 1000)
        by_tp[TopicPartition("tx", p)].append(Record(p, offsets[p], key, orjson.dumps(msg), sent_ms))
        offsets[p] += 1
    batch = validate_records(dict(sorted(by_tp.items())), BASE.validation, BASE.rules.rate_table())
    assert not batch.rejections
    return tuple(batch.txns)


def every_rule(txn: Transaction, history: AccountHistory, t: RuleThresholds) -> list[Alert]:
    return [a for rule in ALL_RULES if (a := rule(txn, history, t)) is not None]


@pytest.mark.parametrize(("seed", "s"), [(3, BASE), (4, TIGHT), (5, BASE)])
def test_fast_paths_raise_the_alerts_of_the_plain_rules(seed: int, s: Settings) -> None:
    t = s.rules
    states = AccountStates(s.consumer.state_max_events_per_account, s.consumer.state_history_hours * 3600.0)
    txns = stream(seed)
    states.load({x.account_id for x in txns}, [])
    fired: dict[str, int] = defaultdict(int)
    for txn in txns:
        history = states.active(txn.account_id, txn.kafka_partition)
        alerts = evaluate(txn, history, t)
        assert alerts == every_rule(txn, history, t)
        assert account_takeover(txn, history, t) == account_takeover_scan(txn, history, t)
        assert duplicate(txn, history, t) == duplicate_scan(txn, history, t)
        for a in alerts:
            fired[a.alert_type] += 1
        history.add(Event.of(txn))
    # Not vacuous: the stream's incidents fire the rules compared here, and most others.
    # (A 3-hour window is too short for a takeover's habits: it fires on the default window.)
    assert fired["duplicate"] > 0 and (s is TIGHT or fired["account_takeover"] > 0)
    assert len(fired) >= 9, fired


def bounds(t: RuleThresholds) -> set[float]:
    return {b for bs, _segments in plan(ALL_RULES, t).values() for b in bs}


VARIANTS = [
    BASE.rules,
    dataclasses.replace(BASE.rules, spike_credit_multiplier=4.0, high_amount_credit=5_000.0),
    dataclasses.replace(BASE.rules, structuring_threshold=3_000.0, card_testing_max_amount=3_000.0),
]


@pytest.mark.parametrize("t", VARIANTS)
def test_dispatch_equals_calling_every_rule_at_each_gates_bound(t: RuleThresholds) -> None:
    txns = stream(3)
    states = AccountStates(
        BASE.consumer.state_max_events_per_account, BASE.consumer.state_history_hours * 3600.0
    )
    states.load({x.account_id for x in txns}, [])
    amounts = sorted(
        {x for b in bounds(t) for x in (math.nextafter(b, -math.inf), b, math.nextafter(b, math.inf))}
    )
    assert len(amounts) >= 20
    calls = dispatcher(ALL_RULES, t)
    checked = 0
    for k, txn in enumerate(txns):
        history = states.active(txn.account_id, txn.kafka_partition)
        if k % 40 == 0:
            for ttype in (*TRANSACTION_TYPES, "chargeback"):  # a type of no plan: every rule runs
                for amount in amounts:
                    probe = dataclasses.replace(txn, transaction_type=ttype, amount_base=amount)
                    expected = every_rule(probe, history, t)
                    assert evaluate(probe, history, t) == expected
                    chosen = calls(ttype, amount)
                    assert [a for rule in chosen if (a := rule(probe, history, t)) is not None] == expected
                    checked += 1
        history.add(Event.of(txn))
    assert checked > 1000


@pytest.mark.parametrize(
    ("seed", "s", "which"), [(3, BASE, "env"), (4, TIGHT, "retuned"), (5, BASE, "retuned")]
)
def test_a_batch_raises_what_each_message_raises(seed: int, s: Settings, which: str) -> None:
    t = s.rules
    rules = ActiveRules.environment(t) if which == "env" else retuned(t)
    assert (rules.retune is None) == (which == "env")
    txns = stream(seed)
    cs = s.consumer

    def fresh() -> AccountStates:
        states = AccountStates(cs.state_max_events_per_account, cs.state_history_hours * 3600.0)
        states.load({x.account_id for x in txns}, [])
        return states

    one_by_one, positions = [], []
    states = fresh()
    for txn in txns:
        raised = evaluate_message(txn, states, rules)
        one_by_one += raised
        positions += [(txn.kafka_partition, txn.kafka_offset)] * len(raised)
    batched = fresh()
    alerts: list[Alert] = []
    for k in range(0, len(txns), 1000):  # several batches over the same account windows
        batch = Batch(txns=list(txns[k : k + 1000]))
        evaluate_batch(batch, batched, rules)
        assert batch.rule_set_version == rules.version
        assert batch.alert_positions == positions[len(alerts) : len(alerts) + len(batch.alerts)]
        alerts += batch.alerts
    assert alerts == one_by_one
    kinds = {(a.alert_type, a.severity) for a in alerts}
    assert len({a for a, _s in kinds}) >= 8, kinds  # not vacuous
    if which == "retuned":
        assert ("duplicate", "low") in kinds and not {"velocity", "structuring"} & {a for a, _s in kinds}
    for account in {x.account_id for x in txns}:  # and the windows end the same
        assert list(batched.get(account) or ()) == list(states.get(account) or ())
