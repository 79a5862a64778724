"""docker-compose.cluster.yml for real: three brokers in containers, a partition leader SIGKILLed
mid-stream, nothing acknowledged lost or stored twice.

The stack is docker-compose.yml + docker-compose.cluster.yml under its own project name, as
docs/scaling.md starts it, with the default stack's doors (Kafka SASL_SSL with SCRAM and ACLs,
PostgreSQL TLS only). Only what the fault needs is started: ZooKeeper, the three brokers, the
one-shot jobs (kafka-tls, kafka-init, postgres-tls, db-roles, db-migrate), PostgreSQL and one
consumer. Airflow (four containers and its own database), Prometheus, Alertmanager and the console
are not: they would double the start on CI's two cores and nothing here reads them
(tests/compose/test_stack.py runs them on the single-broker stack). The producer service is not
started either: the host producer, with the credentials `python -m deploy kafka-env` prints, is
the only writer, so the test knows exactly what was sent.

In order: the brokers report three replicas in sync and min.insync.replicas=2 for the pipeline's
topics and the consumers' offsets; the host producer sends (acks=all, idempotent) while the
consumer stores; the container of partition 0's leader gets `docker kill` (SIGKILL), stays down
a few seconds and is started again; once every replica is back in sync the producer is stopped.
Then every message the producer reported acknowledged is in PostgreSQL exactly once (count,
distinct ids, none missing, nothing else), the consumer never restarted, and its longest stall
(tests/progress.py) is reported in the run's summary.

The module's stack is up and down before the session's single-broker one starts (this file
sorts before the others that use it), so the two never share CI's two cores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from kafka.admin import ConfigResource
from kafka.errors import KafkaError

from deploy.compose import CLUSTER_FILE, COMPOSE_FILE, REPO_ROOT, Project
from producer.generator import DEFAULT_START
from tests.compose.conftest import (
    MEASUREMENTS,
    PROJECT_NAME,
    TIMINGS,
    host_producer_env,
    kafka_user,
    running_project,
    wait_until,
)
from tests.progress import PRODUCER_SUMMARY, ROWS_PER_PARTITION, ProgressMonitor
from tests.support import generated
from utils.config import KafkaSettings, Settings, load_settings
from utils.errors import TxmonError
from utils.kafka_cleanup import PartitionInfo, admin_client, describe_topic, topic_configs

# The first test's setup may build every image (see test_stack.py).
pytestmark = pytest.mark.timeout(1800)

CLUSTER_PROJECT = f"{PROJECT_NAME}-cluster"
SERVICES = ("zookeeper", "kafka", "kafka-2", "kafka-3", "kafka-init", "postgres", "consumer")
BROKER_SERVICE = {0: "kafka", 1: "kafka-2", 2: "kafka-3"}  # KAFKA_BROKER_ID -> service
REPLICATION, MIN_INSYNC = 3, 2
SEED = 20_261_206
COUNT = 120_000  # the producer's budget: more than it sends before it is stopped (~25k)
RATE = 300  # transactions/s offered: ~50 per partition per second
BEFORE_KILL = 3_000  # stored before the kill: the consumer has joined and is keeping up
DOWN_S = 3.0  # how long the killed broker's container stays down
AFTER_S = 5.0  # traffic after the replicas are back in sync, before the producer stops
# A restarted broker's start (a JVM, log recovery after SIGKILL, TLS) and its catching up took
# 75 s on a quiet 2-core machine and 122 s at a load of 30.
IN_SYNC_TIMEOUT_S = 300.0
# A stall beyond this is a failure, not a figure: a leader election takes the dead broker's
# ZooKeeper session (6 s) plus the clients' metadata refresh; 60 s would mean something wedged.
STALL_BOUND_S = 60.0


@pytest.fixture(scope="module")
def cluster(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with running_project(
        CLUSTER_PROJECT,
        tmp_path_factory.mktemp("compose-cluster"),
        files=(COMPOSE_FILE, CLUSTER_FILE),
        services=SERVICES,
        label="cluster: ",
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def settings(cluster: Project) -> Settings:
    """The cluster's settings as the host-side producer reads them; PostgreSQL as the host
    reaches it: the published port, TLS checked against the stack's CA (verify-full)."""
    s = load_settings(dotenv_path=cluster.env_file)
    pg = dataclasses.replace(
        s.postgres,
        host="127.0.0.1",
        port=cluster.host_port("POSTGRES_HOST_PORT"),
        sslmode="verify-full",
        sslrootcert=str(cluster.ca_path()),
    )
    return dataclasses.replace(s, postgres=pg)


@pytest.fixture(scope="module")
def admin(cluster: Project) -> KafkaSettings:
    return kafka_user(cluster, "admin")


def partitions(admin: KafkaSettings, topics: list[str]) -> list[PartitionInfo]:
    """The topics' partitions as the cluster describes them now (a fresh client: one broker
    may be down, and a long-lived client may still be waiting on it)."""
    with contextlib.closing(admin_client(admin, timeout_s=30)) as client:
        return [p for topic in topics for p in describe_topic(client, topic)]


