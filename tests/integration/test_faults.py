"""Faults against the real broker and PostgreSQL: nothing lost, nothing doubled, nothing let in.

Every scenario sends a seeded stream of N generated transactions with ~1% hand-crafted bad
messages interleaved (sent as raw bytes; their Kafka coordinates are recorded), injects a fault
mid-stream, and then checks the end state against the topic itself:

* `transactions` holds exactly the good messages, each once, at the partition and offset it was
  sent to (and the ids are exactly the generated ones);
* every bad message is in `rejected_transactions` (by partition/offset, raw bytes identical) and
  in the dead-letter topic (at least once, with the same bytes);
* every expected alert exists exactly once, and no other.

The expected alerts come from the pure core run in this process over what Kafka holds, in
partition order: `validate` + `evaluate` against an `AccountStates` (see `reference`). That costs
about a second, where a second, clean consumer run into another database would cost a full
pass through the broker and PostgreSQL per test, and it is at least as robust: rules only read
their account's history, an account lives in one partition, and partition order is what every
consumer sees however often it is killed or rebalanced. The state limits (24 h, 50 events) are
the consumer's own settings; the stream spans ~14 h of event time, so time eviction never fires.
test_pipeline.py already checks a clean run's alerts against the scenario labels.

Consumers run as the real entry point in child processes. Faults land mid-stream because the
stream is sent at a bounded rate while the consumers run (a consumer cannot overtake it), and
each fault waits for a stored-row count below the total. Batches are small (max_poll_records).
"""

from __future__ import annotations

import contextlib
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumer.account_state import AccountStates, Event
from consumer.rules import evaluate
from consumer.validation import validate
from producer.generator import DEFAULT_START, encode
from stack.orchestrator import LocalStack
from tests.support import REPO, ConsumerProcess, child_env, consume, generated, query, scalar, wait_until
from utils.config import PostgresSettings, Settings
from utils.kafka_cleanup import admin_client, group_lag
from utils.models import Rejection

pytestmark = pytest.mark.slow

N = 20_000  # good transactions per scenario
BAD_RATE = 0.01  # one bad message per ~100 good ones
MAX_POLL = 500  # small batches, so faults land between and inside them
OUTAGE_S = 12.0  # how long PostgreSQL / the broker stay down


# --------------------------------------------------------------------------------------------
# The stream: generated transactions with bad messages interleaved
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Msg:
    key: bytes | None
    value: bytes
    bad: bool
    account: str  # the account whose partition it goes to (bad ones borrow a neighbour's key)


def bad_message(rng: random.Random, template: dict[str, Any], bad_id: str) -> Msg:
    """One invalid message built from a valid transaction, so it looks like real traffic."""
    key, value = encode(template)
    base = {**template, "transaction_id": bad_id}
    kind = rng.randrange(10)
    if kind == 0:  # truncated JSON: every proper prefix of an object is invalid
        raw = value[: rng.randrange(1, len(value) - 1)]
    elif kind == 1:  # invalid UTF-8 inside a string
        raw = orjson.dumps(base)[:-1] + b',"note":"caf\xe9 \xff\xfe"}'
    elif kind == 2:
        raw = orjson.dumps({**base, "amount": -round(rng.uniform(0.01, 500.0), 2)})
    elif kind == 3:
        raw = orjson.dumps({k: v for k, v in base.items() if k != "currency"})
    elif kind == 4:
        raw = orjson.dumps({**base, "amount": "12,50"})
    elif kind == 5:  # NaN as a JSON token (not valid JSON)
        raw = orjson.dumps({**base, "amount": 1}).replace(b'"amount":1', b'"amount":NaN')
    elif kind == 6:
        raw = b"[" + orjson.dumps(base) + b"]"
    elif kind == 7:
        raw = orjson.dumps({**base, "currency": "XXX"})
    elif kind == 8:
        raw = orjson.dumps({**base, "timestamp": "2999-01-01T00:00:00+00:00"})
    else:
        raw = b""
    return Msg(key, raw, True, template["account_id"])


