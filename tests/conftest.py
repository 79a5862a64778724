"""Shared fixtures: the real services, a fresh database and unique topics per test.

Services: if KAFKA_BOOTSTRAP_SERVERS / POSTGRES_HOST are set in the environment and answer, they
are used (POSTGRES_MIGRATION_USER must be allowed to CREATE DATABASE there). Otherwise one isolated
native stack (ZooKeeper + Kafka + PostgreSQL) is started for the session on test ports and
stopped at the end; its superuser creates each test's database. A service that cannot start
fails the tests; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stack.common import cache_dir
from stack.orchestrator import LocalStack, StackEnv
from utils import schema
from utils.config import KafkaSettings, PostgresSettings, Settings, load_settings

# Parallel test sessions on one machine (several developers, a benchmark) each set their own
# TXMON_TEST_PORT_OFFSET so their stacks neither collide nor stop each other.
_OFFSET = int(os.environ.get("TXMON_TEST_PORT_OFFSET", "0"))
# Below Linux's ephemeral range (32768-60999): a port in it may be some loopback client's local
# port at the moment the stack binds (a CI run once failed so, on 35432).
TEST_PORTS = {"zk_port": 22181 + _OFFSET, "kafka_port": 29092 + _OFFSET, "pg_port": 25432 + _OFFSET}


def pytest_unconfigure(config: pytest.Config) -> None:
    # Airflow disposes of its ORM in an atexit hook and logs that through handlers bound to
    # pytest's capture streams, which are closed by then: every run ended in "--- Logging
    # error ---" tracebacks that hid the summary. Nothing logged that late is worth a traceback.
    logging.raiseExceptions = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.path)
        if f"{os.sep}integration{os.sep}" in path:
            item.add_marker(pytest.mark.integration)
        elif f"{os.sep}dags{os.sep}" in path:
            item.add_marker(pytest.mark.dags)


def _configured(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


@pytest.fixture(scope="session")
def test_stack() -> Iterator[LocalStack]:
    """The session's stack object: fault tests stop and start its components."""
    base = load_settings(
        environ={k: v for k, v in os.environ.items() if k.startswith(("POSTGRES_", "KAFKA_"))}
    )
    stack = LocalStack(
        Path(os.environ.get("TXMON_TEST_STATE_DIR", cache_dir() / f"test-stack-{_OFFSET}")),
        existing_kafka=base.kafka.bootstrap_servers if _configured("KAFKA_BOOTSTRAP_SERVERS") else None,
        existing_postgres=base.postgres if _configured("POSTGRES_HOST") else None,
        zk_port=TEST_PORTS["zk_port"],
        kafka_port=TEST_PORTS["kafka_port"],
        pg_port=TEST_PORTS["pg_port"],
    )
    stack.up()
    try:
        yield stack
    finally:
        stack.down()


# The secured broker (TXMON_KAFKA_SECURITY=sasl_ssl) runs beside the plaintext one, on its own ports.
SECURED_TEST_PORTS = {"zk_port": 22231 + _OFFSET, "kafka_port": 29142 + _OFFSET, "pg_port": 25482 + _OFFSET}


@pytest.fixture(scope="session")
def secured_kafka_stack() -> Iterator[LocalStack]:
    """ZooKeeper + a SASL_SSL broker with SCRAM users and ACLs (no PostgreSQL: tests that need a
    database take `fresh_db` from the plaintext stack). Started only by the tests that ask for it."""
    stack = LocalStack(
        cache_dir() / f"test-stack-secured-{_OFFSET}",
        environ={**os.environ, "TXMON_KAFKA_SECURITY": "sasl_ssl", "TXMON_KAFKA_IMPL": "apache"},
        zk_port=SECURED_TEST_PORTS["zk_port"],
        kafka_port=SECURED_TEST_PORTS["kafka_port"],
        pg_port=SECURED_TEST_PORTS["pg_port"],
    )
    stack.destroy()  # fresh topics, users and certificates each session (a few seconds)
    stack.start_component("kafka")
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def stack_env(test_stack: LocalStack) -> StackEnv:
    return test_stack.env()


