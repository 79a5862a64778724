"""Each DAG run end to end with `dag.test()` against the real PostgreSQL and Kafka of the test stack,
after a seeded stream went through the real producer and consumer.

Airflow's own metadata lives in a throw-away SQLite home (migrated once per module); the
project's settings reach the tasks as environment variables, as they do in Compose.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"


import psycopg2  # noqa: E402
import pytest  # noqa: E402

from producer.generator import DEFAULT_START  # noqa: E402
from producer.transaction_producer import run_producer  # noqa: E402
from stack.orchestrator import LocalStack  # noqa: E402
from tests.dags.isolation import keep_logging  # noqa: E402
from tests.support import consume, produce, query  # noqa: E402
from utils import schema  # noqa: E402
from utils.config import Settings, settings_to_env  # noqa: E402

SEEDED_DAY = DEFAULT_START.date()  # the simulated clock's stream falls on 2026-01-01 (UTC)


@pytest.fixture(scope="module")
def dagbag() -> Iterator[Any]:
    restore = keep_logging()
    from airflow.dag_processing.dagbag import DagBag

    # Airflow's metadata schema, once for the module (~6 s on SQLite).
    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-3000:]
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    yield bag
    restore()


@pytest.fixture
def task_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Give the tasks a project configuration through the environment, as Compose does."""

    def apply(settings: Settings, **extra: str) -> None:
        for key, value in {**settings_to_env(settings), **extra}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("TXMON_ENV_FILE", os.devnull)  # a developer's .env must not leak in

    return apply


def _session() -> Any:
    from airflow import settings as airflow_settings

    assert airflow_settings.Session is not None, "airflow did not configure its ORM"
    return airflow_settings.Session()