def seeded_stream(s: Settings, n: int, seed: int) -> tuple[list[dict[str, Any]], list[Msg]]:
    """The generated stream (what `generated()` returns) with ~1% bad messages interleaved."""
    good = generated(s, n, seed)
    rng = random.Random(seed * 7919 + 1)
    msgs: list[Msg] = []
    for txn in good:
        if rng.random() < BAD_RATE:
            msgs.append(bad_message(rng, txn, f"bad-{seed}-{len(msgs)}"))
        key, value = encode(txn)
        msgs.append(Msg(key, value, False, txn["account_id"]))
    return good, msgs


class RawSender(threading.Thread):
    """Sends messages in order through one idempotent producer, at most `rate` per second,
    and records the (partition, offset) each one landed at."""

    def __init__(self, s: Settings, msgs: list[Msg], rate: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.s, self.msgs, self.rate = s, msgs, rate
        self.coords: list[tuple[int, int]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            producer = KafkaProducer(
                bootstrap_servers=self.s.kafka.bootstrap_servers,
                acks="all",
                linger_ms=5,
                max_request_size=1_000_000,
                client_id="txmon-test-raw-sender",
            )
            futures = []
            started = time.monotonic()
            for i, m in enumerate(self.msgs):
                futures.append(producer.send(self.s.kafka.topic, key=m.key, value=m.value))
                if self.rate and i % 50 == 49:
                    ahead = started + (i + 1) / self.rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
            producer.flush(timeout=120)
            for f in futures:
                md = f.get(timeout=60)
                self.coords.append((md.partition, md.offset))
            producer.close(timeout=10)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self, timeout: float = 180.0) -> list[tuple[int, int]]:
        self.join(timeout)
        assert not self.is_alive(), "the raw sender did not finish"
        if self.error is not None:
            raise AssertionError(f"sending the stream failed: {self.error!r}") from self.error
        assert len(self.coords) == len(self.msgs)
        return self.coords


def send(s: Settings, msgs: list[Msg], rate: float = 0.0) -> RawSender:
    sender = RawSender(s, msgs, rate)
    sender.start()
    return sender


# --------------------------------------------------------------------------------------------
# Reading back: the topic, the dead-letter topic, the database
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def read_topic(s: Settings, topic: str, timeout: float = 120.0) -> list[Record]:
    """Every record of `topic`, ordered by (partition, offset)."""
    c = KafkaConsumer(
        bootstrap_servers=s.kafka.bootstrap_servers,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
        client_id="txmon-test-reader",
    )
    try:
        deadline = time.monotonic() + timeout
        while not (parts := c.partitions_for_topic(topic)):
            assert time.monotonic() < deadline, f"no metadata for {topic}"
            time.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        out: list[Record] = []
        while any(c.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"reading {topic} took over {timeout:.0f}s"
            for tp, recs in c.poll(timeout_ms=500).items():
                out.extend(
                    Record(tp.partition, r.offset, r.key, r.value, tuple(r.headers or ())) for r in recs
                )
    finally:
        c.close()
    return sorted(out, key=lambda r: (r.partition, r.offset))


@dataclass(slots=True)
class Expected:
    good: dict[str, tuple[int, int]] = field(default_factory=dict)  # transaction_id -> (partition, offset)
    bad: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (partition, offset) -> raw bytes
    alerts: set[tuple[str, str]] = field(default_factory=set)  # (transaction_id, alert_type)


def reference(s: Settings, records: list[Record]) -> Expected:
    """What a clean, fault-free run stores for these records: the consumer's pure core, in order."""
    cs = s.consumer
    states = AccountStates(cs.state_max_events_per_account, cs.state_history_hours * 3600.0)
    now = time.time()
    exp = Expected()
    for r in records:
        item = validate(
            r.value,
            topic=s.kafka.topic,
            partition=r.partition,
            offset=r.offset,
            key=r.key,
            limits=s.validation,
            now=now,
        )
        if isinstance(item, Rejection):
            exp.bad[(r.partition, r.offset)] = r.value or b""
            continue
        # The fault streams carry no duplicate ids (test_hostile_input covers those).
        assert item.transaction_id not in exp.good, f"duplicate id in the stream: {item.transaction_id}"
        history = states.active(r.partition, item.account_id)
        exp.alerts.update((a.transaction_id, a.alert_type) for a in evaluate(item, history, s.rules))
        history.add(Event.of(item))
        exp.good[item.transaction_id] = (r.partition, r.offset)
    return exp


def processed(s: Settings) -> int:
    """Messages the pipeline has accounted for: stored plus rejected."""
    return int(
        scalar(
            s.postgres,
            "SELECT (SELECT count(*) FROM transactions) + (SELECT count(*) FROM rejected_transactions)",
        )
    )


def wait_processed(s: Settings, at_least: int, timeout: float = 120.0) -> int:
    seen = [0]

    def reached() -> bool:
        seen[0] = processed(s)
        return seen[0] >= at_least

    wait_until(reached, timeout=timeout, interval=0.1, what=f"{at_least} messages processed (at {seen[0]})")
    return seen[0]


def _sample(items: Any, k: int = 5) -> list[Any]:
    return sorted(items, key=str)[:k]


def check_end_state(s: Settings, records: list[Record], expected_ids: set[str] | None = None) -> Expected:
    """The database and the DLQ hold exactly what a clean run of `records` produces."""
    exp = reference(s, records)
    if expected_ids is not None:
        assert set(exp.good) == expected_ids, "the topic's valid messages are not the generated stream"

    rows = query(s.postgres, "SELECT transaction_id, kafka_partition, kafka_offset FROM transactions")
    stored = {tid: (p, o) for tid, p, o in rows}
    assert len(stored) == len(rows)
    lost, extra = exp.good.keys() - stored.keys(), stored.keys() - exp.good.keys()
    assert not lost and not extra, (
        f"{len(lost)} good messages lost (e.g. {_sample(lost)}), {len(extra)} unexpected rows "
        f"(e.g. {_sample(extra)})"
    )
    moved = [tid for tid, where in exp.good.items() if stored[tid] != where]
    assert not moved, f"{len(moved)} rows stored with other Kafka coordinates, e.g. {_sample(moved)}"

    rej_rows = query(
        s.postgres,
        "SELECT kafka_partition, kafka_offset, raw_payload FROM rejected_transactions WHERE kafka_topic = %s",
        (s.kafka.topic,),
    )
    assert scalar(s.postgres, "SELECT count(*) FROM rejected_transactions") == len(rej_rows)
    rejected = {(p, o): bytes(raw) for p, o, raw in rej_rows}
    missing, unexpected = exp.bad.keys() - rejected.keys(), rejected.keys() - exp.bad.keys()
    assert not missing and not unexpected, (
        f"bad messages not in rejected_transactions: {_sample(missing)}; "
        f"rejected though valid: {_sample(unexpected)}"
    )
    altered = [k for k, raw in exp.bad.items() if rejected[k] != raw]
    assert not altered, f"raw bytes changed in rejected_transactions at {_sample(altered)}"

    dead: dict[tuple[int, int], set[bytes]] = defaultdict(set)
    for r in read_topic(s, s.kafka.dlq_topic):
        h = dict(r.headers)
        assert h["dlq.source.topic"] == s.kafka.topic.encode()
        dead[(int(h["dlq.source.partition"]), int(h["dlq.source.offset"]))].add(r.value or b"")
    not_dead = exp.bad.keys() - dead.keys()
    assert not not_dead, f"{len(not_dead)} bad messages missing from the DLQ, e.g. {_sample(not_dead)}"
    assert dead.keys() <= exp.bad.keys(), (
        f"valid messages in the DLQ: {_sample(dead.keys() - exp.bad.keys())}"
    )
    changed = [k for k, values in dead.items() if values != {exp.bad[k]}]
    assert not changed, f"DLQ copies differ from the original bytes at {_sample(changed)}"

    alert_rows = query(s.postgres, "SELECT transaction_id, alert_type FROM alerts")
    alerts = set(alert_rows)
    assert len(alerts) == len(alert_rows), "an alert is stored twice"
    missed, spurious = exp.alerts - alerts, alerts - exp.alerts
    assert not missed and not spurious, (
        f"{len(missed)} expected alerts missing (e.g. {_sample(missed)}), "
        f"{len(spurious)} unexpected (e.g. {_sample(spurious)}); expected {len(exp.alerts)}"
    )
    return exp


def injected_coords(msgs: list[Msg], coords: list[tuple[int, int]]) -> set[tuple[int, int]]:
    return {c for m, c in zip(msgs, coords, strict=True) if m.bad}


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


@pytest.fixture
def children(fresh_db: PostgresSettings) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Child processes a test starts; any still running at the end are killed (by their PID),
    and their database sessions are gone before the test database is dropped."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    killed = False
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(30)
            killed = True
    if killed:  # a killed client's server process lingers a moment; the owner cannot end it
        with contextlib.suppress(Exception):
            wait_until(
                lambda: (
                    scalar(
                        fresh_db,
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid()",
                    )
                    == 0
                ),
                timeout=15,
            )


class Consumers:
    """Named consumer processes (the real entry point), each with its own log file."""

    def __init__(self, s: Settings, tmp_path: Path, children: list[subprocess.Popen[bytes]]) -> None:
        self.s, self.tmp_path, self.children = s, tmp_path, children
        self.procs: dict[str, ConsumerProcess] = {}

    def start(self, name: str, *args: str) -> ConsumerProcess:
        proc = ConsumerProcess(self.s, self.tmp_path / f"{name}.log", *args)
        self.children.append(proc.proc)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return self.procs[name].output()

    def stop(self, name: str, timeout: float = 90.0) -> int:
        """SIGTERM, then the exit code (the process must exit within `timeout`)."""
        proc = self.procs[name]
        proc.signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{name} ignored SIGTERM for {timeout:.0f}s:\n{tail(proc.output())}"
            ) from None


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def summary_field(log: str, name: str) -> int:
    m = re.findall(rf"consumer summary: .*?\b{name}=(\d+)", log)
    assert m, f"no consumer summary in the log:\n{tail(log)}"
    return int(m[-1])


def require_local(stack: LocalStack, name: str) -> None:
    if not stack.is_local(name):
        pytest.fail(
            f"this fault test stops and restarts {name}, but the session uses an external one "
            "(KAFKA_BOOTSTRAP_SERVERS / POSTGRES_HOST answered): unset it so the test stack runs its own"
        )


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------

_WINDOWED = ("card_testing", "rapid_repeat", "impossible_travel")
# The alert each split scenario must still raise after the kill.
SPLIT_SCENARIO_ALERT = {
    "card_testing": "card_testing",
    "rapid_repeat": "duplicate",
    "impossible_travel": "impossible_travel",
    "amount_spike": "amount_spike",
}


def split_inside_scenarios(
    good: list[dict[str, Any]], msgs: list[Msg], seed: int
) -> tuple[list[Msg], list[Msg], dict[str, int]]:
    """Two phases that keep each account's order: phase 1 is a prefix of every account's
    messages, cut in the middle of its first multi-message fraud scenario (or just before an
    amount spike), elsewhere at random. A kill between the phases then splits every such
    scenario's window: its alert only fires if the restarted consumer rebuilt the history."""
    rng = random.Random(seed)
    by_account: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(good):
        by_account[t["account_id"]].append(i)
    cut: dict[str, int] = {}
    i = 0
    while i < len(good):  # scenario runs are consecutive messages with one label and account
        t = good[i]
        j = i + 1
        while (
            j < len(good)
            and good[j]["simulated_scenario"] == t["simulated_scenario"]
            and good[j]["account_id"] == t["account_id"]
        ):
            j += 1
        label, acc = t["simulated_scenario"], t["account_id"]
        if acc not in cut and ((label in _WINDOWED and j - i >= 2) or label == "amount_spike"):
            position = by_account[acc].index(i)  # i's place in its account's sequence
            cut[acc] = position + max(1, (j - i) // 2) if label != "amount_spike" else position
        i = j
    for acc, idx in by_account.items():
        cut.setdefault(acc, rng.randint(0, len(idx)))
    seen: Counter[str] = Counter()
    phase1: list[Msg] = []
    phase2: list[Msg] = []
    pending_bad: list[Msg] = []
    for m in msgs:
        if m.bad:  # a bad message travels with the good one after it (same key, same phase)
            pending_bad.append(m)
            continue
        target = phase1 if seen[m.account] < cut[m.account] else phase2
        target.extend(pending_bad)
        target.append(m)
        pending_bad = []
        seen[m.account] += 1
    phase2.extend(pending_bad)
    return phase1, phase2, cut


def test_sigkill_at_random_points_then_restart(
    settings_factory: Callable[..., Settings], tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """SIGKILL four times (seeded random points, one exactly between two halves of every fraud
    scenario's window); each restart rebuilds state from the database and replays at most a batch."""
    seed = 101
    s = settings_factory(max_poll_records=MAX_POLL)
    good, msgs = seeded_stream(s, N, seed)
    phase1, phase2, _ = split_inside_scenarios(good, msgs, seed)
    rng = random.Random(seed)
    fleet = Consumers(s, tmp_path, children)
    kills: list[int] = []
    restarted_at = [0]

    def kill_at(threshold: int) -> None:
        # Each consumer stores a few batches first: a kill during the group join tests nothing new.
        wait_processed(s, max(threshold, restarted_at[0] + 4 * MAX_POLL))
        time.sleep(rng.uniform(0.0, 0.3))  # anywhere in a batch: before, during or after its commit
        gen = len(kills)
        fleet.procs[f"c{gen}"].kill()
        kills.append(processed(s))
        fleet.start(f"c{gen + 1}")
        restarted_at[0] = kills[-1]

    # Slow enough that the stream outlasts the restarts (each waits ~6 s for the dead member's
    # session to expire), so every kill lands mid-stream.
    rate = 600
    sender = send(s, phase1, rate=rate)
    fleet.start("c0")
    kill_at(int(len(phase1) * rng.uniform(0.3, 0.7)))
    coords1 = sender.finish()
    wait_processed(s, len(phase1))
    kill_at(len(phase1))  # the boundary: every split scenario has events on both sides
    sender = send(s, phase2, rate=rate)
    for fraction in sorted(rng.uniform(0.2, 0.6) for _ in range(2)):
        kill_at(len(phase1) + int(len(phase2) * fraction))
    coords2 = sender.finish()
    wait_processed(s, len(msgs))
    time.sleep(1.0)  # the last batch's DLQ copies and offsets
    last = f"c{len(kills)}"
    assert fleet.stop(last) == 0, tail(fleet.log(last))
    assert len(kills) == 4 and kills[-1] < len(msgs), f"a kill came after the stream was done: {kills}"

    records = read_topic(s, s.kafka.topic)
    exp = check_end_state(s, records, {t["transaction_id"] for t in good})
    assert set(exp.bad) == injected_coords(phase1, coords1) | injected_coords(phase2, coords2)
    print(f"SIGKILL at processed={kills}; {len(exp.bad)} bad messages; {len(exp.alerts)} alerts")

    # The boundary kill split these scenarios: their alerts needed history from before it.
    phase1_ids = {orjson.loads(m.value)["transaction_id"] for m in phase1 if not m.bad}
    info = {t["transaction_id"]: (t["simulated_scenario"], t["account_id"]) for t in good}
    before = Counter(info[tid] for tid in phase1_ids)  # (label, account) -> events in phase 1
    history_before = Counter(acc for _, acc in before.elements())
    spanning = Counter(
        alert_type
        for tid, alert_type in exp.alerts
        if tid not in phase1_ids
        and (label := info[tid][0]) is not None
        and SPLIT_SCENARIO_ALERT.get(label) == alert_type
        and (before[info[tid]] if label != "amount_spike" else history_before[info[tid][1]] >= 5)
    )
    print(f"alerts whose window spans the boundary kill: {dict(spanning)}")
    assert set(spanning) == set(SPLIT_SCENARIO_ALERT.values()), spanning


def test_sigterm_mid_batch_commits_exactly_what_is_stored(
    settings_factory: Callable[..., Settings], tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    seed = 202
    s = settings_factory(max_poll_records=MAX_POLL)
    good, msgs = seeded_stream(s, N, seed)
    coords = send(s, msgs).finish()  # a full backlog: the consumer is always inside a batch
    fleet = Consumers(s, tmp_path, children)
    fleet.start("c0")
    wait_processed(s, int(len(msgs) * random.Random(seed).uniform(0.25, 0.6)))
    assert fleet.stop("c0", timeout=60) == 0, tail(fleet.log("c0"))
    out = fleet.log("c0")
    assert "SIGTERM received" in out and "consumer summary" in out, tail(out)

    # Committed offsets == stored rows: per partition, exactly the offsets below the commit.
    with contextlib.closing(admin_client(s.kafka.bootstrap_servers)) as admin:
        committed = {r.partition: r.committed or 0 for r in group_lag(admin, s.kafka.consumer_group)}
    stored: dict[int, set[int]] = defaultdict(set)
    for p, o in query(
        s.postgres,
        "SELECT kafka_partition, kafka_offset FROM transactions UNION ALL "
        "SELECT kafka_partition, kafka_offset FROM rejected_transactions",
    ):
        stored[p].add(o)
    for p in range(s.kafka.topic_partitions):
        c = committed.get(p, 0)
        assert stored[p] == set(range(c)), (
            f"partition {p}: committed {c}, stored {len(stored[p])} offsets "
            f"(beyond the commit: {sorted(o for o in stored[p] if o >= c)[:5]}, "
            f"missing below it: {sorted(set(range(c)) - stored[p])[:5]})"
        )
    stored_before = summary_field(out, "stored")
    rows_before = scalar(s.postgres, "SELECT count(*) FROM transactions")
    assert stored_before == rows_before and 0 < rows_before < N, (stored_before, rows_before)

    after = consume(s, max_idle_s=3.0)  # the follow-up resumes at the commit: nothing already stored
    assert after.already_stored == 0 and rows_before + after.stored == N, after.as_dict()
    exp = check_end_state(s, read_topic(s, s.kafka.topic), {t["transaction_id"] for t in good})
    assert set(exp.bad) == injected_coords(msgs, coords)


def test_postgres_down_mid_stream_consumer_backs_off_and_resumes(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    children: list[subprocess.Popen[bytes]],
    test_stack: LocalStack,
) -> None:
    require_local(test_stack, "postgres")
    seed = 303
    s = settings_factory(max_poll_records=MAX_POLL)
    good, msgs = seeded_stream(s, N, seed)
    fleet = Consumers(s, tmp_path, children)
    sender = send(s, msgs, rate=2000)
    fleet.start("c0")
    at = wait_processed(s, len(msgs) // 4)
    stopped = time.monotonic()
    test_stack.stop_component("postgres")
    try:
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        alive = fleet.procs["c0"].proc.poll() is None
    finally:
        test_stack.start_component("postgres")
    outage = time.monotonic() - stopped
    assert alive, f"the consumer exited during the outage:\n{tail(fleet.log('c0'))}"
    coords = sender.finish()
    wait_processed(s, len(msgs))
    time.sleep(1.0)
    assert fleet.stop("c0") == 0, tail(fleet.log("c0"))
    out = fleet.log("c0")
    assert "database unavailable" in out, tail(out)
    assert summary_field(out, "db_retries") > 0
    # Kept its group membership through the outage, or rejoined and got partitions back.
    assignments = re.findall(r"partitions assigned: \[([\d, ]*)\]", out)
    assert assignments and assignments[-1].strip(), tail(out)
    print(f"PostgreSQL down {outage:.1f}s from processed={at}; assignments={len(assignments)}")
    exp = check_end_state(s, read_topic(s, s.kafka.topic), {t["transaction_id"] for t in good})
    assert set(exp.bad) == injected_coords(msgs, coords)


def test_rebalance_three_consumers_one_joins_one_leaves(
    settings_factory: Callable[..., Settings], tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    seed = 404
    s = settings_factory(partitions=6, max_poll_records=MAX_POLL)
    good, msgs = seeded_stream(s, N, seed)
    fleet = Consumers(s, tmp_path, children)
    for name in ("a", "b", "c"):
        fleet.start(name)
    sender = send(s, msgs, rate=1500)
    wait_processed(s, len(msgs) // 3)
    fleet.start("d")
    wait_processed(s, 2 * len(msgs) // 3)
    assert fleet.stop("a") == 0, tail(fleet.log("a"))
    coords = sender.finish()
    wait_processed(s, len(msgs))
    time.sleep(1.0)
    for name in ("b", "c", "d"):
        assert fleet.stop(name) == 0, tail(fleet.log(name))
    for name in ("a", "b", "c", "d"):
        out = fleet.log(name)
        assert re.search(r"partitions assigned: \[\d", out), f"{name} never got a partition:\n{tail(out)}"
    stored = [summary_field(fleet.log(n), "stored") for n in ("a", "b", "c", "d")]
    assert sum(stored) == N, stored
    exp = check_end_state(s, read_topic(s, s.kafka.topic), {t["transaction_id"] for t in good})
    assert set(exp.bad) == injected_coords(msgs, coords)


_PRODUCER_SUMMARY = re.compile(
    r"summary topic=\S+ seed=\d+ sent=(\d+) acked=(\d+) failed=(\d+) unconfirmed=(\d+)"
)


def test_broker_down_mid_stream_producer_and_consumers_recover(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    children: list[subprocess.Popen[bytes]],
    test_stack: LocalStack,
) -> None:
    """The broker is stopped (its log stays on disk) while the real producer sends and two
    consumers consume. The producer delivers through retries, or reports failures and exits 1;
    it never counts as acked what Kafka does not hold. The consumers stay up and resume."""
    require_local(test_stack, "kafka")
    seed = 505
    s = settings_factory(max_poll_records=MAX_POLL)
    good = generated(s, N, seed)
    rng = random.Random(seed)
    bad = [bad_message(rng, t, f"bad-{seed}-{i}") for i, t in enumerate(rng.sample(good, N // 100))]
    fleet = Consumers(s, tmp_path, children)
    fleet.start("a")
    fleet.start("b")
    coords = send(s, bad[: len(bad) // 2]).finish()
    plog = tmp_path / "producer.log"
    with open(plog, "wb") as out:
        producer = subprocess.Popen(
            [
                sys.executable, str(REPO / "producer" / "transaction_producer.py"),
                "--count", str(N), "--seed", str(seed), "--clock", "simulated", "--rate", "1000",
                "--start", DEFAULT_START.isoformat(),  # the stream generated() expects
            ],
            env=child_env(s), stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    children.append(producer)
    at = wait_processed(s, N // 5, timeout=120)
    stopped = time.monotonic()
    test_stack.stop_component("kafka")
    try:
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        exited = {n: fleet.procs[n].proc.poll() for n in ("a", "b")}
        producer_alive = producer.poll() is None
    finally:
        test_stack.start_component("kafka")
    outage = time.monotonic() - stopped
    for name, code in exited.items():
        assert code is None, f"consumer {name} exited ({code}) during the outage:\n{tail(fleet.log(name))}"
    rc = producer.wait(240)
    text = plog.read_text(errors="replace")
    m = _PRODUCER_SUMMARY.findall(text)
    assert m, f"no producer summary (exit {rc}):\n{tail(text)}"
    sent, acked, failed, unconfirmed = map(int, m[-1])
    coords += send(s, bad[len(bad) // 2 :]).finish()
    records = read_topic(s, s.kafka.topic)
    wait_processed(s, len(records), timeout=240)
    time.sleep(1.0)
    for name in ("a", "b"):
        assert fleet.stop(name) == 0, tail(fleet.log(name))

    generated_ids = {t["transaction_id"] for t in good}
    exp = check_end_state(s, records)
    assert set(exp.bad) == set(coords)
    in_kafka = set(exp.good)
    assert in_kafka <= generated_ids
    print(
        f"broker down {outage:.1f}s from processed={at}; producer alive during outage={producer_alive} "
        f"exit={rc} sent={sent} acked={acked} failed={failed} unconfirmed={unconfirmed}"
    )
    if failed == 0 and unconfirmed == 0:
        assert rc == 0 and acked == sent == N, (rc, sent, acked)
        assert in_kafka == generated_ids, f"{len(generated_ids - in_kafka)} acked messages are not in Kafka"
    else:
        # The producer reports only counts: at least every acked message must be in Kafka.
        assert rc == 1 and len(in_kafka) >= acked, (rc, sent, acked, failed, len(in_kafka))
