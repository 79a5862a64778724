"""The backtest's pure core (consumer/rulesets/backtest.py) on a seeded stream, without services:
the replay reproduces what the consumer's own core raised, a candidate changes exactly what its
edit touches, a bounded replay equals the full one on its window, version switches by offset are
honoured."""

from __future__ import annotations

import dataclasses
import itertools
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from functools import cache

import orjson
import pytest
from kafka import TopicPartition

from consumer.account_state import AccountStates
from consumer.batch import evaluate_batch, validate_records
from consumer.rulesets.active import ActiveRules
from consumer.rulesets.backtest import (
    CSV_COLUMNS,
    Replayed,
    StoredAlert,
    VersionMap,
    compare,
    csv_rows,
    format_table,
    replay,
    stream_order,
)
from consumer.rulesets.model import RuleConfig, RuleSet, StateLimits
from producer.generator import TransactionGenerator
from producer.pool import AccountPool
from tests.model import Record
from utils.config import RuleThresholds, Settings
from utils.models import Alert, Transaction

PARTITIONS = 3
# Tight account windows (3 h, 20 events, over a ~12 h stream), so that both bounds evict.
SETTINGS = dataclasses.replace(
    Settings(),
    consumer=dataclasses.replace(
        Settings().consumer, state_history_hours=3.0, state_max_events_per_account=20
    ),
)
ENV = SETTINGS.rules
LIMITS = StateLimits.from_settings(SETTINGS.consumer)


@cache
def _live() -> tuple[tuple[Transaction, ...], tuple[Alert, ...]]:
    """A seeded stream as the consumer's core processes it (validate_records + evaluate_batch, in
    partition order, as tests/model.py does): its stored transactions and alerts."""
    gen = TransactionGenerator(5, AccountPool.create(150, 1), 0.08, "simulated")
    offsets: dict[int, int] = defaultdict(int)
    by_tp: dict[TopicPartition, list[Record]] = defaultdict(list)
    for msg in gen.next_batch(6000):
        key = msg["account_id"].encode()
        p = zlib.crc32(key) % PARTITIONS
        by_tp[TopicPartition("tx", p)].append(Record(p, offsets[p], key, orjson.dumps(msg)))
        offsets[p] += 1
    batch = validate_records(dict(sorted(by_tp.items())), SETTINGS.validation, ENV.rate_table())
    assert not batch.rejections
    states = AccountStates(LIMITS.max_events, LIMITS.history_s)
    states.load(states.missing(batch.accounts()), [])
    evaluate_batch(batch, states, ENV)
    return tuple(batch.txns), tuple(batch.alerts)


def partitions(txns: Iterable[Transaction]) -> list[list[Transaction]]:
    out: dict[int, list[Transaction]] = defaultdict(list)
    for t in txns:
        out[t.kafka_partition].append(t)
    return [sorted(ts, key=lambda t: t.kafka_offset) for _p, ts in sorted(out.items())]


def stored(alerts: Iterable[Alert], version: int | None = None) -> list[StoredAlert]:
    """Alerts as the backtest reads them back from the database."""
    txns = {t.transaction_id: t for t in _live()[0]}
    out = []
    for a in alerts:
        t = txns[a.transaction_id]
        details = orjson.loads(orjson.dumps(a.details))  # a round trip through jsonb
        out.append(
            StoredAlert(
                a.transaction_id,
                a.alert_type,
                a.severity,
                details,
                version,
                t.kafka_partition,
                t.kafka_offset,
                t.simulated_incident,
            )
        )
    return out


def run(rule_set: RuleSet, txns: Iterable[Transaction] | None = None, **kw: object) -> Replayed:
    evaluator = ActiveRules.of(rule_set, ENV)
    messages = stream_order(partitions(_live()[0] if txns is None else txns))
    return replay(messages, lambda t: evaluator, LIMITS, **kw)  # type: ignore[arg-type]


def environment() -> RuleSet:
    return RuleSet.from_thresholds(ENV)


def edited(rule: str, **changes: object) -> RuleSet:
    base = environment()
    config = base.rules[rule]
    params = {**config.parameters, **changes.pop("parameters", {})}  # type: ignore[dict-item]
    new = dataclasses.replace(config, parameters=params, **changes)  # type: ignore[arg-type]
    return dataclasses.replace(base, rules={**base.rules, rule: new})


def keys(alerts: Iterable[Alert | StoredAlert]) -> set[tuple[str, str]]:
    return {(a.transaction_id, a.alert_type) for a in alerts}


def test_the_stream_exercises_every_rule() -> None:
    alerts = _live()[1]
    assert {a.alert_type for a in alerts} == set(environment().rules)


