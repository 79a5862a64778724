"""Exactly once by construction (issue 10): one test per cause found, against the real broker and
PostgreSQL, each of which failed on the consumer before this design (see the report of issue 10).

Most streams here are *dense*: 100 accounts transacting every few seconds of event time, so the
velocity rule fires all the time and every alert depends on the exact recent history of its
account. Any event missing from a window, or counted twice, changes alerts, and the comparison
with the model (tests/model.py: the pure core over the whole stream, once) shows it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg2
import pytest
from kafka import KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.partitioner.default import murmur2
from kafka.structs import OffsetAndMetadata

from consumer import positions
from producer.generator import DEFAULT_START, AccountPool, TransactionGenerator, encode
from tests.fleet import Consumers, Msg, check_end_state, processed, send, tail, wait_processed
from tests.model import expected, read_topic
from tests.support import consume, execute, query, scalar, wait_until
from utils.config import Settings
from utils.kafka_cleanup import admin_client, group_lag, topic_id

pytestmark = pytest.mark.slow


def dense(n: int, seed: int, *, accounts: int = 100, start: datetime = DEFAULT_START) -> list[dict[str, Any]]:
    """A seeded stream where each account transacts every ~8 s of event time: alerts everywhere."""
    gen = TransactionGenerator(
        seed, AccountPool.create(accounts, 0), 0.05, "simulated", start, account_interval_s=8.0
    )
    return gen.next_batch(n)


def msgs(txns: list[dict[str, Any]]) -> list[Msg]:
    return [Msg(*encode(t), False, t["account_id"]) for t in txns]


def send_to(s: Settings, items: Sequence[tuple[int | None, bytes | None, bytes]]) -> list[tuple[int, int]]:
    """(partition or None for the key's, key, value) in order; returns where each landed."""
    producer = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all")
    try:
        futures = [producer.send(s.kafka.topic, key=k, value=v, partition=p) for p, k, v in items]
        producer.flush(60)
        return [(md.partition, md.offset) for md in (f.get(30) for f in futures)]
    finally:
        producer.close(10)


def partition_of(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def doc(template: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**template, **changes}


def stored_alerts(s: Settings, ids: set[str]) -> set[tuple[str, str]]:
    return {(t, a) for t, a in query(s.postgres, "SELECT transaction_id, alert_type FROM alerts") if t in ids}


def has_table(s: Settings, name: str) -> bool:
    return bool(scalar(s.postgres, "SELECT to_regclass(%s) IS NOT NULL", (name,)))


def replay_from_the_start(s: Settings) -> None:
    """What an operator does to replay a group: every offset that says where to resume goes back
    to 0 (Kafka's committed offsets, and the database's where they live there)."""
    with contextlib.closing(admin_client(s.kafka.bootstrap_servers)) as admin:
        parts = range(s.kafka.topic_partitions)
        admin.alter_group_offsets(
            s.kafka.consumer_group,
            {TopicPartition(s.kafka.topic, p): OffsetAndMetadata(0, None, -1) for p in parts},
        )
    if has_table(s, "consumer_offsets"):
        execute(
            s.postgres,
            "UPDATE consumer_offsets SET next_offset = 0 WHERE consumer_group = %s",
            (s.kafka.consumer_group,),
        )


def assigned_partitions(log: str) -> list[list[int]]:
    return [
        [int(p) for p in m.split(",") if p.strip()]
        for m in re.findall(r"partitions assigned: \[([\d, ]*)\]", log)
    ]


# --------------------------------------------------------------------------------------------
# 2. Shutdown never rewinds the group
# --------------------------------------------------------------------------------------------


def test_a_partition_that_went_elsewhere_and_back_is_not_committed_stale(
    settings_factory: Callable[..., Settings], tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """p committed by A, moved to B which stores more, back to A with no new message, A exits:
    neither Kafka's committed offsets nor the database's go back, and a consumer started
    afterwards has nothing to redo."""
    s = settings_factory(partitions=2, max_poll_records=200)
    first = dense(1500, seed=21)
    send(s, msgs(first)).finish()
    fleet = Consumers(s, tmp_path, children)
    fleet.start("a")
    wait_processed(s, len(first))
    fleet.start("b")
    wait_until(lambda: any(assigned_partitions(fleet.log("b"))), 60, what="b getting a partition")
    time.sleep(2.0)  # b reads its stored offsets
    x = assigned_partitions(fleet.log("b"))[0][0]
    second = [t for t in dense(3000, seed=22) if partition_of(t["account_id"].encode(), 2) == x]
    send_to(s, [(x, *encode(t)) for t in second])
    wait_processed(s, len(first) + len(second))
    seen = len(assigned_partitions(fleet.log("a")))
    assert fleet.stop("b") == 0, tail(fleet.log("b"))
    wait_until(
        lambda: any(x in gained for gained in assigned_partitions(fleet.log("a"))[seen:]),
        60,
        what="partition x back with a",
    )
    time.sleep(1.0)
    assert fleet.stop("a") == 0, tail(fleet.log("a"))

    with contextlib.closing(admin_client(s.kafka.bootstrap_servers)) as admin:
        lag = {r.partition: (r.committed, r.end_offset) for r in group_lag(admin, s.kafka.consumer_group)}
    assert all(committed == end for committed, end in lag.values()), (
        f"Kafka's committed offsets went back: {lag}"
    )
    if has_table(s, "consumer_offsets"):
        stored = dict(query(s.postgres, "SELECT kafka_partition, next_offset FROM consumer_offsets"))
        assert stored == {p: end for p, (_, end) in lag.items()}, stored
    again = consume(s)
    assert again.consumed == 0 and again.already_stored == 0, again.as_dict()
    records = read_topic(s, s.kafka.topic)
    check_end_state(s, records, {t["transaction_id"] for t in [*first, *second]})


def test_a_member_with_nothing_to_read_writes_the_stored_offsets_to_kafka(
    settings_factory: Callable[..., Settings],
) -> None:
    """CI, stop 26: a partition moved after the previous owner's last mirror was refused, its new
    owner had nothing to read, and Kafka's committed offsets (what lag tools show) stayed behind
    for good. Here Kafka's copy is lost outright (the group deleted in Kafka): a member that sets
    the partitions up with nothing to read writes the stored offsets back."""
    s = settings_factory(partitions=3)
    txns = dense(600, seed=23)
    send(s, msgs(txns)).finish()
    assert consume(s).consumed == len(txns)
    group = s.kafka.consumer_group
    with contextlib.closing(admin_client(s.kafka.bootstrap_servers)) as admin:
        admin.delete_groups([group])
        assert group_lag(admin, group) == [], "Kafka still holds the group's offsets"
    again = consume(s)
    assert again.consumed == 0, again.as_dict()
    with contextlib.closing(admin_client(s.kafka.bootstrap_servers)) as admin:
        lag = {r.partition: (r.committed, r.end_offset) for r in group_lag(admin, group)}
    stored = dict(query(s.postgres, "SELECT kafka_partition, next_offset FROM consumer_offsets"))
    assert lag == {p: (n, n) for p, n in stored.items()}, (lag, stored)
    assert sum(stored.values()) == len(txns)


def test_a_member_whose_commits_the_group_refuses_mirrors_its_offsets_on_leaving(
    settings_factory: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI, stop 27: the walkthrough's monitor read a lag of 3,030 where 30 were unread: every
    mirror of the member was refused, as in kafka-python's join race (its state stuck in a
    re-join). Here the group refuses every commit: the last member out of the group writes
    what it stored all the same, where Kafka's copy is behind it."""
    from kafka import KafkaConsumer
    from kafka.errors import RebalanceInProgressError

    def refuse(self: KafkaConsumer, offsets: Any = None, *args: Any, **kwargs: Any) -> None:
        raise RebalanceInProgressError("refused by the test")

    monkeypatch.setattr(KafkaConsumer, "commit", refuse)
    monkeypatch.setattr(KafkaConsumer, "commit_async", refuse)
    s = settings_factory(partitions=3)
    group = s.kafka.consumer_group
    txns = dense(300, seed=29)
    send(s, msgs(txns)).finish()
    ahead = 10**6  # Kafka's copy of partition 2 ahead of the database (say, a member that left): kept
    with contextlib.closing(admin_client(s.kafka.bootstrap_servers)) as admin:
        admin.alter_group_offsets(
            group, {TopicPartition(s.kafka.topic, 2): OffsetAndMetadata(ahead, None, -1)}
        )
    assert consume(s, max_idle_s=1.0).consumed == len(txns)
    with contextlib.closing(admin_client(s.kafka.bootstrap_servers)) as admin:
        lag = {r.partition: (r.committed, r.end_offset) for r in group_lag(admin, group)}
    stored = dict(query(s.postgres, "SELECT kafka_partition, next_offset FROM consumer_offsets"))
    assert lag == {p: (ahead if p == 2 else n, n) for p, n in stored.items()}, (lag, stored)
    assert sum(stored.values()) == len(txns)


# --------------------------------------------------------------------------------------------
# 3. Validation does not depend on the clock
# --------------------------------------------------------------------------------------------


def test_a_replay_judges_a_message_exactly_as_the_first_time(
    settings_factory: Callable[..., Settings],
) -> None:
    """Six seconds ahead of its Kafka record (limit 2 s): rejected. Replayed later: rejected
    again, never also stored. The records carry fixed timestamps (the event's, six seconds
    before it): the outcome depends on the log, never on the clock of the test or consumer."""
    s = settings_factory(partitions=1)
    s = dataclasses.replace(s, validation=dataclasses.replace(s.validation, max_future_skew_s=2.0))
    template = dense(2, seed=31)
    record_ms = [int(datetime.fromisoformat(t["timestamp"]).timestamp() * 1000) for t in template]
    record_ms[0] -= 6_000
    producer = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all")
    try:
        sent = [
            producer.send(s.kafka.topic, key=k, value=v, partition=0, timestamp_ms=ms).get(30)
            for (k, v), ms in zip((encode(t) for t in template), record_ms, strict=True)
        ]
    finally:
        producer.close(10)
    p_ahead, o_ahead = sent[0].partition, sent[0].offset
    first = consume(s)
    assert (first.stored, first.rejected) == (1, 1), first.as_dict()
    replay_from_the_start(s)
    consume(s)
    stored = {(p, o) for p, o in query(s.postgres, "SELECT kafka_partition, kafka_offset FROM transactions")}
    rejected = query(s.postgres, "SELECT kafka_partition, kafka_offset, reason FROM rejected_transactions")
    assert rejected == [(p_ahead, o_ahead, "timestamp_in_future")]
    assert (p_ahead, o_ahead) not in stored, "the same message is both rejected and stored"


# --------------------------------------------------------------------------------------------
# 4. Duplicates are decided by the stream, and a stored copy is never rejected
# --------------------------------------------------------------------------------------------


def test_a_replayed_stored_copy_is_never_rejected_as_a_duplicate(
    settings_factory: Callable[..., Settings],
) -> None:
    """20 ids, each sent twice to different partitions: the first copies first, the second copies
    later (rejected as duplicates). A replay of everything polls both copies in one batch in
    whatever partition order: each id stays stored where it was, its first copy is never
    rejected, and nothing is stored twice."""
    s = settings_factory(partitions=2, max_poll_records=500)
    # Each copy in its account's own partition (others are refused as wrong_partition): the
    # first copy of id i from an account of partition i % 2, the second from one of the other.
    txns = dense(200, seed=41)
    on = [[t for t in txns if partition_of(t["account_id"].encode(), 2) == p] for p in (0, 1)]
    firsts = [(i % 2, *encode(doc(on[i % 2][i // 2], transaction_id=f"dup-{i}"))) for i in range(20)]
    seconds = [
        (1 - i % 2, *encode(doc(on[1 - i % 2][10 + i // 2], transaction_id=f"dup-{i}"))) for i in range(20)
    ]
    first_at = send_to(s, firsts)
    consume(s)
    second_at = send_to(s, seconds)
    consume(s)
    replay_from_the_start(s)
    consume(s)
    stored = {
        tid: (p, o)
        for tid, p, o in query(
            s.postgres, "SELECT transaction_id, kafka_partition, kafka_offset FROM transactions"
        )
    }
    rejected = {
        (p, o): r
        for p, o, r in query(
            s.postgres, "SELECT kafka_partition, kafka_offset, reason FROM rejected_transactions"
        )
    }
    assert stored == {f"dup-{i}": first_at[i] for i in range(20)}
    assert rejected == {at: "duplicate_transaction_id" for at in second_at}, "a stored copy was rejected"


# --------------------------------------------------------------------------------------------
# 5. The topic is part of the row identity
# --------------------------------------------------------------------------------------------


def test_two_topics_in_one_database_never_mix_their_windows(
    settings_factory: Callable[..., Settings],
) -> None:
    """Two topics with the same accounts over the same event time share a database: each topic's
    alerts are those of its own stream alone."""
    s1, s2 = settings_factory(partitions=2), settings_factory(partitions=2)
    stream1, stream2 = dense(3000, seed=51), dense(3000, seed=52)
    send(s1, msgs(stream1)).finish()
    consume(s1)
    send(s2, msgs(stream2)).finish()
    consume(s2)
    for s, stream in ((s1, stream1), (s2, stream2)):
        ids = {t["transaction_id"] for t in stream}
        exp = expected(s, read_topic(s, s.kafka.topic))
        assert set(exp.good) == ids
        got = stored_alerts(s, ids)
        assert got == exp.alerts, (
            f"{s.kafka.topic}: {len(exp.alerts - got)} missing, {len(got - exp.alerts)} extra"
        )


def test_a_recreated_topic_is_refused_loudly_not_taken_as_stored(
    settings_factory: Callable[..., Settings], tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """The topic is deleted and created again under the same name with new messages: its
    positions now name other messages. The consumer says so and reads nothing of it, rather
    than pass the new messages off as already stored or store them over old positions."""
    s = settings_factory(partitions=2)
    old = dense(400, seed=53)
    send(s, msgs(old)).finish()
    consume(s)
    offsets_before = (
        query(s.postgres, "SELECT kafka_partition, next_offset FROM consumer_offsets ORDER BY 1")
        if has_table(s, "consumer_offsets")
        else []
    )
    with contextlib.closing(admin_client(s.kafka.bootstrap_servers)) as admin:
        admin.delete_topics([s.kafka.topic])
        deadline = time.monotonic() + 60
        while True:
            try:
                admin.create_topics({s.kafka.topic: {"num_partitions": 2, "replication_factor": 1}})
                break
            except Exception:  # still being deleted
                assert time.monotonic() < deadline, "the topic could not be created again"
                time.sleep(0.5)
    new = dense(200, seed=54)
    send(s, msgs(new)).finish()
    fleet = Consumers(s, tmp_path, children)
    fleet.start("c")
    wait_until(lambda: "recreated" in fleet.log("c"), 60, what="the consumer noticing the recreated topic")
    time.sleep(2.0)
    assert fleet.stop("c") == 0, tail(fleet.log("c"))
    ids = {tid for (tid,) in query(s.postgres, "SELECT transaction_id FROM transactions")}
    assert ids == {t["transaction_id"] for t in old}, (
        f"{len(ids & {t['transaction_id'] for t in new})} new messages stored"
    )
    assert scalar(s.postgres, "SELECT count(*) FROM rejected_transactions") == 0
    if offsets_before:
        assert (
            query(s.postgres, "SELECT kafka_partition, next_offset FROM consumer_offsets ORDER BY 1")
            == offsets_before
        )


# --------------------------------------------------------------------------------------------
# 6. Accounts keep their history when partitions are added
# --------------------------------------------------------------------------------------------


def test_accounts_moved_by_add_partitions_keep_their_history(
    settings_factory: Callable[..., Settings],
) -> None:
    s = settings_factory(partitions=2)
    gen = TransactionGenerator(61, AccountPool.create(100, 0), 0.05, "simulated", account_interval_s=8.0)
    phase1, phase2 = gen.next_batch(3000), gen.next_batch(3000)
    send(s, msgs(phase1)).finish()
    consume(s)
    before = read_topic(s, s.kafka.topic)
    with contextlib.closing(admin_client(s.kafka.bootstrap_servers)) as admin:
        admin.create_partitions({s.kafka.topic: 4})
    s4 = dataclasses.replace(s, kafka=dataclasses.replace(s.kafka, topic_partitions=4))
    moved = sum(
        partition_of(t["account_id"].encode(), 4) != partition_of(t["account_id"].encode(), 2) for t in phase2
    )
    assert moved > 500, "add-partitions should move a good share of the accounts"
    send(s4, msgs(phase2)).finish()
    consume(s4)
    seen = {(r.partition, r.offset) for r in before}
    after = [r for r in read_topic(s4, s.kafka.topic) if (r.partition, r.offset) not in seen]
    exp = expected(s4, before, after, partition_counts={2, 4})  # each key where its count put it
    ids = {t["transaction_id"] for t in [*phase1, *phase2]}
    assert set(exp.good) == ids
    assert {n for (n,) in query(s.postgres, "SELECT partition_count FROM topic_partition_counts")} == {2, 4}
    assert scalar(s.postgres, "SELECT count(*) FROM rejected_transactions") == 0
    assert scalar(s.postgres, "SELECT count(*) FROM transactions") == len(ids)
    got = stored_alerts(s, ids)
    assert got == exp.alerts, f"{len(exp.alerts - got)} alerts missing, {len(got - exp.alerts)} extra"


def test_an_account_message_in_another_partition_is_refused_as_wrong_partition(
    settings_factory: Callable[..., Settings],
) -> None:
    """A producer with another partitioner (or an explicit partition) puts some of an account's
    messages in the other partition: each is refused (`wrong_partition`, in the table and the
    DLQ), and the alerts are those of a clean run of the rest. Accepted, each would be a high
    amount with alerts of its own, seen by a member that does not hold the account's history."""
    s = settings_factory(partitions=2, max_poll_records=300)
    stream = dense(1200, seed=131)
    items: list[tuple[int | None, bytes | None, bytes]] = []
    misplaced: list[int] = []  # indexes into items
    for i, t in enumerate(stream):
        items.append((None, *encode(t)))
        if i % 100 == 50:
            wrong = 1 - partition_of(t["account_id"].encode(), 2)
            stray = doc(t, transaction_id=f"stray-{i}", amount=9000.0, currency="USD")
            misplaced.append(len(items))
            items.append((wrong, *encode(stray)))
    landed = send_to(s, items)
    summary = consume(s)
    stray_at = {landed[i] for i in misplaced}
    assert summary.rejected == len(stray_at) == 12, summary.as_dict()
    rejected = {
        (p, o): r
        for p, o, r in query(
            s.postgres, "SELECT kafka_partition, kafka_offset, reason FROM rejected_transactions"
        )
    }
    assert rejected == {at: "wrong_partition" for at in stray_at}
    dead = read_topic(s, s.kafka.dlq_topic)
    assert {
        (int(dict(r.headers)["dlq.source.partition"]), int(dict(r.headers)["dlq.source.offset"]))
        for r in dead
    } == stray_at
    assert {dict(r.headers)["dlq.reason"] for r in dead} == {b"wrong_partition"}
    records = read_topic(s, s.kafka.topic)
    clean = expected(s, [r for r in records if (r.partition, r.offset) not in stray_at])
    ids = {t["transaction_id"] for t in stream}
    assert set(clean.good) == ids and not clean.bad
    assert expected(s, records, partition_counts={2}).alerts == clean.alerts
    assert scalar(s.postgres, "SELECT count(*) FROM transactions") == len(ids)
    got = stored_alerts(s, ids | {f"stray-{i}" for i in range(len(stream))})
    assert got == clean.alerts, f"{len(clean.alerts - got)} alerts missing, {len(got - clean.alerts)} extra"


# --------------------------------------------------------------------------------------------
# 7. Rules are a function of event time
# --------------------------------------------------------------------------------------------


def test_rules_see_the_event_time_window_whenever_the_consumer_runs(
    settings_factory: Callable[..., Settings], tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """X has five purchases of 100 within 40 minutes; another account's message then moves the
    stream's event time two hours on. X's late 900 at minute 45 is a spike against X's own
    history (a per-account, event-time bound keeps it, whatever the clock did meanwhile). Z's
    900 at 1h50, arriving after five purchases of 100 timed 2h-2h40, is no spike: they happened
    later, so they are not history."""
    s = settings_factory(partitions=1, max_poll_records=100, state_history_hours=1.0)
    t0 = DEFAULT_START + timedelta(hours=12)
    base = dense(1, seed=71)[0]
    n = iter(range(1000))

    def at(account: str, minutes: float, amount: float) -> tuple[int, bytes, bytes]:
        when = (t0 + timedelta(minutes=minutes)).isoformat()
        d = doc(
            base,
            transaction_id=f"et-{next(n)}",
            account_id=account,
            timestamp=when,
            amount=amount,
            currency="USD",
            simulated_scenario=None,
        )
        return (0, *encode(d))

    batch1 = [*(at("X", m, 100.0) for m in (0, 10, 20, 30, 40)), at("Y", 120, 100.0)]
    batch2 = [
        at("X", 45, 900.0),
        *(at("Z", m, 100.0) for m in (120, 130, 140, 150, 160)),
        at("Z", 110, 900.0),
    ]
    fleet = Consumers(s, tmp_path, children)
    fleet.start("c")
    send_to(s, batch1)
    wait_processed(s, len(batch1))
    time.sleep(11.0)  # more than any wall-clock eviction period
    send_to(s, batch2)
    wait_processed(s, len(batch1) + len(batch2))
    time.sleep(1.0)
    assert fleet.stop("c") == 0, tail(fleet.log("c"))
    alerts = set(query(s.postgres, "SELECT transaction_id, alert_type FROM alerts"))
    assert ("et-6", "amount_spike") in alerts, "X's late spike was judged without X's history"
    assert ("et-12", "amount_spike") not in alerts, "Z's 700 was compared with purchases made after it"
    exp = expected(s, read_topic(s, s.kafka.topic))
    assert alerts == exp.alerts


# --------------------------------------------------------------------------------------------
# 8. Errors are classified: a timeout is not an outage, conflicts are retried at once
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def table_locked(s: Settings, table: str) -> Any:
    conn = psycopg2.connect(s.postgres.dsn(migration=True))
    try:
        with conn.cursor() as cur:
            cur.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        conn.rollback()
        conn.close()


def test_a_statement_timeout_is_not_an_outage(
    settings_factory: Callable[..., Settings], tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """A lock held elsewhere makes every statement time out. The consumer says it is a timeout,
    not a dead database, rides out a short one, and stops with an error naming the cause after
    a bounded number of tries; nothing is lost, the next consumer stores the rest."""
    s = settings_factory(partitions=1, max_poll_records=200, db_retry_max_backoff_s=1.0)
    s = dataclasses.replace(s, postgres=dataclasses.replace(s.postgres, statement_timeout_ms=1000))
    stream = dense(900, seed=81)
    fleet = Consumers(s, tmp_path, children)
    fleet.start("c")
    send(s, msgs(stream[:300])).finish()
    wait_processed(s, 300)
    with table_locked(s, "transactions"):
        send(s, msgs(stream[300:600])).finish()
        time.sleep(4.0)  # a few timeouts, then the lock goes
    wait_processed(s, 600)
    assert fleet.procs["c"].proc.poll() is None, tail(fleet.log("c"))
    with table_locked(s, "transactions"):
        send(s, msgs(stream[600:])).finish()
        code = fleet.procs["c"].wait(60)
    out = fleet.log("c")
    assert code == 1, f"exit {code}:\n{tail(out)}"
    assert "statement timeout, the database is up (not an outage)" in out, tail(out)
    assert "POSTGRES_STATEMENT_TIMEOUT_MS" in out and "database unavailable" not in out, tail(out)
    assert processed(s) == 600  # the held batch was not stored, and its offsets did not move
    consume(s)
    check_end_state(s, read_topic(s, s.kafka.topic), {t["transaction_id"] for t in stream})


def test_accounts_load_within_the_statement_timeout_however_big_the_table(
    settings_factory: Callable[..., Settings], tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """300,000 stored transactions of the stream's 100 accounts within the last day; statement
    timeout 200 ms. Loading an account reads its newest K rows through an index, so the consumer
    works through the stream (with the stored history in its windows) instead of timing out."""
    s = settings_factory(partitions=1, max_poll_records=500)
    s = dataclasses.replace(s, postgres=dataclasses.replace(s.postgres, statement_timeout_ms=200))
    stream = dense(2000, seed=82)
    accounts = sorted({t["account_id"] for t in stream})
    start = datetime.fromisoformat(stream[0]["timestamp"])
    with contextlib.closing(admin_client(s.kafka.bootstrap_servers)) as admin:
        incarnation = positions.incarnation(topic_id(admin, s.kafka.topic))
    topic_col = ("kafka_topic, kafka_topic_id, ", "%(topic)s, %(topic_id)s, ")  # its stored history
    execute(
        s.postgres,
        f"""INSERT INTO transactions (transaction_id, account_id, transaction_type, amount, currency,
                "timestamp", channel, country, merchant, schema_version, {topic_col[0]}kafka_partition, kafka_offset)
            SELECT 'old-' || i, (%(accounts)s::text[])[1 + i %% %(n)s], 'purchase', 20 + i %% 50, 'USD',
                   %(start)s::timestamptz - make_interval(secs => 1 + i * 0.25), 'pos', 'DE', 'Old Shop', 1,
                   {topic_col[1]}0, -i
            FROM generate_series(1, 300000) AS i""",
        {
            "accounts": accounts,
            "n": len(accounts),
            "start": start,
            "topic": s.kafka.topic,
            "topic_id": str(incarnation),
        },
    )
    execute(s.postgres, "ANALYZE transactions")
    rows = query(
        s.postgres,
        "SELECT account_id, transaction_id, amount::float8, merchant, country::text, latitude, longitude, "
        'extract(epoch FROM "timestamp")::float8, currency::text, coalesce(amount_base, amount)::float8, '
        "kafka_partition, kafka_offset FROM transactions",
    )
    fleet = Consumers(s, tmp_path, children)
    fleet.start("c")
    send(s, msgs(stream)).finish()
    wait_processed(s, 300_000 + len(stream), timeout=90)
    time.sleep(1.0)
    assert fleet.stop("c") == 0, tail(fleet.log("c"))
    exp = expected(s, read_topic(s, s.kafka.topic), stored=rows)
    ids = {t["transaction_id"] for t in stream}
    assert set(exp.good) == ids
    got = stored_alerts(s, ids)
    assert got == exp.alerts, f"{len(exp.alerts - got)} alerts missing, {len(got - exp.alerts)} extra"


def has_column(s: Settings, table: str, column: str) -> bool:
    return bool(
        scalar(
            s.postgres,
            "SELECT count(*) FROM information_schema.columns WHERE table_name = %s AND column_name = %s",
            (table, column),
        )
    )


def test_serialization_failures_and_deadlocks_are_retried_at_once(
    settings_factory: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """The first writes of the stream fail with a serialization failure and a deadlock (a
    trigger raises them): the consumer runs the transaction again at once and goes on."""
    s = settings_factory(partitions=1, max_poll_records=200)
    execute(
        s.postgres,
        """CREATE SEQUENCE flaky_writes;
           CREATE FUNCTION flaky() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
           DECLARE n bigint := nextval('flaky_writes');
           BEGIN
               IF n = 1 THEN RAISE EXCEPTION 'injected' USING ERRCODE = 'serialization_failure'; END IF;
               IF n = 2 THEN RAISE EXCEPTION 'injected' USING ERRCODE = 'deadlock_detected'; END IF;
               RETURN NULL;
           END $$;
           CREATE TRIGGER flaky BEFORE INSERT ON transactions FOR EACH STATEMENT EXECUTE FUNCTION flaky();""",
    )
    stream = dense(1000, seed=83)
    send(s, msgs(stream)).finish()
    with caplog.at_level("INFO", logger="consumer"):
        summary = consume(s)
    assert summary.clean_exit and summary.stored == len(stream), summary.as_dict()
    retried = [r.message for r in caplog.records if "retrying at once" in r.message]
    assert any("SerializationFailure" in m for m in retried) and any(
        "DeadlockDetected" in m for m in retried
    ), retried
    assert scalar(s.postgres, "SELECT last_value FROM flaky_writes") >= 3
    check_end_state(s, read_topic(s, s.kafka.topic), {t["transaction_id"] for t in stream})


# --------------------------------------------------------------------------------------------
# 10. A dead-letter topic that refuses never holds the pipeline up
# --------------------------------------------------------------------------------------------


def test_a_refusing_dead_letter_topic_does_not_stop_the_pipeline(
    settings_factory: Callable[..., Settings], tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """The DLQ topic refuses every record (max.message.bytes 64): good messages after the bad
    ones are stored all the same, the log names the fix, and once the topic is fixed every
    rejection reaches it."""
    s = settings_factory(partitions=2, max_poll_records=200)
    dlq = f"dlq-small-{uuid.uuid4().hex[:8]}"
    with contextlib.closing(admin_client(s.kafka.bootstrap_servers)) as admin:
        admin.create_topics(
            {dlq: {"num_partitions": 1, "replication_factor": 1, "configs": {"max.message.bytes": "64"}}}
        )
    s = dataclasses.replace(s, kafka=dataclasses.replace(s.kafka, dlq_topic=dlq))
    try:
        stream = dense(2000, seed=101)
        items = []
        for i, t in enumerate(stream):
            if i % 50 == 25:
                items.append(
                    Msg(t["account_id"].encode(), orjson.dumps({**t, "amount": -1}), True, t["account_id"])
                )
            items.append(Msg(*encode(t), False, t["account_id"]))
        fleet = Consumers(s, tmp_path, children)
        fleet.start("c")
        send(s, items).finish()
        wait_processed(s, len(items), timeout=90)  # the pipeline went on while the DLQ refused
        wait_until(lambda: "refused a message" in fleet.log("c"), 30, what="the refusal in the log")
        assert "Fix: raise the topic's max.message.bytes" in fleet.log("c"), tail(fleet.log("c"))
        with contextlib.closing(admin_client(s.kafka.bootstrap_servers)) as admin:
            admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, dlq, configs={"max.message.bytes": "1048588"})]
            )
        records = read_topic(s, s.kafka.topic)
        bad = len([m for m in items if m.bad])

        def published() -> int:
            return len(
                {
                    (dict(r.headers)["dlq.source.partition"], dict(r.headers)["dlq.source.offset"])
                    for r in read_topic(s, dlq)
                }
            )

        wait_until(lambda: published() == bad, 120, what=f"all {bad} rejections in the fixed DLQ")
        assert fleet.stop("c") == 0, tail(fleet.log("c"))
        check_end_state(s, records, {t["transaction_id"] for t in stream})
    finally:
        with (
            contextlib.closing(admin_client(s.kafka.bootstrap_servers)) as admin,
            contextlib.suppress(Exception),
        ):
            admin.delete_topics([dlq])
