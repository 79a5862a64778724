"""The producer against the real broker: what it sends is exactly what the generator made."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.partitioner.default import murmur2

from producer.generator import DEFAULT_START, MAX_LEAD, AccountPool, TransactionGenerator
from producer.incidents import DORMANT_IDLE_DAYS
from producer.transaction_producer import (
    BrokerUnavailable,
    CaughtUpWithPresent,
    ProducerSummary,
    run_producer,
)
from stack.orchestrator import StackEnv
from utils.config import ProducerSettings, Settings, load_settings

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS = 300
FRAUD_RATE = 0.05


@pytest.fixture(scope="module")
def bootstrap(stack_env: StackEnv) -> str:
    """The session's broker (tests/conftest.py starts it, or uses a configured one)."""
    return stack_env.kafka_bootstrap_servers


@pytest.fixture
def topic_factory(bootstrap: str) -> Iterator[Callable[..., str]]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    created: list[str] = []

    def make(partitions: int = 3, **configs: str) -> str:
        name = f"test-producer-{uuid.uuid4().hex[:12]}"
        spec: dict[str, Any] = {"num_partitions": partitions, "replication_factor": 1}
        if configs:
            spec["configs"] = {k.replace("_", "."): v for k, v in configs.items()}
        admin.create_topics({name: spec}, wait_for_metadata=True)
        created.append(name)
        return name

    yield make
    if created:
        admin.delete_topics(created)
    admin.close()


