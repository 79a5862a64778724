"""`python -m consumer.rulesets` against a real PostgreSQL: show, validate, publish, history,
activate; versions are immutable, the app role only reads, only named people (members of
txmon_rules_admin) publish, the record shows their login, errors name the fix."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest
import yaml

from consumer.rules import RULES
from consumer.rulesets import __main__ as cli
from consumer.rulesets import document, store
from consumer.rulesets.model import RuleSet
from tests.support import query
from utils.config import PostgresSettings, RuleThresholds, Settings, settings_to_env
from utils.database import connect

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli_env(
    fresh_db: PostgresSettings, monkeypatch: pytest.MonkeyPatch, as_person: Callable[[str], None]
) -> dict[str, str]:
    """The CLI's environment: the test database, thresholds from the code defaults but one,
    logged in as txmon_test_alice (PGUSER/PGPASSWORD) for publish and activate."""
    settings = dataclasses.replace(Settings(), postgres=fresh_db, rules=RuleThresholds(velocity_count=11))
    env = {**settings_to_env(settings), "TXMON_ENV_FILE": os.devnull}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def edited(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def active_row(pg: PostgresSettings) -> tuple[int, str] | None:
    with contextlib.closing(connect(pg)) as conn, conn.cursor() as cur:
        cur.execute("SELECT version, reason FROM rule_set_active")
        row = cur.fetchone()
    return None if row is None else (row[0], row[1])


def test_show_before_any_publish_prints_the_environment(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], fresh_db: PostgresSettings
) -> None:
    code, out, _ = run(capsys, "show")
    assert code == 0
    assert "Not published yet" in out and "version: null" in out
    shown = document.load(out)
    assert shown == RuleSet.from_thresholds(RuleThresholds(velocity_count=11))
    assert active_row(fresh_db) is None  # show never writes
    code, out, _ = run(capsys, "history")
    assert code == 0 and "no version published" in out


def test_publish_history_show_and_roll_back(
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    fresh_db: PostgresSettings,
    tmp_path: Path,
    as_person: Callable[[str], None],
) -> None:
    _, shown, _ = run(capsys, "show")
    payroll = write(tmp_path, "payroll.yaml", edited(shown, "velocity_count: 11", "velocity_count: 20"))
    code, out, _ = run(capsys, "publish", str(payroll), "--reason", "payroll day")
    assert code == 0, out
    assert "stored the environment's settings as version 1" in out and "published version 2" in out
    assert active_row(fresh_db) == (2, "payroll day")

    code, out, _ = run(capsys, "show")
    assert code == 0
    data = yaml.safe_load(out)
    assert (data["version"], data["published_by"], data["reason"]) == (2, "txmon_test_alice", "payroll day")
    assert data["published_at"]
    assert data["rules"]["velocity"]["parameters"]["velocity_count"] == 20
    code, out, _ = run(capsys, "show", "--version", "1")
    assert yaml.safe_load(out)["rules"]["velocity"]["parameters"]["velocity_count"] == 11

    # the same file again: nothing new
    code, out, _ = run(capsys, "publish", str(payroll), "--reason", "again")
    assert code == 0 and "identical to the active version 2" in out

    as_person("txmon_test_bob")
    code, out, _ = run(capsys, "activate", "1", "--user", "txmon_test_bob", "--reason", "payroll is over")
    assert code == 0 and "version 1 is active" in out
    assert active_row(fresh_db) == (1, "payroll is over")
    code, out, _ = run(capsys, "activate", "1")
    assert code == 0 and "already active" in out

    code, out, _ = run(capsys, "history")
    assert code == 0
    versions, activations = out.split("activations:")
    assert "*    1" in versions and "payroll day" in versions and "txmon_test_alice" in versions
    lines = activations.strip().splitlines()
    assert len(lines) == 3  # v1 (seeded), v2, back to v1
    assert "version 1 by txmon_test_bob: payroll is over" in lines[0]
    assert "version 2 by txmon_test_alice" in lines[1]
    # The server wrote who, from the session: the same login in db_role, for every row.
    rows = query(fresh_db, "SELECT activated_by, db_role FROM rule_set_activations ORDER BY activation_id")
    assert rows == [("txmon_test_alice",) * 2, ("txmon_test_alice",) * 2, ("txmon_test_bob",) * 2]


def test_a_refused_file_changes_nothing(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], fresh_db: PostgresSettings, tmp_path: Path
) -> None:
    _, shown, _ = run(capsys, "show")
    good = write(tmp_path, "good.yaml", shown)
    assert run(capsys, "publish", str(good), "--reason", "first")[0] == 0
    before = active_row(fresh_db)
    text = edited(shown, "velocity_window_s: 60.0", "velocity_window_s: -5")
    bad = write(tmp_path, "bad.yaml", text)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "velocity_window_s: -5" in s)
    for command in (["validate", str(bad)], ["publish", str(bad), "--reason", "broken"]):
        code, out, err = run(capsys, *command)
        assert code == 1 and out == ""
        assert f"{bad}:{line}:" in err and "rules.velocity.parameters.velocity_window_s" in err
        assert "Fix: write a number > 0" in err
    assert active_row(fresh_db) == before
    code, out, _ = run(capsys, "validate", str(good))
    assert code == 0 and f"valid ({len(RULES)} of {len(RULES)} rules enabled)" in out


def test_unknown_version_and_missing_file_are_refused(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "activate", "3")
    assert code == 1 and "nothing has been published yet" in err
    _, shown, _ = run(capsys, "show")
    run(capsys, "publish", str(write(tmp_path, "f.yaml", shown)), "--reason", "first")
    code, _, err = run(capsys, "show", "--version", "9")
    assert code == 1 and "versions are 1 to 1" in err
    code, _, err = run(capsys, "validate", str(tmp_path / "nope.yaml"))
    assert code == 1 and "cannot read" in err


def test_the_app_role_may_read_but_never_publish(
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    fresh_db: PostgresSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert fresh_db.migration_user and fresh_db.migration_user != fresh_db.user
    _, shown, _ = run(capsys, "show")
    path = write(tmp_path, "f.yaml", shown)
    monkeypatch.setenv("PGPASSWORD", fresh_db.password)
    code, _, err = run(capsys, "publish", str(path), "--reason", "as the app role", "--user", fresh_db.user)
    assert code == 2 and "add-rules-admin" in err and "txmon_rules_admin" in err
    with contextlib.closing(connect(fresh_db)) as conn, conn.cursor() as cur:
        for statement in (
            "INSERT INTO rule_set_versions (version, document, checksum, published_by, reason) "
            "VALUES (1, '{}', 'x', 'me', 'no')",
            "INSERT INTO rule_set_activations (version, activated_at, reason) VALUES (1, now(), 'no')",
            "DELETE FROM rule_set_activations",
        ):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(statement)
            conn.rollback()
        cur.execute("SELECT count(*) FROM rule_set_versions")  # but it reads
        assert cur.fetchone() == (0,)


def test_versions_and_activations_are_insert_only_even_for_the_owner(
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    fresh_db: PostgresSettings,
    tmp_path: Path,
    rules_admins: dict[str, str],
) -> None:
    _, shown, _ = run(capsys, "show")
    run(
        capsys,
        "publish",
        str(write(tmp_path, "f.yaml", edited(shown, "velocity_count: 11", "velocity_count: 3"))),
        "--reason",
        "r",
    )
    with contextlib.closing(connect(fresh_db, migration=True)) as conn, conn.cursor() as cur:
        for statement in (
            "UPDATE rule_set_versions SET reason = 'rewritten' WHERE version = 1",
            "DELETE FROM rule_set_versions WHERE version = 2",
            "TRUNCATE rule_set_versions CASCADE",
            "UPDATE rule_set_activations SET reason = 'rewritten'",
            "DELETE FROM rule_set_activations",
        ):
            with pytest.raises(psycopg2.Error, match="insert-only"):
                cur.execute(statement)
            conn.rollback()
    # The people who publish may add and nothing more: no UPDATE, DELETE or TRUNCATE privilege,
    # and they own nothing, so not even the triggers stand between them and the history.
    person = dataclasses.replace(fresh_db, user="txmon_test_alice", password=rules_admins["txmon_test_alice"])
    with contextlib.closing(connect(person)) as conn, conn.cursor() as cur:
        for statement in (
            "UPDATE rule_set_versions SET reason = 'rewritten' WHERE version = 1",
            "DELETE FROM rule_set_versions WHERE version = 2",
            "TRUNCATE rule_set_activations",
            "DELETE FROM rule_set_activations",
            "DROP TRIGGER rule_set_versions_insert_only ON rule_set_versions",
            "DELETE FROM alerts",
        ):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(statement)
            conn.rollback()
        cur.execute(
            "SELECT count(*) FROM pg_tables WHERE tableowner = current_user OR tableowner IN "
            "(SELECT rolname FROM pg_roles WHERE pg_has_role(current_user, oid, 'MEMBER'))"
        )
        assert cur.fetchone() == (0,), "a rules admin owns no table"


def test_the_owner_cannot_publish_and_a_typed_name_is_refused(
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    fresh_db: PostgresSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    as_person: Callable[[str], None],
) -> None:
    _, shown, _ = run(capsys, "show")
    path = write(tmp_path, "f.yaml", shown)
    # The owner role (which could drop triggers) is refused as a publisher, with the fix.
    monkeypatch.setenv("PGPASSWORD", fresh_db.migration_password)
    code, _, err = run(
        capsys, "publish", str(path), "--reason", "as the owner", "--user", fresh_db.migration_user
    )
    assert code == 2, err
    assert f"role {fresh_db.migration_user} may not change rule sets" in err
    assert "python -m utils.roles add-rules-admin NAME" in err
    with (
        contextlib.closing(connect(fresh_db, migration=True)) as conn,
        conn.cursor() as cur,
        pytest.raises(psycopg2.errors.InsufficientPrivilege, match="named person"),
    ):
        cur.execute("INSERT INTO rule_set_activations (version, activated_at, reason) VALUES (1, now(), 'x')")
    # A name typed on the command line is refused: the record shows the login.
    code, _, err = run(capsys, "publish", str(path), "--reason", "r", "--by", "somebody-else")
    assert code == 1 and "--by is gone" in err
    as_person("txmon_test_alice")
    assert run(capsys, "publish", str(path), "--reason", "first")[0] == 0
    assert query(fresh_db, "SELECT published_by, db_role FROM rule_set_versions") == [
        ("txmon_test_alice", "txmon_test_alice")
    ]


def test_stored_versions_read_back_equal_and_alerts_have_a_version_column(
    cli_env: dict[str, str], fresh_db: PostgresSettings, rules_admins: dict[str, str]
) -> None:
    environment = RuleSet.from_thresholds(RuleThresholds())
    candidate = document.load(edited(document.dump(environment), "severity: medium", "severity: low"))
    person = dataclasses.replace(fresh_db, user="txmon_test_alice", password=rules_admins["txmon_test_alice"])
    with contextlib.closing(connect(person)) as conn:
        with conn, conn.cursor() as cur:
            cur.execute(  # a name sent by the client is overwritten by the server's session_user
                "INSERT INTO rule_set_versions (version, document, checksum, published_by, reason) "
                "VALUES (1, %s, %s, 'somebody-else', %s)",
                (json.dumps(environment.document()), environment.checksum(), store.INITIAL_REASON),
            )
            cur.execute(
                "INSERT INTO rule_set_activations (version, activated_at, reason) VALUES (1, now(), 'x')"
            )
            done = store.publish(cur, candidate, reason="lower", environment=environment)
        assert (done.version, done.created, done.seeded) == (2, True, False)
        with conn.cursor() as cur:
            assert store.active_version(cur) == 2
            got = store.active(cur, RuleThresholds())
            assert got is not None and got.version == 2 and got.published_by == "txmon_test_alice"
            assert store.get(cur, 1, RuleThresholds()).published_by == "txmon_test_alice"
            assert (
                dataclasses.replace(got, version=None, published_by=None, published_at=None, reason=None)
                == candidate
            )
            assert store.get(cur, 1, RuleThresholds()).checksum() == environment.checksum()
    assert query(
        fresh_db,
        """SELECT is_nullable, data_type FROM information_schema.columns
           WHERE table_name = 'alerts' AND column_name = 'rule_set_version'""",
    ) == [("YES", "integer")]


def test_the_entry_point_runs(cli_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "consumer.rulesets", "show"],
        cwd=REPO,
        env={**os.environ, **cli_env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert document.load(proc.stdout).rules["velocity"].parameters["velocity_count"] == 11
