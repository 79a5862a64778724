"""Helpers the integration, fault and DAG tests share: produce a seeded stream, run the real
consumer in-process or as the real entry point in a child process, and read the database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import psycopg2

from consumer.processor import ProcessorSummary, TransactionProcessor
from producer.generator import DEFAULT_START, TransactionGenerator
from producer.pool import AccountPool
from producer.transaction_producer import ProducerSummary, run_producer
from utils.config import KafkaSettings, PostgresSettings, Settings, settings_to_env

REPO = Path(__file__).resolve().parents[1]


def produce(settings: Settings, count: int, seed: int, **kw: Any) -> ProducerSummary:
    """The seeded stream `generated(settings, count, seed)` returns, from DEFAULT_START."""
    kw.setdefault("start", DEFAULT_START)
    summary = run_producer(settings, count=count, seed=seed, clock="simulated", progress_seconds=60, **kw)
    assert summary.acked == count and summary.failed == 0, summary
    return summary


def generated(
    settings: Settings, count: int, seed: int, start: datetime = DEFAULT_START
) -> list[dict[str, Any]]:
    """Exactly what `produce(settings, count, seed, start=start)` sends (the generator is deterministic)."""
    ps = settings.producer
    gen = TransactionGenerator(
        seed, AccountPool.create(ps.accounts, ps.account_seed), ps.fraud_rate, "simulated", start
    )
    return gen.next_batch(count)


def consume(settings: Settings, max_idle_s: float = 3.0) -> ProcessorSummary:
    """Run the real processor in this process until the topic has been idle for `max_idle_s`."""
    import dataclasses

    s = dataclasses.replace(
        settings, consumer=dataclasses.replace(settings.consumer, max_idle_seconds=max_idle_s)
    )
    return TransactionProcessor(s).run()


def consume_in_thread(settings: Settings) -> tuple[TransactionProcessor, threading.Thread]:
    processor = TransactionProcessor(settings)
    thread = threading.Thread(target=processor.run, daemon=True)
    thread.start()
    return processor, thread


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {**os.environ, **settings_to_env(settings), **extra}
    env["TXMON_ENV_FILE"] = os.devnull  # a developer's .env must not leak into the test
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ConsumerProcess:
    """`python consumer/transaction_processor.py` as users run it, in a child process."""

    running: ClassVar[list[ConsumerProcess]] = []  # killed by conftest after each test

    def __init__(self, settings: Settings, log_path: Path, *args: str, **extra_env: str) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "consumer" / "transaction_processor.py"), *args],
            env=child_env(settings, **extra_env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        ConsumerProcess.running.append(self)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.proc.kill()
        self.wait()

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def query(
    pg: PostgresSettings, statement: str, params: Iterable[Any] | dict[str, Any] = ()
) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(pg.dsn(migration=True))
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def execute(pg: PostgresSettings, statement: str, params: Iterable[Any] | dict[str, Any] = ()) -> int:
    """Run one statement as the owner role and commit it; returns the row count."""
    conn = psycopg2.connect(pg.dsn(migration=True))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return int(cur.rowcount)
    finally:
        conn.close()


def scalar(pg: PostgresSettings, statement: str, params: Iterable[Any] | dict[str, Any] = ()) -> Any:
    return query(pg, statement, params)[0][0]


def wait_until(
    predicate: Any, timeout: float = 60.0, interval: float = 0.2, what: str | Callable[[], str] = "condition"
) -> None:
    """`what` may be a callable, so that the message says where the wait stopped, not where it began."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what() if callable(what) else what}")


# --- Kafka clients that may be refused (tests of a secured broker: native and Compose) ----------


def kafka_end_offsets(k: KafkaSettings, topic: str) -> int:
    """How many messages `topic` holds (sum of its partitions' end offsets), read as `k`'s user."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(**k.client_kwargs(), enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        return sum(c.end_offsets(tps).values())
    finally:
        c.close()


def kafka_read(
    kwargs: dict[str, Any], topic: str, *, group: str | None = None, timeout_s: float = 6.0
) -> list[bytes]:
    """Every message of `topic` this client can read, or the Kafka error it gets."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        topic,
        **kwargs,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout_s * 1000),
        bootstrap_timeout_ms=int(timeout_s * 1000),
    )
    try:
        return [m.value for m in c]
    finally:
        c.close()


def kafka_send(kwargs: dict[str, Any], topic: str, value: bytes, *, timeout_s: float = 6.0) -> None:
    """One message, acknowledged by the broker, or the Kafka error the client gets."""
    from kafka import KafkaProducer

    ms = int(timeout_s * 1000)
    p = KafkaProducer(
        **kwargs, acks="all", max_block_ms=ms, bootstrap_timeout_ms=ms, enable_idempotence=False
    )
    try:
        p.send(topic, value).get(timeout=timeout_s + 4)
    finally:
        p.close(timeout=5)
