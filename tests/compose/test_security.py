"""The Compose stack's locked doors, tried from the host as a reviewer would (issue 19).

- The transactions DB's published port refuses a login without TLS, whoever it is (the app role,
  the superuser), and takes one with TLS whose certificate and name check out against the stack's
  CA (verify-full); every connection the containers hold is TLS, and passwords are SCRAM.
- A rule-set change published by a named rules admin records that login (the server's
  session_user), and the alert TxmonRuleSetActivated naming them travels consumer metric ->
  Prometheus -> Alertmanager -> the webhook receiver, which the test reads back.

Runs before test_stack.py (file order) on the same stack, while every consumer is up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.compose import REPO_ROOT, Project
from tests.compose.conftest import MEASUREMENTS, host_pg_env, psql_client, wait_until
from utils import tls

pytestmark = pytest.mark.timeout(1800)

ADMIN = "alice_rules"


def _psql(
    project: Project, user: str, password: str, sql: str, **libpq: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            psql_client(),
            "--no-psqlrc",
            "--tuples-only",
            "--no-align",
            "--set=ON_ERROR_STOP=1",
            "--host=127.0.0.1",
            f"--port={project.host_port('POSTGRES_HOST_PORT')}",
            f"--username={user}",
            "--dbname=postgres" if user == "postgres" else f"--dbname={project.variables()['POSTGRES_DB']}",
            f"--command={sql}",
        ],
        env=host_pg_env(project, PGPASSWORD=password, **libpq),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_published_postgres_port_refuses_a_login_without_tls(
    project: Project, variables: dict[str, str]
) -> None:
    for user, password in (
        (variables["POSTGRES_USER"], variables["POSTGRES_PASSWORD"]),
        ("postgres", variables["POSTGRES_SUPERUSER_PASSWORD"]),
    ):
        # The right password, without TLS: pg_hba.conf's reject line, before any password is asked.
        refused = _psql(project, user, password, "SELECT 1", PGSSLMODE="disable")
        assert refused.returncode != 0, f"{user} logged in without TLS"
        assert "pg_hba.conf rejects connection" in refused.stderr and "no encryption" in refused.stderr, (
            refused.stderr
        )


def test_tls_login_with_verify_full_works_and_every_container_uses_tls(
    project: Project, variables: dict[str, str], tmp_path: Path
) -> None:
    mine = _psql(
        project,
        variables["POSTGRES_USER"],
        variables["POSTGRES_PASSWORD"],
        "SELECT ssl, version, current_setting('password_encryption') FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    assert mine.returncode == 0, mine.stderr
    ssl, version, encryption = mine.stdout.strip().split("|")
    assert (ssl, encryption) == ("t", "scram-sha-256") and version.startswith("TLSv1."), mine.stdout
    # Every network session of the pipeline's roles open now (consumers, console, Airflow tasks)
    # is TLS (none could be otherwise: the containers work, and the server rejects plain logins),
    # and every stored password is a SCRAM verifier.
    sessions = _psql(
        project,
        "postgres",
        variables["POSTGRES_SUPERUSER_PASSWORD"],
        """SELECT count(*) FILTER (WHERE NOT s.ssl), count(*),
                  (SELECT count(*) FROM pg_authid WHERE rolpassword IS NOT NULL AND rolpassword NOT LIKE 'SCRAM-SHA-256$%')
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
            WHERE a.client_addr IS NOT NULL AND a.usename <> 'postgres'""",
    )
    assert sessions.returncode == 0, sessions.stderr
    plain, total, not_scram = (int(x) for x in sessions.stdout.strip().split("|"))
    assert plain == 0 and not_scram == 0, sessions.stdout
    # A client trusting another CA refuses the server: verify-full is a check, not a formality.
    other_ca = tmp_path / "other-ca"
    tls.ensure_authority(other_ca, common_name="someone else's CA")
    stranger = _psql(
        project,
        variables["POSTGRES_USER"],
        variables["POSTGRES_PASSWORD"],
        "SELECT 1",
        PGSSLROOTCERT=str(other_ca / tls.CA_CERT),
    )
    assert stranger.returncode != 0 and "certificate verify failed" in stranger.stderr, stranger.stderr
    assert "password authentication" not in stranger.stderr  # refused before any password
    MEASUREMENTS.append(
        f"PostgreSQL: {total} container sessions of the pipeline's roles, all TLS; host login {version}"
    )


def _host_python(
    project: Project, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    """The project's CLI on the host, against the stack's published port, over TLS."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO_ROOT,
        env=host_pg_env(
            project,
            TXMON_ENV_FILE=str(project.env_file),
            POSTGRES_HOST="127.0.0.1",
            POSTGRES_PORT=str(project.host_port("POSTGRES_HOST_PORT")),
            POSTGRES_SSLMODE="verify-full",
            POSTGRES_SSLROOTCERT=str(project.ca_path()),
            LOG_FORMAT="text",
            **env,
        ),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _delivered(project: Project, alertname: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{project.host_port('ALERT_RECEIVER_HOST_PORT')}/alerts?alertname={alertname}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return list(json.loads(response.read()))


def test_rule_set_change_by_a_named_admin_is_recorded_and_its_alert_delivered(
    project: Project, variables: dict[str, str], psql: Any, tmp_path: Path
) -> None:
    password = "a-long-password-for-alice-0123456789"
    added = _host_python(project, "utils.roles", "add-rules-admin", ADMIN, stdin=password + "\n")
    assert added.returncode == 0, added.stdout + added.stderr

    shown = _host_python(project, "consumer.rulesets", "show")
    assert shown.returncode == 0, shown.stderr
    document = yaml.safe_load(shown.stdout)
    parameters = document["rules"]["velocity"]["parameters"]
    parameters["velocity_count"] = int(parameters["velocity_count"]) + 1
    path = tmp_path / "tighter.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))

    published_at = time.monotonic()
    published = _host_python(
        project,
        "consumer.rulesets",
        "publish",
        str(path),
        "--reason",
        "compose test: velocity one higher",
        "--user",
        ADMIN,
        PGPASSWORD=password,
    )
    assert published.returncode == 0, published.stdout + published.stderr
    ((version, activated_by, db_role),) = psql(
        "SELECT version, activated_by, db_role FROM rule_set_activations ORDER BY activation_id DESC LIMIT 1;"
    )
    assert (activated_by, db_role) == (ADMIN, ADMIN)

    def arrived() -> list[dict[str, Any]]:
        return [
            a
            for a in _delivered(project, "TxmonRuleSetActivated")
            if a["status"] == "firing"
            and a["labels"].get("activated_by") == ADMIN
            and a["labels"].get("version") == version
        ]

    (alert, *_) = wait_until(
        arrived, 180, f"TxmonRuleSetActivated for {ADMIN}'s version {version} at the receiver", 3
    )
    delay = time.monotonic() - published_at
    assert alert["annotations"]["summary"] == (
        f"{ADMIN} activated rule-set version {version} for group {variables['KAFKA_CONSUMER_GROUP']}"
    )
    # The second place it goes: the receiver's log.
    logs = project.run("logs", "--no-color", "alert-receiver", capture=True).stdout
    assert f'"activated_by": "{ADMIN}"' in logs, logs[-2000:]
    MEASUREMENTS.append(
        f"rule-set version {version} published by {ADMIN}: alert at the receiver {delay:.0f}s later"
    )
