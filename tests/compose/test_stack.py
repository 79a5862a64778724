"""docker compose up, for real: the whole stack under a Docker engine, driven from the host.

What a user does and sees, in order (the tests share one stack and run top to bottom): the
producer service's traffic lands in PostgreSQL; a batch produced from the host through the
published Kafka port is stored exactly; three consumers share the partitions; Airflow is
healthy and its DAGs run green and write to ./airflow-data; the reporting run's note links its
report, which the API server serves to a signed-in user only; Prometheus scrapes the producer,
has found every consumer and loaded the alerting rules; the consumers drain on `docker compose
stop`; `down` then `up` keeps the data.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from deploy.compose import REPO_ROOT, Project
from producer.generator import DEFAULT_START, AccountPool, TransactionGenerator
from tests.compose.airflow_api import AirflowAPI
from tests.compose.conftest import MEASUREMENTS, wait_until
from tests.compose.prometheus_api import PrometheusAPI
from utils.config import Settings, load_settings

Psql = Callable[[str], list[list[str]]]

# The first test's setup builds every image on a fresh machine (several minutes); the
# project-wide 600 s per test would count that against it.
pytestmark = pytest.mark.timeout(1800)

# Every field of a message is stored as sent; these two are compared by value: the amount
# (numeric vs float, as decimals) and the timestamp (text vs timestamptz, as datetimes).
COMPARED_BY_VALUE = {"amount", "timestamp"}
HOST_BATCH = (3_000, 20_261_128)  # (count, seed)
DRAIN_BATCH = (60_000, 20_261_129)
# Batches from the host run the simulated clock from a fixed start: a seed and a start give the
# same transactions byte for byte, so the test knows exactly what was sent. (The producer's
# default wall clock scales the account pool to its rate, and continues after the topic's
# latest event, so its stream is not a function of the seed alone.)
SIMULATED_START = DEFAULT_START


@pytest.fixture(scope="module")
def settings(project: Project) -> Settings:
    """The stack's settings as the host-side producer reads them (env file, process env wins)."""
    return load_settings(dotenv_path=project.env_file)


def expected_batch(settings: Settings, count: int, seed: int) -> list[dict[str, Any]]:
    ps = settings.producer
    pool = AccountPool.create(ps.accounts, ps.account_seed)
    return TransactionGenerator(
        seed, pool, ps.fraud_rate, clock="simulated", start=SIMULATED_START
    ).next_batch(count)


def with_ids(ids: Iterable[str], query: str) -> str:
    """`query` run after loading `ids` into a temporary table `ids(id)` (COPY, not a literal list)."""
    rows = "\n".join(ids)
    return f"CREATE TEMP TABLE ids (id text PRIMARY KEY);\nCOPY ids FROM STDIN;\n{rows}\n\\.\n{query}\n"


def stored_count(psql: Psql, ids: list[str]) -> int:
    return int(
        psql(with_ids(ids, "SELECT count(*) FROM transactions t JOIN ids ON ids.id = t.transaction_id;"))[0][
            0
        ]
    )


def start_host_producer(host_producer: Callable[..., Any], count: int, seed: int) -> Any:
    """The batch `expected_batch(settings, count, seed)`, sent from the host as fast as it goes."""
    return host_producer(
        *("--count", str(count), "--seed", str(seed), "--rate", "0"),
        *("--clock", "simulated", "--start", SIMULATED_START.isoformat()),
    )


def run_host_producer(host_producer: Callable[..., Any], count: int, seed: int) -> None:
    proc = start_host_producer(host_producer, count, seed)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output


def consumer_group(kafka_client: dict[str, Any], group: str) -> dict[str, Any]:
    admin = KafkaAdminClient(**kafka_client, client_id="txmon-compose-test")
    try:
        return dict(admin.describe_groups([group])[group])
    finally:
        admin.close()


