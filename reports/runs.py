"""What an Airflow run tells the person looking at the grid: why it is red, which day it reported
and where that report is.

A task hands its note to the txmon Airflow plugin (`plugins/txmon_plugin.py`) as an XCom under
`NOTE_KEY`; when the run finishes, the plugin's listener, running in the scheduler, writes the
notes of the run's tasks into the run's note and each task instance's note, which the grid
marks and the run's page shows. (Airflow 3.3 gives a task no way to set a note itself: the Task
SDK can read the run's note but not write it, and the REST API would need a user's credentials
inside the task.) A red run's log says the same lines, one per problem, before the task fails.

The texts are plain functions of plain data, tested without Airflow.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, NoReturn

from reports import units

log = logging.getLogger(__name__)

NOTE_KEY = "txmon_note"
# Airflow stores a note in at most 1,000 characters.
NOTE_LIMIT = 1000
# Where the plugin serves <AIRFLOW_DATA_DIR>/reports on the Airflow API server.
REPORTS_URL = "/txmon/reports"


def report_url(day: date, name: str = "report.html") -> str:
    return f"{REPORTS_URL}/{day.isoformat()}/{name}"


def red_note(problems: Sequence[str]) -> str:
    """The note of a red run: one line per problem (a Markdown list), as the log has them. The
    run's page shows a note's first line only, so the first problem comes first, no heading."""
    return clip("\n".join(f"- {p}" for p in problems))


def day_state(*, transactions: int, complete: bool, day_over: bool) -> str:
    """A report's state in two or three words, for notes and the list of reports."""
    if not transactions:
        return "no transactions"
    if not day_over:
        return "day not over"
    return "complete" if complete else "possibly incomplete"


def report_note(day: date, *, transactions: int, alerts: int, complete: bool, day_over: bool) -> str:
    """The note of a reporting run: the day it reported, what it found, the link to the page."""
    state = day_state(transactions=transactions, complete=complete, day_over=day_over)
    return clip(
        f"**Report for {day.isoformat()}** ({state}): {units.count(transactions)} transactions, "
        f"{units.count(alerts)} alerts. [Open the report]({report_url(day)})"
    )


def running_note(day: date, *, scheduled: bool) -> str:
    """The note of a reporting run as it starts: a scheduled run first waits for its day."""
    doing = "waiting for the day to be complete, then reporting" if scheduled else "reporting"
    return f"**Report for {day.isoformat()}**: {doing}"


def clip(text: str, limit: int = NOTE_LIMIT) -> str:
    """At most `limit` characters, cut at a line and saying so."""
    if len(text) <= limit:
        return text
    tail = "\n- … (more in the task's log)"
    cut = text[: limit - len(tail)]
    return cut[: cut.rfind("\n")] + tail if "\n" in cut else cut[: limit - 1] + "…"


def combine(notes: Sequence[str]) -> str:
    """The run's note from its tasks' notes, in the order they were written."""
    return clip("\n\n".join(n for n in notes if n))


def publish(context: Mapping[str, Any], text: str) -> None:
    """Hand `text` to the plugin as this task's note."""
    context["ti"].xcom_push(key=NOTE_KEY, value=text)


def fail(context: Mapping[str, Any], problems: Sequence[str]) -> NoReturn:
    """Fail the task without retry: one plain log line per problem, the same lines in the
    run's note, and a short final message (the traceback Airflow adds cannot then hide them)."""
    from airflow.sdk.exceptions import AirflowFailException

    for problem in problems:
        log.error("%s", problem)
    publish(context, red_note(problems))
    raise AirflowFailException(
        f"{len(problems)} problem(s), one per line above; the run's note lists them too"
    ) from None
