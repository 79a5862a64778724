"""
### Daily transaction report

Once a day, for the previous UTC day (the run's data interval):

0. **day_complete**: waits until every partition has stored an event past the day's end (consumer
   lag and late events at midnight), at most `REPORT_MAX_WAIT_MINUTES` (120) after it; a manual
   run goes at once. The report says how complete the day was either way.
1. **summary**: counts by type, currency, country and channel, with amounts in `BASE_CURRENCY`
   (and per currency as sent); alerts by type and severity; rejections by reason → table
   `daily_summary`.
2. **alert_analysis**: per rule, the incidents of its scenario injected and caught (recall), its
   alerts, those on any incident (precision) and per 1,000 transactions, against the simulator's
   incident labels, as `make quality` scores a run → table `rule_quality`.
3. **reconciliation**: per Kafka partition, the offsets the consumer stored or rejected that day,
   any ranges it skipped, and restarts of the offsets (a recreated topic) → table `reconciliation`.
4. **report**: `<AIRFLOW_DATA_DIR>/reports/<YYYY-MM-DD>/` with `report.html` (charts embedded),
   `summary.csv`, `alerts.csv` and `figures.json`.

Each run's note names its day and links its report (served by the txmon plugin under
`/txmon/reports/`; *Reports* in the menu lists them all). Every step replaces its day's rows, so
a rerun (Clear) is always safe. A manual trigger reports on the last complete UTC day; to report
on another day, trigger it with the param `day` = `YYYY-MM-DD` (`make demo` prints the day it
filled). Reconciliation uses the consumer's own clock: it covers what was *processed* on that
day. The logic lives in the `reports` package; settings come from the environment / `.env` like
the rest of the pipeline (POSTGRES_*, AIRFLOW_DATA_DIR, REPORT_*).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow.sdk import (
    BaseSensorOperator,
    CronDataIntervalTimetable,
    Param,
    PokeReturnValue,
    dag,
    get_current_context,
    task,
)

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


class DayComplete(BaseSensorOperator):
    """Done when the day is complete, REPORT_MAX_WAIT_MINUTES after its end, or at once for a
    run that was not scheduled (a person asked for the report now)."""

    def poke(self, context: Any) -> PokeReturnValue:
        from reports.completeness import read_completeness, ready_to_report
        from utils.database import configured_database

        day = _day()
        with configured_database() as (settings, db), db.snapshot() as cur:
            completeness = read_completeness(cur, day)
        scheduled = str(context["dag_run"].run_type) == "scheduled"
        ready = ready_to_report(
            completeness,
            now=datetime.now(UTC),
            max_wait=timedelta(minutes=settings.report.max_wait_minutes),
            wait=scheduled,
        )
        behind = {w.partition: w.latest_event.isoformat() for w in completeness.behind}
        self.log.info(
            "day %s: %s%s",
            day,
            "complete" if completeness.complete else f"partitions behind its end: {behind}",
            "" if ready else "; waiting",
        )
        return PokeReturnValue(is_done=ready, xcom_value=completeness.to_dict())


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
    day_complete = DayComplete(
        task_id="day_complete",
        mode="reschedule",  # frees the worker slot between checks
        poke_interval=timedelta(minutes=5),
        # A backstop only: the sensor itself stops waiting after REPORT_MAX_WAIT_MINUTES.
        timeout=timedelta(hours=24),
    )

    @task
    def summary() -> dict[str, Any]:
        from reports import queries
        from utils.database import configured_database

        day = _day()
        with configured_database() as (settings, db):
            queries.ensure_schema(db)
            rows = queries.build_daily_summary(db, day, settings.rules.rate_table())
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
            "ground_truth": analysis.ground_truth,
            "incidents": sum(r.incidents for r in analysis.rules),
            "caught": sum(r.caught for r in analysis.rules),
        }

    @task
    def reconciliation() -> dict[str, Any]:
        from reports.reconciliation import reconcile_day
        from utils.database import configured_database

        day = _day()
        with configured_database() as (_, db):
            result = reconcile_day(db, day)
        return {
            "day": day.isoformat(),
            "partitions": len(result),
            "missing": sum(p.missing for p in result),
            "restarts": {p.partition: p.restarts for p in result if p.restarts},
        }

    @task
    def report() -> str:
        from reports import queries, runs
        from reports.files import write_report
        from utils.database import configured_database

        day = _day()
        with configured_database() as (settings, db):
            figures = queries.gather_figures(
                db, day, settings.rules.rate_table(), noisy_alert_rate=settings.report.noisy_alert_rate
            )
        out = write_report(day, figures, settings.data_dir)
        c = figures.completeness
        runs.publish(
            get_current_context(),
            runs.report_note(
                day,
                transactions=figures.transactions,
                alerts=sum(r.alerts for r in figures.rules),
                complete=c is None or c.complete,
                day_over=c is None or c.day_over,
            ),
        )
        return str(out)

    day_complete >> summary() >> alert_analysis() >> reconciliation() >> report()


transaction_reporting()