def lag(kafka_client: dict[str, Any], topic: str, group: str) -> int:
    admin = KafkaAdminClient(**kafka_client, client_id="txmon-compose-test")
    consumer = KafkaConsumer(**kafka_client, client_id="txmon-compose-test")
    try:
        committed = admin.list_group_offsets({group: None})[group]
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(partitions)
        return sum(end - (committed[tp].offset if tp in committed else 0) for tp, end in ends.items())
    finally:
        consumer.close()
        admin.close()


# --- the pipeline ---------------------------------------------------------------------------------


def test_producer_service_traffic_is_stored_and_rarely_alerts(psql: Psql, settings: Settings) -> None:
    """The producer service's default traffic reaches the database as the app role; the share
    of transactions without a fraud label that raise an alert is measured and stays low."""
    total = wait_until(
        lambda: (n := int(psql("SELECT count(*) FROM transactions;")[0][0])) >= 600 and n,
        timeout_s=240,
        what="600 transactions from the producer service in PostgreSQL",
    )
    ((unlabelled, unlabelled_alerted, labelled, labelled_alerted),) = psql(
        """
        SELECT count(*) FILTER (WHERE simulated_scenario IS NULL),
               count(*) FILTER (WHERE simulated_scenario IS NULL AND alerted),
               count(*) FILTER (WHERE simulated_scenario IS NOT NULL),
               count(*) FILTER (WHERE simulated_scenario IS NOT NULL AND alerted)
          FROM (SELECT t.simulated_scenario,
                       EXISTS (SELECT FROM alerts a WHERE a.transaction_id = t.transaction_id) AS alerted
                  FROM transactions t) s;
        """
    )
    share = int(unlabelled_alerted) / int(unlabelled)
    MEASUREMENTS.append(
        f"producer service at PRODUCER_RATE={settings.producer.rate:g}/s over "
        f"{settings.producer.accounts} accounts: {total} transactions, alerts on "
        f"{unlabelled_alerted}/{unlabelled} without a fraud label ({share:.2%}) and on "
        f"{labelled_alerted}/{labelled} labelled fraud"
    )
    assert share < 0.05, "the Compose defaults flood ordinary traffic with alerts"


def test_batch_produced_from_the_host_is_stored_exactly(
    psql: Psql, host_producer: Callable[..., Any], settings: Settings
) -> None:
    count, seed = HOST_BATCH
    run_host_producer(host_producer, count, seed)
    expected = {txn["transaction_id"]: txn for txn in expected_batch(settings, count, seed)}
    ids = list(expected)
    wait_until(
        lambda: stored_count(psql, ids) == count, 120, f"all {count} host-produced transactions stored"
    )

    rows = psql(
        with_ids(ids, "SELECT row_to_json(t) FROM transactions t JOIN ids ON ids.id = t.transaction_id;")
    )
    stored = {row["transaction_id"]: row for row in (json.loads(r[0]) for r in rows)}
    assert stored.keys() == expected.keys()
    for transaction_id, sent in expected.items():
        row = stored[transaction_id]
        as_sent = {f: v for f, v in sent.items() if f not in COMPARED_BY_VALUE}
        assert {f: row.get(f) for f in as_sent} == as_sent, transaction_id
        assert Decimal(str(row["amount"])) == Decimal(str(sent["amount"])), transaction_id
        assert datetime.fromisoformat(row["timestamp"]) == datetime.fromisoformat(sent["timestamp"])
    rejected = psql(
        with_ids(ids, "SELECT count(*) FROM rejected_transactions r JOIN ids ON ids.id = r.transaction_id;")
    )
    assert rejected == [["0"]]


