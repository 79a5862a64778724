"""
### Daily transaction report

Once a day, for the previous UTC day (the run's data interval):

1. **summary**: counts and sums by type, currency, country and channel; alerts by type and
   severity; rejections by reason → table `daily_summary`.
2. **alert_analysis**: alert rate per rule, precision and recall against the producer's
   `simulated_scenario` labels, top accounts and merchants → table `rule_quality`.
3. **reconciliation**: per Kafka partition, the offsets the consumer stored or rejected that day
   and any ranges it skipped → table `reconciliation`.
4. **report**: `<AIRFLOW_DATA_DIR>/reports/<YYYY-MM-DD>/` with `report.html` (charts embedded),
   `summary.csv`, `alerts.csv` and `figures.json`.

Every step replaces its day's rows, so a rerun (Clear) is always safe. A manual trigger
reports on the last complete UTC day; to report on another day, trigger it with the param
`day` = `YYYY-MM-DD` (a replayed or simulated stream carries its own dates; the simulated
producer's default start is 2026-01-01). Reconciliation always uses the consumer's own clock:
it covers what was *processed* on that day. The logic lives in the `reports` package (queries, scoring,
charts, the page's template, files); settings come from the environment / `.env` like the rest of
the pipeline (POSTGRES_*, KAFKA_TOPIC, AIRFLOW_DATA_DIR).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

# The project's packages must be importable (PYTHONPATH=<repo root>; the Compose image sets it).
# Importing this tiny module at parse time turns a wrong path into an import error on the DAG
# list, instead of a DAG that parses and then fails in every task.
import utils.errors  # noqa: F401


def _day() -> date:
    from reports.day import report_day

    context = get_current_context()
    run = context.get("dag_run")
    return report_day(
        context.get("data_interval_start"),
        context["params"].get("day"),
        run_after=getattr(run, "run_after", None),
    )


@dag(
    dag_id="transaction_reporting",
    # A data-interval timetable: the run that fires at midnight covers the day that just ended,
    # and a manual trigger covers the last complete day (a trigger timetable would give
    # an empty interval at the trigger time).
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    default_args={
        "owner": "txmon",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(minutes=30),
    },
    params={
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Report on this UTC day (YYYY-MM-DD) instead of the run's data interval.",
        )
    },
    tags=["txmon", "reporting"],
    doc_md=__doc__,
)
def transaction_reporting() -> None:
    @task
    def summary() -> dict[str, Any]:
        from reports import queries
        from utils.database import configured_database

        day = _day()
        with configured_database() as (_, db):
            queries.ensure_schema(db)
            rows = queries.build_daily_summary(db, day)
        total = next((r.txn_count for r in rows if r.dimension == "total"), 0)
        return {"day": day.isoformat(), "transactions": total, "rows": len(rows)}

    @task
    def alert_analysis() -> dict[str, Any]:
        from reports import queries
        from utils.database import configured_database

        day = _day()
        with configured_database() as (_, db):
            analysis = queries.analyse_alerts(db, day)
        return {
            "day": day.isoformat(),
            "alerts": {r.alert_type: r.alerts for r in analysis.rules},
            "labels_present": analysis.labels_present,
        }

    @task
    def reconciliation() -> dict[str, Any]:
        from reports import queries
        from utils.database import configured_database

        day = _day()
        with configured_database() as (settings, db):
            result = queries.reconcile(db, day, topic=settings.kafka.topic)
        return {
            "day": day.isoformat(),
            "partitions": len(result),
            "missing": sum(r.missing for r in result),
            "gaps": {r.partition: r.gaps for r in result if r.gaps},
        }

    @task
    def report() -> str:
        from reports import queries
        from reports.files import write_report
        from utils.database import configured_database

        day = _day()
        with configured_database() as (settings, db):
            figures = queries.gather_figures(db, day)
        return str(write_report(day, figures, settings.data_dir))

    summary() >> alert_analysis() >> reconciliation() >> report()


transaction_reporting()
