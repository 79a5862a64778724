"""The DAG files parse, and every DAG follows our rules: tags, retries, no catchup, docs, thin files."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"


def _isolate_airflow() -> None:
    """Point Airflow at a throw-away home before it is first imported (it reads its config on
    import), so tests never touch a developer's ~/airflow. test_dag_runs.py has the same block;
    whichever module pytest imports first creates the home, the other reuses it."""
    home = os.environ.get("TXMON_TEST_AIRFLOW_HOME")
    if not home:
        home = tempfile.mkdtemp(prefix="txmon-airflow-")
        os.environ["TXMON_TEST_AIRFLOW_HOME"] = home
        atexit.register(shutil.rmtree, home, True)
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != home:
        raise RuntimeError(
            "airflow was imported before the DAG tests isolated it; import it only in tests/dags"
        )
    os.environ.update(
        AIRFLOW_HOME=home,
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )


def _keep_logging() -> Callable[[], None]:
    """Airflow configures logging when first imported (root level INFO, a stdout handler); the
    returned function puts the previous setup back, so the rest of the session logs as before.
    pytest's own capture handlers come and go per test phase and are left to pytest."""

    def ours(handlers: list[logging.Handler]) -> list[logging.Handler]:
        return [h for h in handlers if not type(h).__module__.startswith("_pytest")]

    root = logging.getLogger()
    saved_root = (root.level, ours(root.handlers))
    saved = {
        name: (lg.level, lg.handlers[:], lg.propagate, lg.disabled)
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }

    def restore() -> None:
        root.setLevel(saved_root[0])
        root.handlers[:] = [h for h in root.handlers if h not in ours(root.handlers)] + saved_root[1]
        for name, lg in list(logging.Logger.manager.loggerDict.items()):
            if isinstance(lg, logging.Logger):
                level, handlers, propagate, disabled = saved.get(name, (logging.NOTSET, [], True, False))
                lg.setLevel(level)
                lg.handlers[:] = handlers
                lg.propagate, lg.disabled = propagate, disabled

    return restore


_isolate_airflow()

import pytest  # noqa: E402

EXPECTED = {"transaction_reporting", "system_monitoring", "data_cleanup"}


@pytest.fixture(scope="module")
def dagbag() -> Iterator[Any]:
    restore = _keep_logging()
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