def _notes(dag_id: str, run_id: str) -> tuple[str | None, dict[str, str | None]]:
    """The run's note and its task instances' notes, as the grid shows them."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance

    session = _session()
    try:
        run = session.query(DagRun).filter_by(dag_id=dag_id, run_id=run_id).one()
        tis = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id).all()
        return run.note, {ti.task_id: ti.note for ti in tis}
    finally:
        session.close()


def _paused(dag_id: str) -> bool:
    from airflow.models.dag import DagModel

    session = _session()
    try:
        return bool(session.query(DagModel.is_paused).filter_by(dag_id=dag_id).scalar())
    finally:
        session.close()


def _execute(pg: Any, statement: str) -> None:
    conn = psycopg2.connect(pg.dsn(migration=True))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def _task_states(dag_id: str, run_id: str) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance

    session = _session()
    try:
        rows = session.query(TaskInstance.task_id, TaskInstance.state).filter_by(dag_id=dag_id, run_id=run_id)
        return {task_id: str(state) for task_id, state in rows}
    finally:
        session.close()


def test_reporting_then_cleanup(
    dagbag: Any, pipeline_settings: Settings, task_env: Callable[..., None], tmp_path: Path
) -> None:
    s = dataclasses.replace(pipeline_settings, data_dir=str(tmp_path / "airflow-data"))
    produce(s, 3000, seed=23, start=DEFAULT_START)
    assert consume(s).stored == 3000
    task_env(s)

    # The run whose data interval is 2026-01-01 (a manual run during 2 January covers 1 January).
    run = dagbag.dags["transaction_reporting"].test(logical_date=datetime(2026, 1, 2, 6, tzinfo=UTC))
    assert str(run.state) == "success", _task_states("transaction_reporting", run.run_id)
    report = Path(s.data_dir) / "reports" / SEEDED_DAY.isoformat()
    assert sorted(p.name for p in report.iterdir()) == [
        "alerts.csv",
        "figures.json",
        "report.html",
        "summary.csv",
    ]
    assert (report / "report.html").read_text().count("<svg") == 3
    # The run says which day it reported and links the report, in the grid.
    note, ti_notes = _notes("transaction_reporting", run.run_id)
    assert note is not None and note.startswith("**Report for 2026-01-01** (possibly incomplete): ")
    assert "[Open the report](/txmon/reports/2026-01-01/report.html)" in note
    assert ti_notes["report"] == note

    by_type = query(
        s.postgres,
        """SELECT transaction_type, count(*), sum(amount) FROM transactions
           WHERE ("timestamp" AT TIME ZONE 'UTC')::date = %s GROUP BY 1""",
        (SEEDED_DAY,),
    )
    summary = query(
        s.postgres,
        "SELECT key, txn_count, amount_sum FROM daily_summary WHERE day = %s AND dimension = 'transaction_type'",
        (SEEDED_DAY,),
    )
    assert sorted(summary) == sorted(by_type)
    alerts = query(
        s.postgres,
        """SELECT a.alert_type, count(*) FROM alerts a JOIN transactions t USING (transaction_id)
           WHERE (t."timestamp" AT TIME ZONE 'UTC')::date = %s GROUP BY 1""",
        (SEEDED_DAY,),
    )
    quality = dict(
        query(s.postgres, "SELECT alert_type, alerts FROM rule_quality WHERE day = %s", (SEEDED_DAY,))
    )
    assert {k: v for k, v in quality.items() if v} == dict(alerts)
    assert json.loads((report / "figures.json").read_text())["day"] == "2026-01-01"

    # Cleanup starts paused: Airflow registered it paused although new DAGs start unpaused here.
    assert _paused("data_cleanup") and not _paused("transaction_reporting")

    # Enabled (dag.test runs it as a person's trigger would), with RETENTION_DAYS=90: the stream's
    # events are from January, but it was processed today, so nothing goes (the processing
    # day's reconciliation keeps every offset).
    recent = Path(s.data_dir) / "metrics" / datetime.now(UTC).date().isoformat()
    recent.mkdir(parents=True)
    ninety = dataclasses.replace(
        s, retention_days=90, validation=dataclasses.replace(s.validation, max_age_days=90)
    )
    task_env(ninety)
    schema.set_retention_days(s.postgres, 90)  # the owner's policy (db-migrate in Compose)
    stored = query(s.postgres, "SELECT count(*) FROM transactions")[0][0]
    run = dagbag.dags["data_cleanup"].test()
    assert str(run.state) == "success", _task_states("data_cleanup", run.run_id)
    assert query(s.postgres, "SELECT count(*) FROM transactions")[0][0] == stored
    assert not report.exists() and recent.exists()  # the January report directory is expired

    # Once processed more than 90 days ago as well, the rows go, their alerts with them.
    _execute(s.postgres, "UPDATE transactions SET processed_at = processed_at - interval '100 days'")
    run = dagbag.dags["data_cleanup"].test()
    assert str(run.state) == "success", _task_states("data_cleanup", run.run_id)
    assert query(s.postgres, "SELECT count(*) FROM transactions")[0][0] == 0
    assert query(s.postgres, "SELECT count(*) FROM alerts")[0][0] == 0
    assert query(s.postgres, "SELECT count(*) FROM daily_summary WHERE day = %s", (SEEDED_DAY,))[0][0] > 0


def test_monitoring_is_green_when_healthy_and_red_on_lag(
    dagbag: Any,
    pipeline_settings: Settings,
    test_stack: LocalStack,
    task_env: Callable[..., None],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = dataclasses.replace(pipeline_settings, data_dir=str(tmp_path / "airflow-data"))
    # The wall clock, so that the end-to-end delay is real.
    summary = run_producer(s, count=1000, seed=31, clock="wall", progress_seconds=60)
    assert summary.acked == 1000
    assert consume(s).stored == 1000
    zookeeper = (
        {"ZOOKEEPER_HOST": "127.0.0.1", "ZOOKEEPER_PORT": str(test_stack.ports["zookeeper"])}
        if test_stack.is_local("zookeeper")
        else {}
    )
    task_env(s, MONITOR_MAX_LAG="50", MONITOR_MAX_DELAY_P95_SECONDS="120", **zookeeper)
    dag = dagbag.dags["system_monitoring"]

    healthy = dag.test()
    states = _task_states("system_monitoring", healthy.run_id)
    assert str(healthy.state) == "success", states
    metrics = {
        (m, json.dumps(labels, sort_keys=True)): v
        for m, labels, v in query(s.postgres, "SELECT metric, labels, value FROM pipeline_metrics")
    }
    names = {m for m, _ in metrics}
    assert {
        "kafka_consumer_lag_total",
        "e2e_delay_p95_seconds",
        "dlq_rate",
        "postgres_database_bytes",
    } <= names
    if zookeeper:
        assert "zookeeper_latency_avg_ms" in names
    lag_key = (
        "kafka_consumer_lag_total",
        json.dumps({"group": s.kafka.consumer_group, "topic": s.kafka.topic}),
    )
    assert metrics[lag_key] == 0
    stored = query(
        s.postgres,
        "SELECT count(*) FROM transactions WHERE processed_at >= now() - interval '15 minutes'",
    )[0][0]
    assert metrics[("rows_stored", json.dumps({"window_minutes": "15"}))] == stored == 1000
    files = list((Path(s.data_dir) / "metrics").glob("*/*Z.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["metrics"]

    # 200 more messages and no consumer: lag 200 > 50 turns the run red, at the thresholds task.
    run_producer(s, count=200, seed=32, clock="wall", progress_seconds=60)
    caplog.clear()
    lagging = dag.test()
    states = _task_states("system_monitoring", lagging.run_id)
    assert str(lagging.state) == "failed", states
    assert states["thresholds"] == "failed"
    lag_labels = f"group={s.kafka.consumer_group}, topic={s.kafka.topic}"
    line = f"kafka_consumer_lag_total{{{lag_labels}}} is 200 messages, above the limit of 50 messages (MONITOR_MAX_LAG=50)"
    logged = [r.getMessage() for r in caplog.records if r.name == "reports.runs" and r.levelname == "ERROR"]
    assert logged == [line]  # one plain line per problem in the task's log...
    note, ti_notes = _notes("system_monitoring", lagging.run_id)
    assert note == f"- {line}"  # ...and the same line in the run's note
    assert ti_notes["thresholds"] == note
    assert {states[t] for t in ("kafka_health", "postgres_health", "pipeline_metrics")} == {"success"}
    lag = query(
        s.postgres,
        "SELECT value FROM pipeline_metrics WHERE metric = 'kafka_consumer_lag_total' ORDER BY measured_at DESC LIMIT 1",
    )
    assert lag == [(200.0,)]  # recorded before the verdict, so the red run still leaves its numbers
    assert len(list((Path(s.data_dir) / "metrics").glob("*/*Z.json"))) == 2
