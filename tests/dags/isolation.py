"""Airflow isolation for the DAG tests: a throw-away AIRFLOW_HOME set before Airflow is first
imported (tests/dags/conftest.py calls it), and a way to undo the logging setup Airflow does on import."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

DAGS = Path(__file__).resolve().parents[2] / "dags"
PLUGINS = DAGS.parent / "plugins"


def isolate_airflow() -> None:
    """Point Airflow at a throw-away home before it is first imported (it reads its config on
    import), so tests never touch a developer's ~/airflow."""
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
        # The txmon plugin's listener writes the runs' notes, in dag.test() as in the scheduler.
        AIRFLOW__CORE__PLUGINS_FOLDER=str(PLUGINS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        # As Compose and `make airflow` have it: new DAGs unpaused, unless a DAG says otherwise.
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
    )


def keep_logging() -> Callable[[], None]:
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
