"""An isolated native stack on free ports: real ZooKeeper, Kafka broker and PostgreSQL.

One stack for the module (a cold start takes a few seconds; the first run ever also resolves
Kafka's jars with Maven). The tests run in file order: the last one takes the stack down and
checks that no process is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from kafka import KafkaConsumer, KafkaProducer

from reports.zookeeper import zk_command
from stack.__main__ import main as stack_cli
from stack.common import COMPONENTS, kafka_answers
from stack.orchestrator import LocalStack, StackEnv, export_lines
from utils import kafka_cleanup as kc
from utils.config import KafkaSettings

pytestmark = pytest.mark.integration


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    zk, kafka, pg = _free_ports(3)
    stack = LocalStack(
        tmp_path_factory.mktemp("stack"), zk_port=zk, kafka_port=kafka, pg_port=pg, start_timeout_s=180
    )
    try:
        stack.up()
        yield stack
    finally:
        stack.destroy()  # whatever a test left running; removes the data too


@pytest.fixture(scope="module")
def env(stack: LocalStack) -> StackEnv:
    return stack.env()


@pytest.fixture(scope="module")
def topics(env: StackEnv) -> KafkaSettings:
    suffix = uuid.uuid4().hex[:8]
    return KafkaSettings(
        bootstrap_servers=env.kafka_bootstrap_servers,
        topic=f"it-tx-{suffix}",
        dlq_topic=f"it-tx-{suffix}.dlq",
        topic_partitions=3,
    )


def _connect(env: StackEnv, *, migration: bool = False) -> psycopg2.extensions.connection:
    return psycopg2.connect(env.postgres_settings().dsn(migration=migration))


def _consume(bootstrap: str, topic: str, group: str, want: int, *, commit: bool = True) -> list[bytes]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=2000,
    )
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while len(values) < want and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500, max_records=want - len(values)).values():
                values.extend(r.value for r in records)
        if commit:
            consumer.commit()
    finally:
        consumer.close()
    return values


def test_all_three_answer(stack: LocalStack, env: StackEnv) -> None:
    assert all(stack.is_up(name) for name in COMPONENTS)
    assert zk_command(stack.ports["zookeeper"], "ruok") == "imok"
    assert kafka_answers(env.kafka_bootstrap_servers)
    with contextlib.closing(_connect(env)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT current_user, current_database(), rolsuper, rolcreatedb, rolcreaterole, "
            "pg_get_userbyid(d.datdba) FROM pg_roles r, pg_database d "
            "WHERE r.rolname = current_user AND d.datname = current_database()"
        )
        assert cur.fetchone() == ("txmon_app", "transactions", False, False, False, "txmon_owner")
    with contextlib.closing(_connect(env, migration=True)) as conn, conn.cursor() as cur:
        # The owner may not create databases (tests get theirs from the superuser: create_database).
        cur.execute("SELECT rolcreatedb, rolsuper FROM pg_roles WHERE rolname = current_user")
        assert cur.fetchone() == (False, False)


def test_wrong_password_is_refused(env: StackEnv) -> None:
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host=env.postgres_host, port=env.postgres_port, dbname="transactions",
                         user="txmon_app", password="wrong")  # fmt: skip


def test_up_again_starts_nothing_new(stack: LocalStack, env: StackEnv) -> None:
    pids = {name: stack.pid(name) for name in COMPONENTS}
    started = time.monotonic()
    assert stack.up() == env
    assert time.monotonic() - started < 15
    assert {name: stack.pid(name) for name in COMPONENTS} == pids


def test_topics_produce_consume_and_lag(env: StackEnv, topics: KafkaSettings) -> None:
    with contextlib.closing(kc.admin_client(env.kafka_bootstrap_servers)) as admin:
        outcome = kc.ensure_topics(admin, topics)
        assert outcome[topics.topic].startswith("created (3 partitions")
        assert outcome[topics.dlq_topic].startswith("created")
        assert kc.ensure_topics(admin, topics)[topics.topic] == "exists (3 partitions)"
        assert {topics.topic, topics.dlq_topic} <= set(kc.list_topics(admin))

        producer = KafkaProducer(bootstrap_servers=env.kafka_bootstrap_servers)
        for i in range(10):
            producer.send(topics.topic, key=f"acct-{i}".encode(), value=f"m{i}".encode())
        producer.flush()
        producer.close()

        infos = kc.describe_topic(admin, topics.topic)
        assert [i.partition for i in infos] == [0, 1, 2]
        assert all(i.leader == 0 and i.isr == (0,) for i in infos)
        assert sum(i.messages for i in infos) == 10

        group = f"it-group-{uuid.uuid4().hex[:6]}"
        assert sorted(_consume(env.kafka_bootstrap_servers, topics.topic, group, 10)) == sorted(
            f"m{i}".encode() for i in range(10)
        )
        rows = kc.group_lag(admin, group)
        assert {(r.topic, r.partition) for r in rows} == {(topics.topic, p) for p in range(3)}
        assert kc.total_lag(rows) == 0
        assert sum(r.end_offset for r in rows) == 10

        # Five more, not consumed: the lag says so, per partition and in total.
        producer = KafkaProducer(bootstrap_servers=env.kafka_bootstrap_servers)
        for i in range(10, 15):
            producer.send(topics.topic, key=f"acct-{i}".encode(), value=f"m{i}".encode())
        producer.flush()
        producer.close()
    rows = kc.group_lag(env.kafka_bootstrap_servers, group)  # the bootstrap-string form Airflow uses
    assert kc.total_lag(rows) == 5
    assert all(r.lag == r.end_offset - (r.committed or 0) for r in rows)


def test_lag_cli_prints_json(env: StackEnv, capsys: pytest.CaptureFixture[str]) -> None:
    assert kc.main(["lag", "--bootstrap-servers", env.kafka_bootstrap_servers, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"] == sum(p["lag"] for p in data["partitions"]) == 5


def test_kafka_restart_keeps_topics_and_messages(
    stack: LocalStack, env: StackEnv, topics: KafkaSettings
) -> None:
    for kill in (False, True):  # a clean stop, then a crash
        old_pid = stack.pid("kafka")
        assert old_pid is not None
        stack.stop_component("kafka", kill=kill)
        assert not stack.is_up("kafka")
        assert stack.pid("kafka") is None
        assert not _alive(old_pid)
        assert stack.is_up("zookeeper")
        stack.start_component("kafka")
        assert stack.is_up("kafka") and stack.pid("kafka") not in (None, old_pid)
        with contextlib.closing(kc.admin_client(env.kafka_bootstrap_servers)) as admin:
            assert sum(i.messages for i in kc.describe_topic(admin, topics.topic)) == 15
    fresh = _consume(
        env.kafka_bootstrap_servers, topics.topic, f"it-after-restart-{uuid.uuid4().hex[:6]}", 15
    )
    assert sorted(fresh) == sorted(f"m{i}".encode() for i in range(15))


def test_postgres_restart_keeps_data(stack: LocalStack, env: StackEnv) -> None:
    with contextlib.closing(_connect(env, migration=True)) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS it_restart (n int)")
        cur.execute("INSERT INTO it_restart VALUES (1)")
        conn.commit()
    for kill in (False, True):  # fast shutdown, then a crash (immediate: recovery on start)
        old_pid = stack.pid("postgres")
        stack.stop_component("postgres", kill=kill)
        assert not stack.is_up("postgres")
        with pytest.raises(psycopg2.OperationalError):
            _connect(env)
        assert old_pid is not None and not _alive(old_pid)
        stack.start_component("postgres")
        assert stack.is_up("postgres")
        with contextlib.closing(_connect(env, migration=True)) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM it_restart")
            assert cur.fetchone() == (1,)


def test_cli_up_env_status_print_what_eval_needs(
    stack: LocalStack, env: StackEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TXMON_STACK_ZK_PORT", str(stack.ports["zookeeper"]))
    monkeypatch.setenv("TXMON_STACK_KAFKA_PORT", str(stack.ports["kafka"]))
    monkeypatch.setenv("TXMON_STACK_PG_PORT", str(stack.ports["postgres"]))
    state = ["--state-dir", str(stack.state_dir)]
    expected = export_lines(env.as_environ())
    capsys.readouterr()
    assert stack_cli(["up", "--isolated", "--no-topics", *state]) == 0
    assert capsys.readouterr().out == expected  # stdout: the export lines and nothing else
    assert stack_cli(["env", *state]) == 0
    assert capsys.readouterr().out == expected
    assert stack_cli(["status", *state]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [[name, "up"] for name in COMPONENTS]


def test_down_leaves_no_process_behind(stack: LocalStack) -> None:
    """Last in this file on purpose: it stops the module's stack."""
    pids = [stack.pid(name) for name in COMPONENTS]
    assert None not in pids
    postmaster = pids[2]
    assert postmaster is not None
    backends = _children(postmaster)
    assert backends  # checkpointer, walwriter, ...
    stack.down()
    assert all(not stack.is_up(name) for name in COMPONENTS)
    leftovers = [pid for pid in [*pids, *backends] if pid is not None and _alive(pid)]
    assert leftovers == []
    assert not any((stack.state_dir / "run").glob("*.pid"))
    # Data stays for the next `up`.
    assert (stack.state_dir / "kafka" / "data" / "meta.properties").exists()
    assert (stack.pg_dir / "data" / "PG_VERSION").exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out
