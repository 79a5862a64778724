"""
### System monitoring (every 5 minutes)

* **kafka_health**: broker reachable, topic and dead-letter topic present with the expected
  partitions, consumer-group lag per partition; ZooKeeper `ruok`/`srvr` when `ZOOKEEPER_HOST`
  is set.
* **postgres_health**: connection, database and table sizes, connections, long-running
  queries, dead tuples, last vacuum.
* **pipeline_metrics**: throughput, end-to-end delay p50/p95 and DLQ rate over the last
  `MONITOR_WINDOW_MINUTES`, disk use of `AIRFLOW_DATA_DIR`.
* **thresholds**: records every metric (table `pipeline_metrics` and
  `<AIRFLOW_DATA_DIR>/metrics/<day>/<HHMMSS.ffffff>Z.json`) and fails, naming metric, value and limit,
  when one crosses `MONITOR_MAX_LAG`, `MONITOR_MAX_DELAY_P95_SECONDS`, `MONITOR_MAX_DLQ_RATE`
  or `MONITOR_MAX_DISK_USED_PCT`.

A red task is the alarm. Its log has one plain line per problem (metric, value in human units,
the limit and the setting that sets it), and the run's note in the grid repeats them. A value
strictly above its limit turns the run red; one equal to it does not. A health verdict fails at
once; an error of the check itself (database unreachable) is retried once. Logic in
`reports/health.py`, `reports/zookeeper.py` and `reports/metrics.py`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import dag, task

# The project's packages must be importable (PYTHONPATH=<repo root>; the Compose image sets it).
# Importing this tiny module at parse time turns a wrong path into an import error on the DAG
# list, instead of a DAG that parses and then fails in every task.
import utils.errors  # noqa: F401

CLEANUP_DOC = """
### Data cleanup (daily, paused until you enable it)

Deletes what is older than `RETENTION_DAYS`: transactions (with their alerts) whose event time
*and* processing time are both older, rejected messages, `pipeline_metrics` rows, and the report
and metrics directories of expired days. Its first log line says what it will delete, counted
before anything goes. The daily aggregates (`daily_summary`, `rule_quality`, `reconciliation`)
are kept. Deletes run in bounded batches, so the consumer keeps writing meanwhile.

It starts **paused**: deleting data is a decision, so turn it on yourself (the toggle in the DAG
list). `RETENTION_DAYS` must be at least `VALIDATION_MAX_AGE_DAYS`, or every task refuses to
start and names the fix. Logic in `reports/retention.py`.
"""


def _verdict(problems: list[str]) -> None:
    """Fail the task, without retry, when a check found problems: the next run comes in 5
    minutes and a retry would only delay the red. One log line per problem, and the run's note."""
    if problems:
        from airflow.sdk import get_current_context

        from reports.runs import fail

        fail(get_current_context(), problems)


_DEFAULT_ARGS = {
    "owner": "txmon",
    "retries": 1,
    "retry_delay": timedelta(seconds=30),
    "execution_timeout": timedelta(minutes=3),
}


@dag(
    dag_id="system_monitoring",
    schedule="*/5 * * * *",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=5),
    default_args=_DEFAULT_ARGS,
    tags=["txmon", "monitoring"],
    doc_md=__doc__,
)
def system_monitoring() -> None:
    @task
    def kafka_health() -> dict[str, Any]:
        from reports.health import check_kafka
        from utils.config import load_settings

        result = check_kafka(load_settings())
        _verdict(result.problems)
        return result.to_dict()

    @task
    def postgres_health() -> dict[str, Any]:
        from reports.health import check_postgres
        from utils.database import configured_database

        with configured_database() as (settings, db):
            result = check_postgres(db, settings.monitor)
        _verdict(result.problems)
        return result.to_dict()

    @task
    def pipeline_metrics() -> dict[str, Any]:
        from reports.metrics import CheckResult, collect_metrics
        from utils.database import configured_database

        with configured_database() as (settings, db):
            metrics = collect_metrics(db, settings)
        return CheckResult("pipeline", metrics=metrics).to_dict()

    @task
    def thresholds(
        kafka: dict[str, Any], postgres: dict[str, Any], pipeline: dict[str, Any]
    ) -> dict[str, Any]:
        from reports import metrics as m
        from reports.queries import ensure_schema
        from utils.database import configured_database

        metrics, problems = m.results_to_metrics([kafka, postgres, pipeline])
        with configured_database() as (settings, db):
            ensure_schema(db)  # pipeline_metrics comes with migration 002: say so if it is missing
            path = m.record_metrics(db, metrics, data_dir=settings.data_dir)
        _verdict([*problems, *m.evaluate_thresholds(metrics, settings.monitor)])
        return {"metrics": len(metrics), "file": str(path)}

    thresholds(kafka_health(), postgres_health(), pipeline_metrics())  # type: ignore[arg-type]


@dag(
    dag_id="data_cleanup",
    schedule="30 2 * * *",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={
        **_DEFAULT_ARGS,
        "retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(hours=1),
    },
    tags=["txmon", "maintenance"],
    doc_md=CLEANUP_DOC,
    # Deleting data is a decision: paused until someone enables it, whatever
    # AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION says (Compose sets it to false).
    is_paused_upon_creation=True,
)
def data_cleanup() -> None:
    @task
    def retention() -> dict[str, int]:
        from reports.retention import cleanup
        from utils.database import configured_database

        with configured_database(retention=True) as (settings, db):
            return cleanup(db, settings)

    retention()


system_monitoring()
data_cleanup()