def all_in_sync(admin: KafkaSettings, topics: list[str]) -> bool:
    """Every partition of `topics` led and with all replicas in sync. False, not an error, while
    a restarting broker's published port takes connections it cannot serve yet."""
    try:
        found = partitions(admin, topics)
    except (KafkaError, TxmonError, OSError):
        return False
    return all(p.leader >= 0 and len(p.isr) == REPLICATION for p in found)


def deploy_kafka_env(project: Project) -> dict[str, str]:
    """What `python -m deploy --cluster kafka-env` exports for the producer (docs/scaling.md)."""
    result = subprocess.run(
        [
            sys.executable, "-m", "deploy", "--cluster", "--project-name", project.name,
            "--env-file", str(project.env_file), "kafka-env",
        ],
        cwd=REPO_ROOT, env=dict(project.environ), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    pairs = [shlex.split(line)[1].split("=", 1) for line in result.stdout.splitlines()]
    return {name: value for name, value in pairs}


def container(project: Project, service: str) -> str:
    return project.run("ps", "--all", "--quiet", service, capture=True).stdout.strip()


def broker_report(project: Project, lines: int = 25) -> str:
    """The containers' states and the end of each broker's log."""
    logs = project.run(
        "logs", "--no-color", "--tail", str(lines), *BROKER_SERVICE.values(), capture=True, check=False
    )
    return f"{project.ps()}\n{logs.stdout}{logs.stderr}"


def consumer_report(project: Project, lines: int = 300) -> str:
    """The consumer's log across its restarts (a container's log keeps every run's): the
    traceback or the exit that made the engine restart it."""
    logs = project.run("logs", "--no-color", "--tail", str(lines), "consumer", capture=True, check=False)
    return f"{logs.stdout}{logs.stderr}"


def docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def test_brokers_report_three_replicas_and_min_insync_two(
    cluster: Project, admin: KafkaSettings, settings: Settings
) -> None:
    topics = [settings.kafka.topic, settings.kafka.dlq_topic, "__consumer_offsets"]
    # The offsets topic exists once the consumer has looked up its group's coordinator.
    wait_until(lambda: all_in_sync(admin, topics), 180, "the consumer's offsets topic, all replicas in sync")
    with contextlib.closing(admin_client(admin, timeout_s=30)) as client:
        brokers = sorted(b["broker_id"] for b in client.describe_cluster()["brokers"])
        assert brokers == sorted(BROKER_SERVICE), brokers
        for topic in topics:
            parts = describe_topic(client, topic)
            assert parts, topic
            for p in parts:
                assert sorted(p.replicas) == brokers and sorted(p.isr) == brokers, (topic, p)
            # The value the brokers apply, whether the topic sets it (ours, kafka-init) or the
            # broker's default does (the internal offsets topic).
            found = client.describe_configs(
                [ConfigResource("TOPIC", topic, configs={"min.insync.replicas": None})], config_filter="all"
            )["topic"][topic]["min.insync.replicas"]["value"]
            assert found == str(MIN_INSYNC), (topic, found)
        assert topic_configs(client, settings.kafka.topic)["min.insync.replicas"] == str(MIN_INSYNC)


def test_partition_leader_killed_mid_stream_loses_and_doubles_nothing(
    cluster: Project, admin: KafkaSettings, settings: Settings, tmp_path: Path
) -> None:
    topic = settings.kafka.topic
    conn = psycopg2.connect(settings.postgres.dsn())
    conn.autocommit = True

    def stored_per_partition() -> dict[int, int]:
        with conn.cursor() as cur:
            cur.execute(ROWS_PER_PARTITION)
            return {int(p): int(n) for p, n in cur.fetchall()}

    consumer_id = container(cluster, "consumer")
    restarts_before = int(docker("inspect", "--format", "{{.RestartCount}}", consumer_id))
    monitor = ProgressMonitor(stored_per_partition)
    # The producer's credentials as a user gets them: every broker to bootstrap from, its user.
    kafka_env = deploy_kafka_env(cluster)
    assert kafka_env == cluster.kafka_client_env("producer"), kafka_env
    assert len(kafka_env["KAFKA_BOOTSTRAP_SERVERS"].split(",")) == REPLICATION, kafka_env
    plog = tmp_path / "producer.log"
    with open(plog, "wb") as out:
        producer = subprocess.Popen(
            [
                sys.executable, "producer/transaction_producer.py",
                "--count", str(COUNT), "--seed", str(SEED), "--rate", str(RATE),
                "--clock", "simulated", "--start", DEFAULT_START.isoformat(),
            ],
            cwd=REPO_ROOT, env={**host_producer_env(cluster), **kafka_env}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        monitor.start()
        stream_start = time.monotonic()
        wait_until(
            lambda: sum(stored_per_partition().values()) >= BEFORE_KILL or producer.poll() is not None,
            180,
            f"{BEFORE_KILL} transactions stored",
        )
        assert producer.poll() is None, f"the producer ended early:\n{plog.read_text()[-3000:]}"

        # The leader of partition 0: its container dies without a controlled shutdown.
        leaders = {p.partition: p.leader for p in partitions(admin, [topic])}
        victim = leaders[0]
        led = sorted(p for p, b in leaders.items() if b == victim)
        victim_id = container(cluster, BROKER_SERVICE[victim])
        killed_at = time.monotonic()
        docker("kill", "--signal", "KILL", victim_id)
        time.sleep(DOWN_S)
        docker("start", victim_id)
        started_at = time.monotonic()
        topics = [topic, settings.kafka.dlq_topic, "__consumer_offsets"]
        deadline = time.monotonic() + IN_SYNC_TIMEOUT_S
        while not all_in_sync(admin, topics):
            # What a CI log needs to tell a broker that never came back from a slow one.
            assert time.monotonic() < deadline, (
                f"broker {victim} ({BROKER_SERVICE[victim]}) restarted, but the replicas were not all "
                f"back in sync after {IN_SYNC_TIMEOUT_S:.0f}s:\n{broker_report(cluster)}"
            )
            time.sleep(2.0)
        in_sync_at = time.monotonic()
        time.sleep(AFTER_S)

        assert producer.poll() is None, (
            f"the producer ended before it was stopped:\n{plog.read_text()[-3000:]}"
        )
        producer.send_signal(signal.SIGTERM)
        rc = producer.wait(120)
        stream_end = time.monotonic()
    finally:
        monitor.stopped.set()  # the stack goes down at the module's end: no sampling after that
        if producer.poll() is None:
            producer.kill()
            producer.wait(30)
    text = plog.read_text(errors="replace")
    summary = PRODUCER_SUMMARY.findall(text)
    assert summary, f"no producer summary (exit {rc}):\n{text[-3000:]}"
    sent, acked, failed, unconfirmed = map(int, summary[-1])
    # Two of three replicas stayed in sync throughout: no send may fail.
    assert rc == 0 and failed == 0 and unconfirmed == 0 and acked == sent, (
        f"exit {rc} sent={sent} acked={acked} failed={failed} unconfirmed={unconfirmed}\n{text[-3000:]}"
    )
    acked_ids = [t["transaction_id"] for t in generated(settings, COUNT, SEED)[:acked]]

    wait_until(
        lambda: sum(stored_per_partition().values()) >= acked,
        180,
        f"the {acked} acknowledged transactions stored",
    )
    time.sleep(2.0)  # a duplicate would arrive after the count was reached: give it the time
    monitor.join(10)

    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE acked (id text PRIMARY KEY)")
        cur.copy_from(io.StringIO("\n".join(acked_ids) + "\n"), "acked", columns=("id",))
        cur.execute(
            """
            SELECT (SELECT count(*) FROM transactions),
                   (SELECT count(DISTINCT transaction_id) FROM transactions),
                   (SELECT count(*) FROM acked a
                     WHERE NOT EXISTS (SELECT FROM transactions t WHERE t.transaction_id = a.id)),
                   (SELECT count(*) FROM transactions t
                     WHERE NOT EXISTS (SELECT FROM acked a WHERE a.id = t.transaction_id)),
                   (SELECT count(*) FROM rejected_transactions)
            """
        )
        rows, distinct, missing, unexpected, rejected = cur.fetchone()
    conn.close()
    restarts = int(docker("inspect", "--format", "{{.RestartCount}}", consumer_id)) - restarts_before

    before, _ = monitor.longest_stall(stream_start + 5.0, killed_at)
    stall, part = monitor.longest_stall(killed_at, stream_end)
    figures: dict[str, Any] = {
        "killed": f"broker {victim} ({BROKER_SERVICE[victim]}, led partitions {led})",
        "down+restart": f"{started_at - killed_at:.1f}s",
        "replicas in sync": f"{in_sync_at - started_at:.1f}s after the start",
        "producer": f"sent={sent} acked={acked}",
        "stored": f"{rows} rows, {distinct} distinct, {missing} missing, {unexpected} never acked",
    }
    MEASUREMENTS.append(
        "Compose cluster, partition leader SIGKILLed mid-stream: "
        + "; ".join(f"{k} {v}" for k, v in figures.items())
        + f"; consumer's longest stall {stall:.1f}s (partition {part}; {before:.1f}s before the kill)"
    )
    TIMINGS["cluster: stream, kill, restart, in sync"] = stream_end - stream_start
    print(MEASUREMENTS[-1])

    assert (rows, distinct, missing, unexpected) == (acked, acked, 0, 0), figures
    assert rejected == 0, f"{rejected} transactions rejected"
    assert restarts == 0, f"the consumer container restarted {restarts} times:\n{consumer_report(cluster)}"
    assert stall < STALL_BOUND_S, f"partition {part} stalled {stall:.1f}s"
