"""A three-broker cluster (TXMON_KAFKA_BROKERS=3) without starting it: each broker's identity and
files, the replication it asks for, the bootstrap list, and the topics the project creates on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stack import apache_kafka as ak
from stack import orchestrator as orch
from tests.support import wait_until
from utils.errors import StackError
from utils.kafka_cleanup import new_topic_configs


@pytest.mark.parametrize(("brokers", "expected"), [(1, (1, 1)), (2, (2, 1)), (3, (3, 2)), (5, (3, 2))])
def test_replication_follows_the_broker_count(brokers: int, expected: tuple[int, int]) -> None:
    assert ak.replication_settings(brokers) == expected


def test_a_cluster_broker_asks_for_three_copies_and_two_in_sync(tmp_path: Path) -> None:
    props = ak.kafka_properties(tmp_path / "logs-2", 29094, 22181, broker_id=2, brokers=3)
    assert props["broker.id"] == 2
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29094"
    assert props["log.dirs"] == tmp_path / "logs-2"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor"):
        assert props[key] == 3, key
    assert props["default.replication.factor"] == 3
    assert props["min.insync.replicas"] == 2
    assert props["transaction.state.log.min.isr"] == 2


def test_one_broker_keeps_single_node_replication(tmp_path: Path) -> None:
    props = ak.kafka_properties(tmp_path, 29092, 22181)
    assert props["broker.id"] == 0
    assert props["default.replication.factor"] == props["min.insync.replicas"] == 1


@pytest.mark.parametrize(("rf", "min_isr"), [(1, "1"), (2, "1"), (3, "2")])
def test_topics_the_project_creates_wait_for_two_copies_from_rf3(rf: int, min_isr: str) -> None:
    configs = new_topic_configs(rf)
    assert configs["min.insync.replicas"] == min_isr
    assert configs["message.timestamp.after.max.ms"] == "3600000"  # the event-time bound stays


def test_three_brokers_get_own_ports_files_and_ids(tmp_path: Path) -> None:
    stack = orch.LocalStack(tmp_path, zk_port=22181, kafka_port=29092, pg_port=25432, kafka_brokers=3)
    assert stack.kafka_bootstrap == "127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094"
    members = stack.kafka_cluster.members
    assert [m.broker_id for m in members] == [0, 1, 2]
    assert [m.name for m in members] == ["kafka", "kafka-1", "kafka-2"]
    assert len({m.data_dir for m in members}) == len({m.pidfile for m in members}) == 3
    assert len({m.log_path for m in members}) == 3
    assert all(m.brokers == 3 for m in members)


def test_the_broker_count_comes_from_the_environment(tmp_path: Path) -> None:
    env = {"TXMON_KAFKA_BROKERS": "3"}
    assert orch.LocalStack(tmp_path, environ=env).kafka_brokers == 3
    assert orch.LocalStack(tmp_path, environ={}).kafka_brokers == 1
    with pytest.raises(StackError, match="TXMON_KAFKA_BROKERS"):
        orch.LocalStack(tmp_path, environ={"TXMON_KAFKA_BROKERS": "three"})


def test_one_broker_is_not_a_cluster(tmp_path: Path) -> None:
    stack = orch.LocalStack(tmp_path, zk_port=22181, kafka_port=29092, pg_port=25432, environ={})
    assert stack.kafka_bootstrap == "127.0.0.1:29092"
    with pytest.raises(StackError, match="one broker"):
        stack.kafka_cluster  # noqa: B018


def test_broker_ports_may_not_run_into_postgres_or_zookeeper(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="collide"):
        orch.LocalStack(tmp_path, zk_port=22181, kafka_port=29092, pg_port=29093, kafka_brokers=3)


def test_a_secured_cluster_is_refused_by_name(tmp_path: Path) -> None:
    env = {"TXMON_KAFKA_BROKERS": "3", "TXMON_KAFKA_SECURITY": "sasl_ssl"}
    with pytest.raises(StackError, match="one broker only"):
        orch.LocalStack(tmp_path, environ=env)


def test_stack_env_carries_the_replication_factor_to_the_settings() -> None:
    env = orch.StackEnv("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", "127.0.0.1", 1, "d", "u", "p")
    assert env.as_environ()["KAFKA_REPLICATION_FACTOR"] == "1"
    three = orch.StackEnv("b", "127.0.0.1", 1, "d", "u", "p", kafka_replication_factor=3)
    assert three.kafka_settings().replication_factor == 3
    assert three.as_environ()["KAFKA_REPLICATION_FACTOR"] == "3"


def test_a_state_dir_keeps_its_broker_count(tmp_path: Path) -> None:
    (tmp_path / "kafka" / "data" / "transactions-0").mkdir(parents=True)
    three = orch.LocalStack(tmp_path, kafka_brokers=3, environ={})
    with pytest.raises(StackError, match="TXMON_KAFKA_BROKERS=1"):
        three._check_broker_count({"kafka_impl": "apache"})  # recorded before clusters: one broker
    three._check_broker_count({"kafka_impl": "apache", "kafka_brokers": 3})
    one = orch.LocalStack(tmp_path, environ={})
    with pytest.raises(StackError, match="TXMON_KAFKA_BROKERS=3"):
        one._check_broker_count({"kafka_impl": "apache", "kafka_brokers": 3})


def test_a_new_state_dir_takes_any_broker_count(tmp_path: Path) -> None:
    orch.LocalStack(tmp_path, kafka_brokers=3, environ={})._check_broker_count({"kafka_impl": "apache"})


def test_down_stops_a_clusters_brokers_without_being_told_their_count(tmp_path: Path) -> None:
    """`make stack-down` in a shell without TXMON_KAFKA_BROKERS must not orphan brokers 1 and 2."""
    three = orch.LocalStack(tmp_path, zk_port=22181, kafka_port=29092, pg_port=25432, kafka_brokers=3)
    procs = []
    for member in three.kafka_cluster.members[1:]:
        # A stand-in whose command line carries the broker's marker, as the JVM's does.
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", member.marker()])
        procs.append(proc)
        member.pidfile.parent.mkdir(parents=True, exist_ok=True)
        member.pidfile.write_text(f"{proc.pid}\n")
        # Until the child execs, /proc/PID/cmdline is still pytest's and carries no marker.
        wait_until(
            lambda m=member, p=proc: m.pid() == p.pid, timeout=15, interval=0.05, what="the stand-in's exec"
        )
    try:
        orch.LocalStack(tmp_path, zk_port=22181, kafka_port=29092, pg_port=25432, environ={}).down()
        assert [p.wait(15) for p in procs] == [-15, -15]  # SIGTERM, as a broker's controlled shutdown
        assert not list((tmp_path / "run").glob("kafka-*.pid"))
    finally:
        for p in procs:
            p.kill()