def test_three_consumers_share_the_partitions(
    project: Project, kafka_client: dict[str, Any], settings: Settings
) -> None:
    project.up("consumer", extra=["--scale", "consumer=3", "--no-recreate"])
    group, topic = settings.kafka.consumer_group, settings.kafka.topic

    def settled() -> dict[str, Any] | None:
        info = consumer_group(kafka_client, group)
        members = info.get("members") or []
        return info if info.get("group_state") == "Stable" and len(members) == 3 else None

    info = wait_until(settled, 120, "a stable group of three consumers")
    assignments = []
    for member in info["members"]:
        partitions = [
            p
            for assigned in member["member_assignment"]["assigned_partitions"]
            if assigned["topic"] == topic
            for p in assigned["partitions"]
        ]
        assert partitions, f"{member['client_host']} got no partition"
        assignments.append(partitions)
    flat = sorted(p for partitions in assignments for p in partitions)
    assert flat == list(range(settings.kafka.topic_partitions)), assignments
    MEASUREMENTS.append(f"three consumers, partitions {assignments}")


# --- Airflow --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def airflow(project: Project, variables: dict[str, str]) -> AirflowAPI:
    return AirflowAPI(
        f"http://127.0.0.1:{project.host_port('AIRFLOW_HOST_PORT')}",
        variables["AIRFLOW_ADMIN_USERNAME"],
        variables["AIRFLOW_ADMIN_PASSWORD"],
    )


def test_airflow_api_reports_every_component_healthy(airflow: AirflowAPI) -> None:
    health = airflow.health()
    components = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    assert {c: health[c]["status"] for c in components} == dict.fromkeys(components, "healthy"), health


def _newest_mtime(directory: Path) -> float:
    files = [p for p in directory.rglob("*") if p.is_file()] if directory.is_dir() else []
    return max((p.stat().st_mtime for p in files), default=0.0)


@dataclasses.dataclass(frozen=True)
class GreenRuns:
    day: date
    triggered_at: float
    run_ids: dict[str, str]


@pytest.fixture(scope="module")
def green_runs(airflow: AirflowAPI) -> GreenRuns:
    """Today's report and a monitoring run, triggered through the REST API and finished green."""
    day = datetime.now(UTC).date()
    triggered_at = time.time()
    runs = {
        "transaction_reporting": airflow.trigger("transaction_reporting", {"day": day.isoformat()}),
        "system_monitoring": airflow.trigger("system_monitoring"),
    }
    for dag_id, run_id in runs.items():
        assert airflow.wait_for_run(dag_id, run_id, timeout_s=420) == "success", dag_id
    return GreenRuns(day, triggered_at, runs)


def test_reporting_and_monitoring_dags_run_green_and_write_to_airflow_data(green_runs: GreenRuns) -> None:
    data_dir = REPO_ROOT / "airflow-data"
    # Written by the containers (as AIRFLOW_UID) into the bind-mounted ./airflow-data.
    report = data_dir / "reports" / green_runs.day.isoformat() / "report.html"
    assert report.is_file() and report.stat().st_mtime >= green_runs.triggered_at - 1, report
    assert _newest_mtime(data_dir / "metrics" / green_runs.day.isoformat()) >= green_runs.triggered_at - 1


def test_reporting_runs_note_links_its_report_served_to_signed_in_users(
    airflow: AirflowAPI, green_runs: GreenRuns
) -> None:
    """plugins/ in the containers: the scheduler's listener notes the run with its report's
    link, the API server serves that link (the file the task wrote, byte for byte) and the list
    of reports behind the Reports menu entry, and sends a signed-out visitor to the login."""
    day = green_runs.day.isoformat()
    run_id = green_runs.run_ids["transaction_reporting"]

    def linked_note() -> str | None:
        note = airflow.run("transaction_reporting", run_id).get("note") or ""
        return note if "](/txmon/reports/" in note else None

    note = wait_until(linked_note, 60, "the reporting run's note with its report link")
    assert note.startswith(f"**Report for {day}**"), note
    link = re.search(r"\]\((/txmon/reports/[^)]+)\)", note)
    assert link and link.group(1) == f"/txmon/reports/{day}/report.html", note

    status, headers, body = airflow.fetch(link.group(1))
    assert status == 200 and headers["content-type"].startswith("text/html"), (status, body[:500])
    assert body == (REPO_ROOT / "airflow-data" / "reports" / day / "report.html").read_bytes()
    status, _, index = airflow.fetch("/txmon/reports/")
    assert status == 200 and f'href="{day}/report.html"'.encode() in index, index[:2000]
    (txmon,) = [p for p in airflow.plugins() if p["name"] == "txmon"]
    assert [(v["name"], v["href"]) for v in txmon["external_views"]] == [("Reports", "/txmon/reports/")]

    status, headers, _ = airflow.fetch(link.group(1), signed_in=False)
    assert 300 <= status < 400 and "/auth/login" in headers["location"], (status, headers)