def test_replay_reproduces_the_consumers_alerts_exactly() -> None:
    txns, alerts = _live()
    replayed = run(environment())
    assert replayed.transactions == len(txns)
    assert replayed.alerts == {(a.transaction_id, a.alert_type): a for a in alerts}  # details too
    outcome = compare(stored(alerts), replayed)
    assert outcome.identical and outcome.changes == []
    assert all(r.added == r.removed == r.changed == 0 and r.stored == r.candidate for r in outcome.rules)
    assert sum(r.stored for r in outcome.rules) == len(alerts)


def test_disabling_a_rule_removes_exactly_its_alerts() -> None:
    alerts = _live()[1]
    outcome = compare(stored(alerts), run(edited("velocity", enabled=False)))
    velocity = keys(a for a in alerts if a.alert_type == "velocity")
    assert velocity
    assert {(c.transaction_id, c.rule) for c in outcome.changes} == velocity
    assert {c.change for c in outcome.changes} == {"removed"}
    by_rule = {r.rule: r for r in outcome.rules}
    assert by_rule["velocity"].removed == by_rule["velocity"].stored == len(velocity)
    assert by_rule["velocity"].candidate == 0 and by_rule["velocity"].candidate_score.recall in (0.0, None)
    assert all(r.added == r.removed == r.changed == 0 for r in outcome.rules if r.rule != "velocity")


