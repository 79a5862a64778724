"""The DAG files parse, and every DAG follows our rules: tags, retries, no catchup, docs, thin files."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"


import pytest  # noqa: E402

from tests.dags.isolation import keep_logging  # noqa: E402

EXPECTED = {"transaction_reporting", "system_monitoring", "data_cleanup"}


@pytest.fixture(scope="module")
def dagbag() -> Iterator[Any]:
    restore = keep_logging()
    from airflow.dag_processing.dagbag import DagBag

    yield DagBag(dag_folder=str(DAGS))
    restore()


def test_dag_files_import_without_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == EXPECTED


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_each_dag_follows_the_house_rules(dagbag: Any, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert dag.tags and "txmon" in dag.tags
    assert dag.catchup is False
    assert dag.doc_md and len(dag.doc_md.strip()) > 100
    assert dag.max_active_runs == 1
    assert dag.tasks
    for t in dag.tasks:
        assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"
        assert t.owner == "txmon", f"{dag_id}.{t.task_id} has owner {t.owner!r}"
        assert t.execution_timeout is not None, f"{dag_id}.{t.task_id} may run forever"


def test_the_reporting_run_covers_the_day_before_it(dagbag: Any) -> None:
    from airflow.serialization.encoders import coerce_to_core_timetable

    dag = dagbag.dags["transaction_reporting"]
    assert [t.task_id for t in dag.topological_sort()] == [
        "day_complete",
        "summary",
        "alert_analysis",
        "reconciliation",
        "report",
    ]
    # A manual trigger during 11 March reports on 10 March (the last complete UTC day), as does
    # the scheduled run that fires at midnight.
    timetable = coerce_to_core_timetable(dag.timetable)
    for run_after in (datetime(2026, 3, 11, 0, 0, tzinfo=UTC), datetime(2026, 3, 11, 17, 45, tzinfo=UTC)):
        interval = timetable.infer_manual_data_interval(run_after=run_after)
        assert interval.start.date() == date(2026, 3, 10), run_after


def test_the_cleanup_dag_starts_paused_whatever_the_default(dagbag: Any) -> None:
    """Deleting data is a decision: data_cleanup is paused when Airflow first sees it, even where
    new DAGs start unpaused (Compose, `make airflow`); the others start at once."""
    assert os.environ["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    assert dagbag.dags["data_cleanup"].is_paused_upon_creation is True
    assert {d for d in EXPECTED if dagbag.dags[d].is_paused_upon_creation} == {"data_cleanup"}


def test_parsing_the_dag_files_does_no_work() -> None:
    """Parsing (every 30 s in the dag-processor) must not import the database driver, Kafka or
    matplotlib, let alone connect: the project's code runs inside the tasks."""
    probe = (
        "import runpy, sys\n"
        f"for f in {[str(p) for p in sorted(DAGS.glob('*.py'))]!r}:\n"
        "    runpy.run_path(f)\n"
        "heavy = sorted(m for m in ('psycopg2', 'kafka', 'matplotlib', 'utils.database') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1:] in ([], [""]), done.stdout