def settings_for(bootstrap: str, topic: str) -> Settings:
    base = load_settings({})  # defaults only: a developer's .env must not change the test
    return dataclasses.replace(
        base,
        kafka=dataclasses.replace(base.kafka, bootstrap_servers=bootstrap, topic=topic),
        producer=dataclasses.replace(base.producer, accounts=ACCOUNTS, fraud_rate=FRAUD_RATE),
    )


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[Any]:
    """Every record of `topic`, waiting until `expected` arrived (and a moment for extras)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,  # no group join: assignment is immediate
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            if len(records) >= expected:
                # one more short poll: a producer bug that sends duplicates must show up
                for batch in consumer.poll(timeout_ms=1000).values():
                    records.extend(batch)
                break
    finally:
        consumer.close()
    return records


def expected_stream(seed: int, n: int, start: datetime = DEFAULT_START) -> list[dict[str, Any]]:
    pool = AccountPool.create(ACCOUNTS, ProducerSettings().account_seed)
    return TransactionGenerator(seed, pool, FRAUD_RATE, clock="simulated", start=start).next_batch(n)


def test_round_trip_equals_the_generator_output(bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory()
    summary = run_producer(
        settings_for(bootstrap, topic), count=2_000, rate=0, seed=123, clock="simulated", start=DEFAULT_START
    )
    assert (summary.sent, summary.acked, summary.failed, summary.unconfirmed) == (2_000, 2_000, 0, 0)
    assert summary.start == DEFAULT_START.isoformat()
    assert summary.ok and not summary.interrupted

    records = consume_all(bootstrap, topic, 2_000)
    expected = expected_stream(123, 2_000)
    assert len(records) == 2_000
    values = [orjson.loads(r.value) for r in records]
    assert all(r.key == v["account_id"].encode() for r, v in zip(records, values, strict=True))
    assert sorted(r.value for r in records) == sorted(orjson.dumps(t) for t in expected)
    # Per-account order survives partitioning (key = account_id, idempotent producer).
    got_order: dict[str, list[str]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        v = orjson.loads(r.value)
        got_order[v["account_id"]].append(v["transaction_id"])
    want_order: dict[str, list[str]] = defaultdict(list)
    for t in expected:
        want_order[t["account_id"]].append(t["transaction_id"])
    assert got_order == want_order
    # Each key where the Java client's murmur2 partitioner puts it (topic_factory: 3 partitions).
    assert all(r.partition == (murmur2(r.key) & 0x7FFFFFFF) % 3 for r in records)
    labelled = sum(v["simulated_scenario"] is not None for v in values)
    assert sum(summary.scenario_counts.values()) == labelled > 0


def test_wall_clock_stamps_now_and_keeps_each_account_at_its_own_pace(
    bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory()
    before = datetime.now(UTC)
    summary = run_producer(settings_for(bootstrap, topic), count=2_000, rate=0, seed=7, clock="wall")
    after = datetime.now(UTC)
    assert summary.acked == 2_000 and summary.clones > 1 and summary.start is None
    values = [orjson.loads(r.value) for r in consume_all(bootstrap, topic, 2_000)]
    assert all(before <= datetime.fromisoformat(v["timestamp"]) <= after for v in values)
    # Full speed over 200 accounts, yet no account transacts more than a few times: the pool is
    # scaled by clones (ACC00000042.17) that share their original's home and habits.
    per_account: dict[str, int] = defaultdict(int)
    for v in values:
        per_account[v["account_id"]] += 1
    assert max(per_account.values()) <= 3 and any("." in a for a in per_account)


def test_consecutive_simulated_runs_continue_after_each_other(
    bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory()
    settings = settings_for(bootstrap, topic)
    first = run_producer(settings, count=1_500, rate=0, seed=1, clock="simulated")
    second = run_producer(settings, count=1_500, rate=0, seed=2, clock="simulated")
    assert first.start is not None and second.start is not None
    records = consume_all(bootstrap, topic, 3_000)
    stamps = {r.value: datetime.fromisoformat(orjson.loads(r.value)["timestamp"]) for r in records}
    run_of = {
        orjson.dumps(t): 1 for t in expected_stream(1, 1_500, start=datetime.fromisoformat(first.start))
    }
    last_first = max(t for v, t in stamps.items() if v in run_of)
    assert datetime.fromisoformat(second.start) >= last_first  # no account rewrites its history
    now = datetime.now(UTC)
    assert max(stamps.values()) <= now  # nothing in the future
    # Recent: well inside retention. A dormant account's last payments before it wakes are
    # back-dated by design (45-150 days, producer/incidents.py), and only they.
    dormant = {v for v in stamps if orjson.loads(v)["simulated_scenario"] == "dormant_reactivation"}
    assert min(t for v, t in stamps.items() if v not in dormant) >= now - timedelta(days=8)
    assert all(t >= now - timedelta(days=8 + DORMANT_IDLE_DAYS[1]) for v, t in stamps.items() if v in dormant)


def test_a_simulated_run_that_reaches_the_present_fails_loudly_when_told_not_to_pace(
    bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    """The benchmark's mode (pace=False): no waiting at real pace, an error naming the fix, and
    what was sent before it is settled."""
    topic = topic_factory()
    start = datetime.now(UTC) - MAX_LEAD - timedelta(minutes=10)  # ~10 minutes of events are possible
    with pytest.raises(CaughtUpWithPresent, match="PRODUCER_ACCOUNTS") as caught:
        run_producer(
            settings_for(bootstrap, topic), count=100_000, rate=0, seed=4, clock="simulated", start=start,
            pace=False,
        )  # fmt: skip
    sent = int(str(caught.value).split("present after ", 1)[1].split(" ", 1)[0].replace(",", ""))
    assert 0 < sent < 100_000
    assert len(consume_all(bootstrap, topic, sent)) == sent


def test_rate_limit_holds_the_requested_rate(bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory()
    summary = run_producer(settings_for(bootstrap, topic), count=600, rate=300, seed=1, clock="simulated")
    assert summary.acked == 600
    assert 1.8 <= summary.elapsed_s <= 3.0  # 600 at 300/s: two seconds, not a burst


def test_stop_event_ends_an_unbounded_run_with_everything_acked(
    bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory()
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    summary = run_producer(
        settings_for(bootstrap, topic), count=0, rate=200, seed=2, clock="wall", stop_event=stop
    )
    assert summary.interrupted and summary.ok
    assert 150 <= summary.sent <= 450 and summary.acked == summary.sent
    assert len(consume_all(bootstrap, topic, summary.sent)) == summary.sent


def test_rejected_messages_are_counted_as_failed(bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=1, max_message_bytes="200")  # every transaction is larger
    summary = run_producer(settings_for(bootstrap, topic), count=300, rate=0, seed=3, clock="simulated")
    assert (summary.sent, summary.acked, summary.failed) == (300, 0, 300)
    assert not summary.ok and summary.first_error and "MessageSizeTooLarge" in summary.first_error


def test_unreachable_broker_names_the_variable_and_the_fix() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = settings_for(f"127.0.0.1:{port}", "unused")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        run_producer(settings, count=1, seed=1, bootstrap_timeout_s=2)
    assert "KAFKA_BOOTSTRAP_SERVERS" in str(info.value) and "make stack-up" in str(info.value)
    assert time.monotonic() - started < 15


# -- the command line ---------------------------------------------------------------------------


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "PRODUCER_"))}
    env.update(TXMON_ENV_FILE=str(REPO_ROOT / "nonexistent.env"), LOG_FORMAT="json", LOG_LEVEL="INFO")
    return env


def summary_line(stderr: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    (summary,) = [line["summary"] for line in lines if "summary" in line]
    return summary  # type: ignore[no-any-return]


def test_script_entry_point_sends_count_and_exits_0(
    bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory()
    args = ["--count", "300", "--seed", "9", "--clock", "simulated", "--accounts", str(ACCOUNTS)]
    args += ["--start", DEFAULT_START.isoformat()]
    args += ["--fraud-rate", str(FRAUD_RATE), "--topic", topic, "--bootstrap-servers", bootstrap]
    proc = subprocess.run(
        [sys.executable, "producer/transaction_producer.py", *args],
        cwd=REPO_ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    summary = summary_line(proc.stderr)
    assert summary["acked"] == 300 and summary["failed"] == 0 and summary["seed"] == 9
    values = sorted(r.value for r in consume_all(bootstrap, topic, 300))
    assert values == sorted(orjson.dumps(t) for t in expected_stream(9, 300))


def test_module_entry_point_stops_cleanly_on_sigint(
    bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory()
    args = [
        "--count",
        "0",
        "--rate",
        "200",
        "--seed",
        "4",
        "--topic",
        topic,
        "--bootstrap-servers",
        bootstrap,
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "producer", *args],
        cwd=REPO_ROOT,
        env=cli_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    try:
        for line in proc.stderr:  # wait until it is really producing
            if '"producing topic=' in line:
                break
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(timeout=30) == 0, rest
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = summary_line(rest)
    assert summary["interrupted"] is True and summary["sent"] > 0
    assert summary["acked"] == summary["sent"] and summary["unconfirmed"] == 0
    assert len(consume_all(bootstrap, topic, summary["sent"])) == summary["sent"]


def test_unreachable_broker_exits_2_from_the_command_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "producer", "--count", "1", "--bootstrap-servers", "127.0.0.1:1"],
        cwd=REPO_ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in proc.stderr and "make stack-up" in proc.stderr


def test_summary_dataclass_reports_unconfirmed() -> None:
    s = ProducerSummary(topic="t", seed=1, clock="wall", sent=10, acked=7, failed=1, elapsed_s=2.0)
    assert s.unconfirmed == 2 and s.rate == 3.5 and not s.ok
