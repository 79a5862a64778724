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

A red task is the alarm; its log says why. A health verdict fails at once; an error of the
check itself (database unreachable) is retried once. Logic in `reports/health.py`,
`reports/zookeeper.py` and `reports/metrics.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from airflow.sdk import dag, task

# The project's packages must be importable (PYTHONPATH=<repo root>; the Compose image sets it).
# Importing this tiny module at parse time turns a wrong path into an import error on the DAG
# list, instead of a DAG that parses and then fails in every task.
import utils.errors  # noqa: F401

CLEANUP_DOC = """
### Data cleanup (daily)

Deletes what is older than `RETENTION_DAYS`: transactions with their alerts, rejected messages,
`pipeline_metrics` rows, and the report and metrics directories of expired days. The daily
aggregates (`daily_summary`, `rule_quality`, `reconciliation`) are kept. Deletes run in bounded
batches, so the consumer keeps writing meanwhile. Logic in `reports/retention.py`.
"""


T = TypeVar("T")


def _verdict(check: Callable[[], T]) -> T:
    """Run `check`; a HealthCheckFailed becomes a failure without retry (the next run comes in
    5 minutes and a retry would only delay the red), any other error is retried as usual."""
    from airflow.sdk.exceptions import AirflowFailException

    from reports.errors import HealthCheckFailed

    try:
        return check()
    except HealthCheckFailed as exc:
        raise AirflowFailException(str(exc)) from exc


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
        from reports.metrics import raise_for_problems
        from utils.config import load_settings

        def check() -> dict[str, Any]:
            result = check_kafka(load_settings())
            raise_for_problems(result.problems)
            return result.to_dict()

        return _verdict(check)

    @task
    def postgres_health() -> dict[str, Any]:
        from reports.health import check_postgres
        from reports.metrics import raise_for_problems
        from utils.database import configured_database

        def check() -> dict[str, Any]:
            with configured_database() as (settings, db):
                result = check_postgres(db, settings.monitor)
            raise_for_problems(result.problems)
            return result.to_dict()

        return _verdict(check)

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
        crossed = m.evaluate_thresholds(metrics, settings.monitor)

        def check() -> dict[str, Any]:
            m.raise_for_problems([*problems, *crossed])
            return {"metrics": len(metrics), "file": str(path)}

        return _verdict(check)

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
)
def data_cleanup() -> None:
    @task
    def retention() -> dict[str, int]:
        from reports.retention import cleanup
        from utils.database import configured_database

        with configured_database() as (settings, db):
            return cleanup(db, settings)

    retention()


system_monitoring()
data_cleanup()