# --- Prometheus -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(project: Project) -> PrometheusAPI:
    return PrometheusAPI(f"http://127.0.0.1:{project.host_port('PROMETHEUS_HOST_PORT')}")


def test_prometheus_scrapes_the_producer_and_its_sent_counter_grows(prometheus: PrometheusAPI) -> None:
    assert "<title>Prometheus Time Series Collection and Processing Server</title>" in prometheus.front_page()

    def scraped() -> list[float] | None:
        (target,) = prometheus.targets("txmon-producer")
        sent = prometheus.samples("txmon_producer_messages_sent_total")
        return sent if target["health"] == "up" and len(sent) >= 2 else None

    sent = wait_until(scraped, 90, "two scrapes of the producer service's metrics", interval_s=3)
    assert sent == sorted(sent) and sent[-1] > sent[0], sent
    MEASUREMENTS.append(f"Prometheus: producer sent {sent[0]:.0f} -> {sent[-1]:.0f} over {len(sent)} scrapes")


def test_prometheus_loaded_every_alerting_rule(prometheus: PrometheusAPI) -> None:
    rules = yaml.safe_load((REPO_ROOT / "docker" / "prometheus" / "alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}

    def evaluated() -> dict[str, str] | None:
        found = prometheus.alerting_rules()
        return found if found and set(found.values()) == {"ok"} else None

    loaded = wait_until(evaluated, 60, "every alerting rule loaded and evaluated", interval_s=3)
    assert set(loaded) == names


def test_prometheus_discovers_every_consumer_replica(project: Project, prometheus: PrometheusAPI) -> None:
    """Through the Compose network's DNS, one target per replica (three since the scale test),
    each up (serving its metrics on CONSUMER_METRICS_PORT)."""
    ids = project.run("ps", "--quiet", "consumer", capture=True).stdout.split()
    inspected = subprocess.run(
        ["docker", "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", *ids],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    expected = {f"{ip}:9102" for ip in inspected}
    assert len(expected) == len(ids) == 3, inspected

    def scraped() -> list[dict[str, Any]] | None:
        targets = prometheus.targets("txmon-consumer")
        found = {t["discoveredLabels"]["__address__"] for t in targets}
        return targets if found == expected and all(t["health"] == "up" for t in targets) else None

    targets = wait_until(scraped, 90, f"Prometheus to scrape the consumers at {sorted(expected)}", 3)
    MEASUREMENTS.append(
        "Prometheus: consumer targets "
        + ", ".join(f"{t['scrapeUrl']} {t['health']} {t['lastError']!r}" for t in targets)
    )


# --- stopping and starting ------------------------------------------------------------------------


def test_consumers_drain_on_compose_stop(
    project: Project,
    psql: Psql,
    host_producer: Callable[..., Any],
    settings: Settings,
    kafka_client: dict[str, Any],
) -> None:
    """SIGTERM from `docker compose stop` in the middle of a backlog: each consumer finishes the
    batch in hand, commits it and exits 0; what is stored is exactly what is committed."""
    group, topic = settings.kafka.consumer_group, settings.kafka.topic
    project.run("stop", "producer")
    count, seed = DRAIN_BATCH
    ids = [txn["transaction_id"] for txn in expected_batch(settings, count, seed)]
    baseline = int(psql("SELECT count(*) FROM transactions;")[0][0])
    proc = start_host_producer(host_producer, count, seed)
    try:
        wait_until(
            lambda: int(psql("SELECT count(*) FROM transactions;")[0][0]) > baseline,
            60,
            "the consumers to start on the backlog",
            interval_s=0.2,
        )
        stop_started = time.monotonic()
        project.run("stop", "consumer")
        stop_s = time.monotonic() - stop_started
    finally:
        output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output

    states = project.run(
        "ps", "--all", "--format", "{{.Name}} {{.State}} {{.ExitCode}}", "consumer", capture=True
    ).stdout
    containers = [line.split() for line in states.splitlines() if line.strip()]
    # Exit 0, not 137: each finished before the grace period ran out and Docker's SIGKILL.
    assert containers and all(state == "exited" and code == "0" for _, state, code in containers), states
    logs = project.run("logs", "--no-color", "consumer", capture=True).stdout
    assert logs.count("SIGTERM received: finishing the current batch") == len(containers), logs[-3000:]
    assert logs.count("consumer summary:") == len(containers), logs[-3000:]

    pending_at_stop = count - stored_count(psql, ids)
    assert pending_at_stop > 0, "the backlog was gone before the stop: nothing was drained mid-stream"
    # Offsets are contiguous per partition (no transactions in this producer), so "stored is
    # exactly committed" means: the stored offsets of partition p are 0 .. committed(p) - 1.
    admin = KafkaAdminClient(**kafka_client, client_id="txmon-compose-test")
    try:
        committed = {
            tp.partition: om.offset for tp, om in admin.list_group_offsets({group: None})[group].items()
        }
    finally:
        admin.close()
    # The consumers read one topic, so every stored (or refused) row came from it.
    stored = {
        int(p): (int(n), int(top))
        for p, n, top in psql(
            """
            SELECT kafka_partition, count(DISTINCT kafka_offset), max(kafka_offset) + 1
              FROM (SELECT kafka_partition, kafka_offset FROM transactions
                    UNION ALL
                    SELECT kafka_partition, kafka_offset FROM rejected_transactions) s
             GROUP BY kafka_partition;
            """
        )
    }
    assert stored == {p: (c, c) for p, c in committed.items()}
    MEASUREMENTS.append(
        f"drain: `docker compose stop consumer` took {stop_s:.1f}s with {pending_at_stop} of {count} pending; "
        f"stored offsets == committed offsets {committed}"
    )

    project.run("start", "consumer")
    wait_until(lambda: stored_count(psql, ids) == count, 300, f"the rest of the {count} after the restart")
    wait_until(lambda: lag(kafka_client, topic, group) == 0, 120, "no consumer lag")


def test_down_then_up_keeps_the_data(
    project: Project, psql: Psql, settings: Settings, airflow: AirflowAPI
) -> None:
    before = int(psql("SELECT count(*) FROM transactions;")[0][0])
    manual_runs = airflow.runs("transaction_reporting", run_type="manual")
    assert manual_runs
    count, seed = HOST_BATCH
    host_ids = [txn["transaction_id"] for txn in expected_batch(settings, count, seed)]
    project.down()
    up_s = project.up()
    MEASUREMENTS.append(f"`up` after `down` (images built, volumes kept): healthy in {up_s:.0f}s")
    assert int(psql("SELECT count(*) FROM transactions;")[0][0]) >= before
    assert stored_count(psql, host_ids) == count
    assert airflow.runs("transaction_reporting", run_type="manual") == manual_runs
    # And the pipeline carries on where it stopped.
    wait_until(
        lambda: int(psql("SELECT count(*) FROM transactions;")[0][0]) > before,
        120,
        "new transactions from the restarted producer service",
    )
