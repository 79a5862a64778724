"""The Airflow walkthrough of docs/airflow.md, done the way a new user does it, in a real browser.

`scripts/airflow_standalone.sh` (what `make airflow` runs) starts native Airflow against the test
stack's Kafka and PostgreSQL, with a day of transactions already stored (as `make demo` leaves
them), two rows old enough for RETENTION_DAYS to delete, and a consumer lag above
MONITOR_MAX_LAG. Then Chromium: sign in with the password from the file the script names, the DAG
list (data_cleanup paused), the first monitoring run red with its reason in the note, a report
triggered for the day from the trigger form, its note, its link, the report, the Reports menu.
The start-up log is checked for what a user cannot act on. Screenshots of every step go to
`tests/artifacts/airflow-*.png`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.browser import artifact, chromium
from tests.support import REPO, child_env, consume, produce, query
from utils.config import Settings

COUNT, SEED = 3000, 5
LAG = 30  # messages produced after the consumer stopped
STARTUP_S = 240
RUN_S = 300


@dataclasses.dataclass
class Airflow:
    url: str
    home: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def password_file(self) -> Path:
        # The script names it in its banner; the user runs `cat` on it.
        match = re.search(r"cat (\S+simple_auth_manager_passwords\.json\.generated)", self.log.read_text())
        assert match, self.log.read_text()[:3000]
        return Path(match.group(1)).expanduser()


def _free_port() -> int:
    preferred = 38080 + int(os.environ.get("TXMON_TEST_PORT_OFFSET", "0"))
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as the script asks; then the rest of its process group (ours), if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        time.sleep(2)


def _seed(s: Settings) -> str:
    """A stream as `make demo` produces it (the simulated clock chooses where it starts, some
    days back on a fresh topic); returns the day most of its events fall on."""
    produce(s, COUNT, seed=SEED, start=None)
    assert consume(s).stored == COUNT
    produce(s, LAG, seed=SEED + 1, start=None)  # nobody consumes these: lag
    old = datetime.now(UTC) - timedelta(days=400)
    conn = psycopg2.connect(s.postgres.dsn(migration=True))
    try:
        with conn, conn.cursor() as cur:
            for i in range(2):
                cur.execute(
                    """INSERT INTO transactions (transaction_id, account_id, transaction_type, amount, currency,
                           "timestamp", channel, country, schema_version, kafka_topic, kafka_partition,
                           kafka_offset, processed_at)
                       VALUES (%s, 'ACC-OLD', 'purchase', 1, 'EUR', %s, 'pos', 'DE', 1, 'old', 99, %s, %s)""",
                    (f"old-{i}", old, i, old),
                )
    finally:
        conn.close()
    [(day, _)] = query(
        s.postgres,
        """SELECT ("timestamp" AT TIME ZONE 'UTC')::date, count(*) FROM transactions
           WHERE account_id <> 'ACC-OLD' GROUP BY 1 ORDER BY 2 DESC LIMIT 1""",
    )
    return str(day)


@pytest.fixture
def airflow(pipeline_settings: Settings, tmp_path: Path) -> Iterator[tuple[Airflow, Settings, str]]:
    s = dataclasses.replace(pipeline_settings, data_dir=str(tmp_path / "airflow-data"))
    day = _seed(s)
    port = _free_port()
    env = child_env(
        s,
        TXMON_AIRFLOW_HOME=str(tmp_path / "airflow-home"),
        AIRFLOW_PORT=str(port),
        MONITOR_MAX_LAG="10",
        RETENTION_DAYS="90",
        VALIDATION_MAX_AGE_DAYS="90",
    )
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env['PATH']}"
    log = tmp_path / "airflow.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "airflow_standalone.sh")],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as one
        )
    af = Airflow(f"http://127.0.0.1:{port}", tmp_path / "airflow-home", log, proc)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "Airflow did not start:\n" + log.read_text()[-3000:]
                time.sleep(2)
        yield af, s, day
    finally:
        _stop(proc)
        (artifact("airflow-walkthrough.log")).write_bytes(log.read_bytes())


def _api(page: Any, url: str) -> Any:
    response = page.request.get(url)
    assert response.ok, (url, response.status, response.text()[:500])
    return response.json()


def _wait_for_run(page: Any, af: Airflow, dag_id: str, *, run_id: str | None = None) -> dict[str, Any]:
    """The newest (or the named) run of `dag_id` once it has finished."""
    deadline = time.monotonic() + RUN_S
    while True:
        runs = _api(page, f"{af.url}/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after&limit=20")["dag_runs"]
        runs = [r for r in runs if run_id is None or r["dag_run_id"] == run_id]
        if runs and runs[0]["state"] in ("success", "failed"):
            return dict(runs[0])
        assert time.monotonic() < deadline, (
            f"{dag_id} run did not finish: {runs[:1]}\n" + af.log.read_text()[-2000:]
        )
        time.sleep(3)


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(artifact(f"airflow-{name}.png")))


def test_the_readme_walkthrough_in_the_airflow_ui(airflow: tuple[Airflow, Settings, str]) -> None:
    af, s, day = airflow
    password = json.loads(af.password_file().read_text())["admin"]
    banner = af.log.read_text()

    # Start-up: this machine only, and nothing printed a user cannot act on.
    assert f"UI:            {af.url}" in banner
    assert "Host: 127.0.0.1:" in banner and "0.0.0.0" not in banner
    assert password not in banner  # the password is in its file, not in the log
    for noise in ("HMAC key", "graphviz", "Using `httpx`", "looks like production"):
        assert noise not in banner, noise

    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()

        # 1. Sign in.
        page.goto(af.url)
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(password)
        _shot(page, "1-sign-in")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{af.url}/")

        # 2. The DAG list: three DAGs, data_cleanup paused (deleting data is a decision).
        page.goto(f"{af.url}/dags")
        for dag_id in ("data_cleanup", "system_monitoring", "transaction_reporting"):
            page.get_by_role("link", name=dag_id, exact=True).wait_for()
        dags = {d["dag_id"]: d for d in _api(page, f"{af.url}/api/v2/dags")["dags"]}
        assert {k: d["is_paused"] for k, d in dags.items()} == {
            "data_cleanup": True,
            "system_monitoring": False,
            "transaction_reporting": False,
        }
        _shot(page, "2-dag-list")

        # 3. The first monitoring run is red, and its note says why, one line per problem.
        red = _wait_for_run(page, af, "system_monitoring")
        assert red["state"] == "failed", red
        lag_line = f"kafka_consumer_lag_total{{group={s.kafka.consumer_group}, topic={s.kafka.topic}}} is {LAG} messages, above the limit of 10 messages (MONITOR_MAX_LAG=10)"
        assert red["note"] == f"- {lag_line}", red["note"]
        page.goto(f"{af.url}/dags/system_monitoring/runs/{red['dag_run_id']}")
        page.get_by_text(lag_line).wait_for()  # the run's page shows the note's first line
        _shot(page, "3-red-run-note")

        # 4. Trigger the report of the day `make demo` printed, from the trigger form.
        page.goto(f"{af.url}/dags/transaction_reporting")
        page.get_by_role("button", name="Trigger").first.click()
        dialog = page.get_by_role("dialog")
        dialog.locator("#element_day").fill(day)
        _shot(page, "4-trigger-form")
        dialog.get_by_role("button", name="Trigger").click()
        dialog.wait_for(state="hidden")
        runs = _api(page, f"{af.url}/api/v2/dags/transaction_reporting/dagRuns?order_by=-run_after&limit=5")
        [mine] = [r for r in runs["dag_runs"] if r["conf"].get("day") == day and r["run_type"] == "manual"]
        done = _wait_for_run(page, af, "transaction_reporting", run_id=mine["dag_run_id"])
        assert done["state"] == "success", done
        assert done["note"].startswith(f"**Report for {day}** ("), done["note"]

        # 5. The run's note names the day and links the report.
        page.goto(f"{af.url}/dags/transaction_reporting/runs/{done['dag_run_id']}")
        link = page.get_by_role("link", name="Open the report")
        link.wait_for()
        assert link.get_attribute("href") == f"/txmon/reports/{day}/report.html"
        _shot(page, "5-report-run-note")
        with context.expect_page() as opened:
            link.click()
        report = opened.value
        report.wait_for_load_state("load")
        assert report.title() == f"Transaction report {day}"
        on_day = query(
            s.postgres,
            """SELECT count(*) FROM transactions WHERE ("timestamp" AT TIME ZONE 'UTC')::date = %s""",
            (day,),
        )[0][0]
        assert report.locator("p.note").first.inner_text().startswith(f"{on_day:,} transactions")
        report.screenshot(path=str(artifact("airflow-6-report.png")))

        # 6. Reports in the menu lists every report.
        page.get_by_role("link", name="Reports").click()
        frame = page.frame_locator("iframe").first
        frame.get_by_role("link", name=day).wait_for()
        _shot(page, "7-reports-menu")

        # Signed out, the reports are not served: the sign-in page instead.
        anonymous = browser.new_page()
        anonymous.goto(f"{af.url}/txmon/reports/{day}/report.html")
        assert "/auth/login" in anonymous.url

        # data_cleanup never ran: the rows RETENTION_DAYS=90 would delete are all still there.
        assert _api(page, f"{af.url}/api/v2/dags/data_cleanup/dagRuns")["total_entries"] == 0
    assert query(s.postgres, "SELECT count(*) FROM transactions WHERE account_id = 'ACC-OLD'") == [(2,)]