RULES_ADMINS = ("txmon_test_alice", "txmon_test_bob")


@pytest.fixture(scope="session")
def rules_admins(test_stack: LocalStack) -> dict[str, str]:
    """Two named people's own logins, members of txmon_rules_admin (name -> password), as
    `python -m utils.roles add-rules-admin NAME` makes them: who may publish rule sets."""
    import secrets

    from utils import roles

    out = {name: secrets.token_urlsafe(24) for name in RULES_ADMINS}
    pg = test_stack.env().postgres_settings()
    conn = test_stack.postgres.connect_superuser()
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for name, password in out.items():
                roles.add_rules_admin(cur, name, password, roles.RoleNames.from_settings(pg))
    finally:
        conn.close()
    return out


@pytest.fixture
def as_person(rules_admins: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Log the rule-set CLI in as one of `rules_admins` (PGUSER/PGPASSWORD, as a person would)."""

    def login(name: str) -> None:
        monkeypatch.setenv("PGUSER", name)
        monkeypatch.setenv("PGPASSWORD", rules_admins[name])

    login(RULES_ADMINS[0])
    return login


@pytest.fixture(autouse=True)
def _no_stray_consumers() -> Iterator[None]:
    """A failed test must not leave its child consumers running (and holding its database)."""
    from tests.support import ConsumerProcess

    yield
    while ConsumerProcess.running:
        proc = ConsumerProcess.running.pop()
        if proc.proc.poll() is None:
            proc.kill()


@pytest.fixture
def fresh_db(test_stack: LocalStack) -> Iterator[PostgresSettings]:
    """A new, migrated database for one test; dropped afterwards."""
    pg = test_stack.create_database(f"txmon_test_{uuid.uuid4().hex[:10]}")
    schema.migrate(pg)
    try:
        yield pg
    finally:
        test_stack.drop_database(pg.db)


@pytest.fixture
def db_factory(test_stack: LocalStack) -> Iterator[Callable[[], PostgresSettings]]:
    """More new, migrated databases for one test (two runs to compare); dropped afterwards."""
    made: list[PostgresSettings] = []

    def make() -> PostgresSettings:
        pg = test_stack.create_database(f"txmon_test_{uuid.uuid4().hex[:10]}")
        made.append(pg)
        schema.migrate(pg)
        return pg

    try:
        yield make
    finally:
        for pg in made:
            test_stack.drop_database(pg.db)


@pytest.fixture
def topic_factory(stack_env: StackEnv) -> Iterator[Callable[..., str]]:
    """Creates uniquely named topics (deleted at teardown)."""
    from utils.kafka_cleanup import admin_client, delete_topics

    admin = admin_client(stack_env.kafka_bootstrap_servers)
    made: list[str] = []

    def make(prefix: str = "t", partitions: int = 6) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}})
        made.append(name)
        return name

    try:
        yield make
    finally:
        admin.close()
        if made:
            # A fresh client: the test may have restarted the broker under the first one.
            cleanup = admin_client(stack_env.kafka_bootstrap_servers)
            try:
                delete_topics(cleanup, made)
            finally:
                cleanup.close()


@pytest.fixture
def settings_factory(
    stack_env: StackEnv, fresh_db: PostgresSettings, topic_factory: Callable[..., str]
) -> Callable[..., Settings]:
    """Settings for one pipeline under test: its own topic, DLQ, group and database."""

    def make(partitions: int = 6, **consumer_overrides: Any) -> Settings:
        topic = topic_factory("tx", partitions)
        kafka = KafkaSettings(
            bootstrap_servers=stack_env.kafka_bootstrap_servers,
            topic=topic,
            dlq_topic=topic_factory("dlq", 1),
            consumer_group=f"g-{topic}",
            topic_partitions=partitions,
        )
        base = Settings()
        consumer = dataclasses.replace(
            base.consumer, session_timeout_ms=6000, poll_timeout_ms=200, **consumer_overrides
        )
        return dataclasses.replace(base, kafka=kafka, postgres=fresh_db, consumer=consumer)

    return make


@pytest.fixture
def pipeline_settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


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
        from tests.support import scalar, wait_until

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
