"""The three-broker stack for the replication fault tests (`make test-cluster`, not `make test`:
they take minutes). This folder's `test_stack` replaces the session stack of tests/conftest.py, so
`fresh_db`, `settings_factory` and `children` work unchanged on it; its topics have three replicas
and `min.insync.replicas=2`, as `make topics` creates them on a cluster. A cluster that cannot
start fails the tests; nothing is skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from stack.common import cache_dir
from stack.orchestrator import LocalStack, StackEnv
from utils.kafka_cleanup import new_topic_configs

# Beside the session stack (22181/29092/25432) and the secured one (22231/29142/25482), shifted
# by TXMON_TEST_PORT_OFFSET like them; brokers on kafka_port, +1, +2.
_OFFSET = int(os.environ.get("TXMON_TEST_PORT_OFFSET", "0"))
CLUSTER_TEST_PORTS = {"zk_port": 22211 + _OFFSET, "kafka_port": 29112 + _OFFSET, "pg_port": 25462 + _OFFSET}
BROKERS = 3
REPLICATION = 3


# Lines the tests measured (stalls per bounce), printed at the end of the run whatever -r says.
FIGURES: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.cluster)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("three-broker cluster: measured")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def test_stack() -> Iterator[LocalStack]:
    """ZooKeeper, three Apache Kafka brokers and PostgreSQL, fresh for the session."""
    stack = LocalStack(
        cache_dir() / f"test-stack-cluster-{_OFFSET}",
        environ={**os.environ, "TXMON_KAFKA_IMPL": "apache"},
        kafka_brokers=BROKERS,
        zk_port=CLUSTER_TEST_PORTS["zk_port"],
        kafka_port=CLUSTER_TEST_PORTS["kafka_port"],
        pg_port=CLUSTER_TEST_PORTS["pg_port"],
    )
    stack.destroy()  # a previous session's topics would only slow the start (a few seconds)
    stack.up()
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture
def topic_factory(stack_env: StackEnv) -> Iterator[Callable[..., str]]:
    """Uniquely named topics with three replicas and min.insync.replicas=2 (deleted at teardown)."""
    from utils.kafka_cleanup import admin_client, delete_topics

    assert stack_env.kafka_replication_factor == REPLICATION, stack_env
    admin = admin_client(stack_env.kafka_bootstrap_servers)
    made: list[str] = []

    def make(prefix: str = "t", partitions: int = 6) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        spec = {"num_partitions": partitions, "replication_factor": REPLICATION}
        admin.create_topics({name: {**spec, "configs": new_topic_configs(REPLICATION)}})
        admin.wait_for_topics([name], timeout_ms=30_000)
        made.append(name)
        return name

    try:
        yield make
    finally:
        admin.close()
        if made:
            cleanup = admin_client(stack_env.kafka_bootstrap_servers)
            try:
                delete_topics(cleanup, made)
            finally:
                cleanup.close()