def test_raising_a_threshold_removes_only_the_alerts_below_it() -> None:
    alerts = _live()[1]
    high = sorted(a.details["amount_base"] for a in alerts if a.alert_type == "high_amount")
    threshold = high[len(high) // 2]  # about half of them fall below
    outcome = compare(
        stored(alerts), run(edited("high_amount", parameters={"high_amount": threshold})), details=False
    )
    below = keys(a for a in alerts if a.alert_type == "high_amount" and a.details["amount_base"] < threshold)
    assert below and len(below) < len(high)
    removed = {(c.transaction_id, c.rule) for c in outcome.changes if c.change == "removed"}
    assert removed == below
    assert not [c for c in outcome.changes if c.change == "added"]
    # Kept ones that were critical (5x the old threshold) and are not 5x the new one are high now.
    changed = [c for c in outcome.changes if c.change == "changed"]
    assert changed and {(c.rule, c.stored_severity, c.severity) for c in changed} == {
        ("high_amount", "critical", "high")
    }
    assert {(c.transaction_id, c.rule) for c in changed} == keys(
        a
        for a in alerts
        if a.alert_type == "high_amount"
        and a.severity == "critical"
        and a.details["amount_base"] < 5 * threshold
    )
    # The self-check's comparison also sees that every kept alert cites the new threshold.
    exact = compare(
        stored(alerts), run(edited("high_amount", parameters={"high_amount": threshold})), details=True
    )
    cited = [c for c in exact.changes if c.change == "changed"]
    assert len(cited) == len(high) - len(below)
    assert all(c.details["threshold"] == threshold for c in cited)


def test_a_severity_change_is_a_change_of_every_alert_of_that_rule() -> None:
    alerts = _live()[1]
    outcome = compare(stored(alerts), run(edited("duplicate", severity="high")), details=False)
    dup = keys(a for a in alerts if a.alert_type == "duplicate")
    assert {(c.transaction_id, c.rule) for c in outcome.changes} == dup
    assert all(
        c.change == "changed" and (c.stored_severity, c.severity) == ("medium", "high")
        for c in outcome.changes
    )


def window(txns: Iterable[Transaction]) -> tuple[float, float]:
    epochs = sorted(t.epoch for t in txns)
    return epochs[len(epochs) // 3], epochs[2 * len(epochs) // 3]


def bounded(since: float, until: float) -> Replayed:
    """What the I/O shell does for --since/--until: each partition replayed from its first message
    at or after `since` to its last one in the window, accounts loaded from the rows below that."""
    txns = _live()[0]
    by_p = partitions(txns)
    starts = {
        ts[0].kafka_partition: next((t.kafka_offset for t in ts if t.epoch >= since), 10**9) for ts in by_p
    }
    lasts = {
        ts[0].kafka_partition: max((t.kafka_offset for t in ts if since <= t.epoch < until), default=-1)
        for ts in by_p
    }

    def history(accounts: set[str]) -> Iterator[tuple[object, ...]]:
        for t in txns:
            if t.account_id in accounts and t.kafka_offset < starts[t.kafka_partition]:
                yield (
                    t.account_id,
                    t.transaction_id,
                    t.amount,
                    t.merchant,
                    t.country,
                    t.latitude,
                    t.longitude,
                    t.epoch,
                    t.currency,
                    t.amount_base,
                    t.kafka_partition,
                    t.kafka_offset,
                    t.transaction_type,
                    t.merchant_category,
                )

    part = [t for t in txns if starts[t.kafka_partition] <= t.kafka_offset <= lasts[t.kafka_partition]]
    return run(environment(), part, history=history, since=since, until=until, chunk=97)


def test_a_bounded_replay_equals_the_full_one_on_its_window() -> None:
    txns, alerts = _live()
    since, until = window(txns)
    in_window = {t.transaction_id for t in txns if since <= t.epoch < until}
    expected = {k: a for k, a in run(environment()).alerts.items() if k[0] in in_window}
    got = bounded(since, until)
    assert got.transactions == len(in_window)
    assert got.alerts == expected
    assert compare(stored(a for a in alerts if a.transaction_id in in_window), got).identical
    # What the per-partition offset start is for: messages sent after a later-stamped one.
    assert any(b.epoch < a.epoch for ts in partitions(txns) for a, b in itertools.pairwise(ts))


def test_without_the_accounts_history_a_bounded_replay_would_differ() -> None:
    """The check above has teeth: starting the window's accounts empty loses alerts."""
    txns = _live()[0]
    since, until = window(txns)
    full = bounded(since, until)
    cold = run(environment(), [t for t in txns if since <= t.epoch < until], since=since, until=until)
    assert cold.alerts != full.alerts


def test_version_switches_by_offset_are_honoured() -> None:
    txns, _alerts = _live()
    strict = edited("velocity", parameters={"velocity_count": 2})  # version 7: many more alerts
    p0 = [t for t in txns if t.kafka_partition == 0]
    switch = p0[len(p0) // 2].kafka_offset
    # Partition 0 ran the environment's settings up to `switch`, version 7 from there; partition 1
    # ran version 7 from offset 0 and back to the environment's settings (NULL) at 500.
    vmap = VersionMap([(0, switch, 7), (1, 0, 7), (1, 500, None)])
    assert vmap.at(0, switch - 1) is None and vmap.at(0, switch) == 7 and vmap.at(0, 10**9) == 7
    assert vmap.at(1, 0) == 7 and vmap.at(1, 499) == 7 and vmap.at(1, 500) is None
    assert vmap.at(2, 5) is None and vmap.versions() == {7}
    evaluators = {None: ActiveRules.of(environment(), ENV), 7: ActiveRules.of(strict, ENV)}
    got = replay(
        stream_order(partitions(txns)),
        lambda t: evaluators[vmap.at(t.kafka_partition, t.kafka_offset)],
        LIMITS,
    )
    # A rule set never changes the histories, so each message's alerts are those of a whole run
    # under the version that evaluated it.
    under = {None: run(environment()).alerts, 7: run(strict).alerts}
    position = {t.transaction_id: (t.kafka_partition, t.kafka_offset) for t in txns}
    expected = {
        k: a for v, raised in under.items() for k, a in raised.items() if vmap.at(*position[k[0]]) == v
    }
    assert got.alerts == expected
    assert len(under[7]) > len(under[None])  # the switch matters
    assert got.alerts != under[None] and got.alerts != under[7]


def test_before_the_first_row_the_version_the_alerts_carry() -> None:
    alerts = stored(_live()[1][:40], version=3)
    vmap = VersionMap([(0, 10**9, 4)], alerts)
    assert vmap.at(0, 0) == 3 and vmap.at(0, 10**9) == 4 and vmap.conflicts == []
    assert vmap.versions() == {3, 4}
    mixed = [*alerts, dataclasses.replace(alerts[0], transaction_id="x", version=None)]
    vmap = VersionMap([], mixed)
    assert vmap.conflicts == [alerts[0].partition]
    assert vmap.at(alerts[0].partition, 0) is None  # disagreeing alerts: the environment's settings


def test_table_json_and_csv_say_the_same() -> None:
    alerts = _live()[1]
    outcome = compare(stored(alerts), run(edited("velocity", enabled=False)))
    table = format_table(outcome).splitlines()
    assert table[0].split() == [
        "rule",
        "stored",
        "candidate",
        "added",
        "removed",
        "changed",
        "precision",
        "recall",
    ]
    velocity = next(line for line in table if line.startswith("velocity"))
    r = next(r for r in outcome.rules if r.rule == "velocity")
    assert velocity.split()[1:6] == [f"{r.stored:,}", "0", "0", f"{r.removed:,}", "0"]
    rows = list(csv_rows(outcome.changes))
    assert rows[0] == CSV_COLUMNS and len(rows) == 1 + r.removed
    assert all(row[0] == "removed" and row[2] == "velocity" and orjson.loads(row[4]) for row in rows[1:])


@pytest.mark.parametrize("rule", sorted(RuleSet.from_thresholds(RuleThresholds()).rules))
def test_each_rule_disabled_removes_only_its_own(rule: str) -> None:
    alerts = _live()[1]
    config = environment().rules[rule]
    candidate = dataclasses.replace(
        environment(),
        rules={**environment().rules, rule: RuleConfig(False, config.severity, config.parameters)},
    )
    outcome = compare(stored(alerts), run(candidate))
    assert {(c.transaction_id, c.rule) for c in outcome.changes} == keys(
        a for a in alerts if a.alert_type == rule
    )
