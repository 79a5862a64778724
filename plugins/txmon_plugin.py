"""The txmon Airflow plugin: what a person sees of txmon's runs in the Airflow UI.

* **Notes.** A listener, running in the scheduler, writes each finished run's note (and the note
  of each task instance that had something to say) from the texts its tasks handed over as
  XComs (`reports.runs.NOTE_KEY`): a red monitoring run lists its problems, one per line; a
  reporting run names its day and links its report. A reporting run is noted with its day as
  soon as it starts. A note a person wrote is never overwritten.
* **Reports.** `/txmon/reports/` on the API server lists the days under
  `<AIRFLOW_DATA_DIR>/reports` and serves their files to signed-in users who may read the
  transaction_reporting DAG; *Reports* in the UI's menu opens the list.

Airflow loads it from its plugins folder (`AIRFLOW__CORE__PLUGINS_FOLDER`: this directory in
`make airflow`). The texts come from `reports.runs`, tested without Airflow; this file is the glue.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import stat
from datetime import date
from pathlib import Path
from typing import Any

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin
from fastapi import Request

log = logging.getLogger(__name__)

OUR_DAGS = ("transaction_reporting", "system_monitoring", "data_cleanup")
REPORT_FILES = ("report.html", "summary.csv", "alerts.csv", "figures.json")
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".json": "application/json",
}
# Every response of the report pages: no script may run (the reports have none: inline SVG and
# styles only), nothing is framed elsewhere or sniffed into another type, and nothing is cached
# (the reports hold account ids and amounts).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# ------------------------------------------------------------------------------------ notes


def _set_note(holder: Any, text: str) -> None:
    """Set a run's or task instance's note unless a person wrote it (their notes carry a user)."""
    existing = getattr(holder, "dag_run_note", None) or getattr(holder, "task_instance_note", None)
    if existing is not None and existing.user_id:
        return
    holder.note = text


def _reporting_day(dag_run: Any) -> date:
    from reports.day import report_day

    return report_day(
        dag_run.data_interval_start, (dag_run.conf or {}).get("day"), run_after=dag_run.run_after
    )


class RunNotes:
    """Listener: runs in the scheduler, inside its database session."""

    @hookimpl
    def on_dag_run_running(self, dag_run: Any, msg: str) -> None:
        if dag_run.dag_id != "transaction_reporting":
            return
        from reports.errors import ReportError
        from reports.runs import running_note

        try:
            scheduled = str(dag_run.run_type) == "scheduled"
            _set_note(dag_run, running_note(_reporting_day(dag_run), scheduled=scheduled))
        except ReportError as exc:
            _set_note(dag_run, f"**Report**: {exc}")

    @hookimpl
    def on_dag_run_success(self, dag_run: Any, msg: str) -> None:
        self._write(dag_run)

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        self._write(dag_run)

    def _write(self, dag_run: Any) -> None:
        if dag_run.dag_id not in OUR_DAGS:
            return
        from airflow.models.xcom import XComModel
        from airflow.utils.state import TaskInstanceState
        from sqlalchemy import select
        from sqlalchemy.orm import object_session

        from reports.runs import NOTE_KEY, combine

        session = object_session(dag_run)
        if session is None:
            # Detached (dag.test() closes the thread's session while it runs a task): the run
            # again, from the thread's session, which its caller commits next.
            from airflow import settings
            from airflow.models.dagrun import DagRun

            if settings.Session is None:
                return
            session = settings.Session()
            dag_run = session.get(DagRun, dag_run.id)
            if dag_run is None:
                return
        rows = session.scalars(
            select(XComModel)
            .where(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.key == NOTE_KEY,
            )
            .order_by(XComModel.timestamp)
        ).all()
        notes = {(x.task_id, x.map_index): str(XComModel.deserialize_value(x)) for x in rows}
        tis = dag_run.get_task_instances(session=session)
        for ti in tis:
            if (ti.task_id, ti.map_index) in notes:
                _set_note(ti, notes[(ti.task_id, ti.map_index)])
        # A task that failed without handing over a note (a crash, a database outage) still
        # gets a line, so a red run in the grid always says where to look.
        silent = sorted(
            ti.task_id
            for ti in tis
            if ti.state == TaskInstanceState.FAILED and (ti.task_id, ti.map_index) not in notes
        )
        lines = list(notes.values())
        if silent:
            lines.append("**Failed:** " + ", ".join(silent) + " (the task's log says why)")
        if lines:
            _set_note(dag_run, combine(lines))


# ------------------------------------------------------------------------------------ reports


def _reports_root() -> Path:
    from utils.config import load_settings

    return Path(load_settings().data_dir) / "reports"


def _headline(day_dir: Path) -> str:
    """'60,000 transactions, complete' from the day's figures.json, or '' if unreadable."""
    from reports.runs import day_state

    try:
        data = json.loads((day_dir / "figures.json").read_text())
        total = next((r["txn_count"] for r in data["summary"] if r["dimension"] == "total"), 0)
        c = data.get("completeness", {})
        state = day_state(
            transactions=total, complete=c.get("complete", True), day_over=c.get("day_over", True)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f"{total:,} transactions, {state}" if total else state


def _index_page(root: Path) -> str:
    days = (
        sorted((p for p in root.iterdir() if p.is_dir() and _DAY.match(p.name)), reverse=True)
        if root.is_dir()
        else []
    )
    items = "\n".join(
        f'<li><a href="{d.name}/report.html">{d.name}</a> {html.escape(_headline(d))} <small>(<a href="{d.name}/summary.csv">summary.csv</a>, '
        f'<a href="{d.name}/alerts.csv">alerts.csv</a>, <a href="{d.name}/figures.json">figures.json</a>)</small></li>'
        for d in days
    )
    body = (
        f"<ol>{items}</ol>"
        if days
        else (
            "<p>No report yet. Trigger the <b>transaction_reporting</b> DAG with the day "
            "<code>make demo</code> printed, or run <code>python -m reports --day YYYY-MM-DD</code>.</p>"
        )
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>txmon reports</title>'
        "<style>body{font:14px/1.5 system-ui,sans-serif;margin:2em auto;max-width:760px;padding:0 1em}"
        "li{margin:.2em 0}small{color:#666}</style></head><body>"
        f"<h1>Daily transaction reports</h1><p>In {html.escape(str(root))}, newest first.</p>{body}</body></html>"
    )


async def _reader(request: Request) -> None:
    """Signed in (the UI's cookie, or a bearer token) and allowed to read the reporting DAG: the
    reports hold account ids and amounts. Airflow's own checks, imported on first use so that
    loading the plugin (in the scheduler, in every task) stays light."""
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
    from fastapi.security import HTTPBearer

    bearer = await HTTPBearer(auto_error=False)(request)
    user = await get_user(request, None, bearer)
    requires_access_dag(method="GET", param_dag_id="transaction_reporting")(request, user)


def _read_report(day_dir: Path, name: str) -> bytes | None:
    """The file's bytes, or None if it is missing or either it or its day folder is a symlink:
    a link planted in the reports folder must not serve /etc/passwd or the .env. O_NOFOLLOW
    refuses a link swapped in after the check."""
    if day_dir.is_symlink() or not day_dir.is_dir():
        return None
    try:
        fd = os.open(day_dir / name, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # missing, or a symlink (ELOOP)
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        return fh.read()


def create_app() -> Any:
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, RedirectResponse, Response

    readers = [Depends(_reader)]
    app = FastAPI(title="txmon reports", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def _security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.exception_handler(HTTPException)
    async def _sign_in_first(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 401:
            from airflow.api_fastapi.app import get_auth_manager

            return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)))
        return HTMLResponse(f"<p>{html.escape(str(exc.detail))}</p>", status_code=exc.status_code)

    @app.get("/reports/", response_class=HTMLResponse, dependencies=readers)
    def index() -> str:
        return _index_page(_reports_root())

    @app.get("/reports/{day}/{name}", dependencies=readers)
    def report_file(day: str, name: str) -> Response:
        if not _DAY.match(day) or name not in REPORT_FILES:
            raise HTTPException(404, f"no such report file: {day}/{name}")
        content = _read_report(_reports_root() / day, name)
        if content is None:
            raise HTTPException(
                404, f"No report for {day} yet: trigger transaction_reporting with the day {day}."
            )
        return Response(content, media_type=_MEDIA_TYPES[Path(name).suffix])

    return app


class TxmonPlugin(AirflowPlugin):
    name = "txmon"
    # Plain lists, as AirflowPlugin declares them.
    listeners = [RunNotes()]  # noqa: RUF012
    fastapi_apps = [  # noqa: RUF012
        {"app": create_app(), "url_prefix": "/txmon", "name": "txmon reports"}
    ]
    external_views = [  # noqa: RUF012
        {"name": "Reports", "href": "/txmon/reports/", "destination": "nav", "url_route": "txmon-reports"}
    ]
