"""Least privilege and no secrets in the code.

The pipeline logs in as the app role (POSTGRES_USER); migrations run as the owner role
(POSTGRES_MIGRATION_USER). The app role may read and write rows and nothing else: it owns no
table, cannot change the schema or the migration history, and is no superuser; the audit tables
(transactions, alerts, rejected_transactions) it may only read and add to. Only the retention
role (POSTGRES_RETENTION_USER) deletes old audit rows, and it may do nothing else. The consumer works
with only the app role's credentials, as in the Compose stack (where it never gets the owner's).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest

from tests.support import REPO, ConsumerProcess, produce, query, scalar, wait_until
from utils import schema
from utils.config import PostgresSettings, Settings

# --------------------------------------------------------------------------------------------
# The app role in the database
# --------------------------------------------------------------------------------------------


@pytest.fixture
def app_conn(fresh_db: PostgresSettings) -> Iterator[psycopg2.extensions.connection]:
    """A connection as the pipeline's app role (not the owner)."""
    assert fresh_db.migration_user and fresh_db.migration_user != fresh_db.user, (
        "the test stack must give the app role and the owner role different names"
    )
    conn = psycopg2.connect(fresh_db.dsn())
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()
        # The server process of a closed session lingers a moment, and the owner role (which
        # drops the test database) may not terminate the app role's sessions.
        wait_until(lambda: scalar(fresh_db, _OTHER_SESSIONS) == 0, timeout=10, what="app session gone")


_OTHER_SESSIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


def test_app_role_is_not_privileged(
    app_conn: psycopg2.extensions.connection, fresh_db: PostgresSettings
) -> None:
    with app_conn.cursor() as cur:
        cur.execute(
            "SELECT current_user, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
            "FROM pg_roles WHERE rolname = current_user"
        )
        user, *flags = cur.fetchone()
        assert user == fresh_db.user
        assert flags == [False] * 5, flags
        cur.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user"
        )
        assert cur.fetchone()[0] == 0, "the app role owns tables"
        cur.execute("SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
                    "WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user)")  # fmt: skip
        assert cur.fetchone()[0] == 0, "the app role is a member of other roles"
    owners = {r[0] for r in query(fresh_db, "SELECT tableowner FROM pg_tables WHERE schemaname = 'public'")}
    assert owners == {fresh_db.migration_user}, owners


FORBIDDEN = (
    "CREATE TABLE evil (id int)",
    "CREATE VIEW evil AS SELECT 1",
    "CREATE FUNCTION evil() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE SCHEMA evil",
    "CREATE INDEX evil ON transactions (city)",
    "DROP TABLE transactions",
    "DROP TABLE alerts",
    "DROP TABLE rejected_transactions",
    "DROP TABLE schema_migrations",
    "ALTER TABLE transactions ADD COLUMN evil text",
    "ALTER TABLE transactions DROP CONSTRAINT transactions_amount_check",
    "ALTER TABLE alerts OWNER TO CURRENT_USER",
    "TRUNCATE transactions CASCADE",
    "TRUNCATE alerts",
    "TRUNCATE rejected_transactions",
    "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'evil', 'x')",
    "UPDATE schema_migrations SET checksum = 'x'",
    "DELETE FROM schema_migrations",
    # The audit trail is only added to: the consumer never changes or deletes what it stored.
    "UPDATE transactions SET amount = 0",
    "DELETE FROM transactions",
    "UPDATE alerts SET severity = 'low'",
    "DELETE FROM alerts",
    "UPDATE rejected_transactions SET reason = 'x'",
    "DELETE FROM rejected_transactions",
    "CREATE ROLE evil",
    "ALTER ROLE CURRENT_USER SUPERUSER",
    "CREATE DATABASE evil",
    "COPY transactions TO '/tmp/evil'",
)


def test_app_role_cannot_change_the_schema_or_the_migration_history(
    app_conn: psycopg2.extensions.connection, fresh_db: PostgresSettings
) -> None:
    allowed = []
    with app_conn.cursor() as cur:
        for statement in FORBIDDEN:
            try:
                cur.execute(statement)
            except psycopg2.errors.InsufficientPrivilege:
                continue
            allowed.append(statement)
    assert not allowed, f"the app role was allowed to run: {allowed}"
    tables = {r[0] for r in query(fresh_db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"transactions", "alerts", "rejected_transactions", "schema_migrations"} <= tables
    assert scalar(fresh_db, "SELECT count(*) FROM schema_migrations WHERE name = 'evil'") == 0


def test_app_role_reads_and_writes_rows(app_conn: psycopg2.extensions.connection) -> None:
    app_conn.autocommit = False
    with app_conn.cursor() as cur:
        cur.execute(
            "INSERT INTO transactions (transaction_id, account_id, transaction_type, amount, currency, "
            '"timestamp", channel, country, schema_version, kafka_topic, kafka_partition, kafka_offset) '
            "VALUES ('sec-1', 'acct', 'purchase', 1.50, 'EUR', now(), 'pos', 'DE', 1, 't', 0, 0)"
        )
        cur.execute("SELECT amount FROM transactions WHERE transaction_id = 'sec-1'")
        assert float(cur.fetchone()[0]) == 1.5
        cur.execute("SELECT count(*) FROM schema_migrations")  # reading the history is fine
        assert cur.fetchone()[0] >= 1
        # The consumer's staging table is a temp table: allowed without CREATE on the schema.
        cur.execute("CREATE TEMP TABLE stage (LIKE transactions) ON COMMIT DROP")
    app_conn.rollback()


def test_the_retention_role_deletes_only_old_rows_and_alerts_go_with_their_transaction(
    app_conn: psycopg2.extensions.connection, fresh_db: PostgresSettings
) -> None:
    """It holds no DELETE privilege: purge_expired() (a SECURITY DEFINER function) deletes what is
    older than the owner's retention policy and nothing else, whatever the caller asks."""
    schema.set_retention_days(fresh_db, 30)
    with app_conn.cursor() as cur:
        for tid, age_days in (("sec-old", 31), ("sec-young", 29)):
            cur.execute(
                "INSERT INTO transactions (transaction_id, account_id, transaction_type, amount, currency, "
                '"timestamp", channel, country, schema_version, kafka_topic, kafka_partition, kafka_offset, '
                "processed_at) VALUES (%(t)s, 'acct', 'purchase', 1.50, 'EUR', now() - make_interval(days => %(d)s), "
                "'pos', 'DE', 1, 't', 0, %(d)s, now() - make_interval(days => %(d)s))",
                {"t": tid, "d": age_days},
            )
            cur.execute(
                "INSERT INTO alerts (transaction_id, account_id, alert_type, severity, alert_message) "
                "VALUES (%s, 'acct', 'high_amount', 'high', 'x')",
                (tid,),
            )
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("SELECT purge_expired('transactions', 100)")  # the app role may not even call it
    conn = psycopg2.connect(fresh_db.as_retention().dsn())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in (
                "INSERT INTO transactions (transaction_id) VALUES ('x')",
                "UPDATE transactions SET amount = 0",
                "DELETE FROM transactions WHERE transaction_id = 'sec-young'",
                "DELETE FROM transactions",
                "DELETE FROM rejected_transactions",
                "DELETE FROM alerts",
                "SELECT * FROM alerts",
                "DELETE FROM daily_summary",
                "DELETE FROM consumer_offsets",
                "UPDATE retention_policy SET days = 1",
                "SELECT purge_expired('daily_summary', 100)",
            ):
                with pytest.raises((psycopg2.errors.InsufficientPrivilege, psycopg2.errors.RaiseException)):
                    cur.execute(statement)
            cur.execute("SELECT purge_expired('transactions', 100)")
            assert cur.fetchone()[0] == 1
            cur.execute("SELECT purge_expired('transactions', 100)")
            assert cur.fetchone()[0] == 0, "a second call finds nothing more that is old"
    finally:
        conn.close()
    assert query(fresh_db, "SELECT transaction_id FROM transactions") == [("sec-young",)]
    assert query(fresh_db, "SELECT transaction_id FROM alerts") == [("sec-young",)]


def test_consumer_runs_with_only_the_app_role(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """As in Compose: the consumer process gets the app role's credentials and nothing else
    (POSTGRES_MIGRATION_USER/PASSWORD empty); the schema was migrated by the owner beforehand."""
    s = settings_factory(max_poll_records=500)
    app_only = dataclasses.replace(s.postgres, migration_user="", migration_password="")
    produce(s, 1000, seed=77)
    proc = ConsumerProcess(
        dataclasses.replace(s, postgres=app_only), tmp_path / "c.log", "--max-idle-seconds", "3"
    )
    try:
        rc = proc.wait(120)
    finally:
        if proc.proc.poll() is None:
            proc.kill()
    assert rc == 0, proc.output()[-3000:]
    assert scalar(s.postgres, "SELECT count(*) FROM transactions") == 1000
    # Nothing was created or changed by the app role along the way.
    owners = {r[0] for r in query(s.postgres, "SELECT tableowner FROM pg_tables WHERE schemaname = 'public'")}
    assert owners == {s.postgres.migration_user}, owners


# --------------------------------------------------------------------------------------------
# No credentials in the code
# --------------------------------------------------------------------------------------------

_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "tests", "airflow-data", "__pycache__", ".mypy_cache",
              ".ruff_cache", ".pytest_cache", ".hypothesis"}  # fmt: skip
# A secret-looking name assigned a quoted literal of 3+ characters that is not a ${...} reference.
_PY_SECRET = re.compile(
    r"""(?i)\b\w*(?:password|passwd|pwd|secret|token|api_?key|fernet_?key)\w*['"]?"""
    r"""\s*(?::\s*[A-Za-z_][\w\[\], |.]*)?[:=]\s*[rbuf]?(['"])(?!\$\{)[^'"\s$]{3,}\1"""
)
# Credentials inside a URL: scheme://user:password@host
_URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:(?!\$\{)[^@\s'\"$]{3,}@", re.IGNORECASE)
# docker-compose.yml: a secret-looking key must take its value from the environment (${...}) or be empty.
_COMPOSE_SECRET = re.compile(
    r"""^\s*-?\s*['"]?(?P<key>[A-Z0-9_]*(?:PASSWORD|SECRET|TOKEN|FERNET_KEY|API_KEY)[A-Z0-9_]*)['"]?\s*[:=]\s*(?P<value>.*?)\s*$""",
    re.IGNORECASE,
)


def _python_files() -> list[Path]:
    out = []
    for path in REPO.rglob("*.py"):
        if not _SKIP_DIRS.intersection(path.relative_to(REPO).parts):
            out.append(path)
    return out


def python_secret_findings(text: str) -> list[str]:
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if _PY_SECRET.search(line) or _URL_CREDENTIALS.search(line):
            found.append(f"{lineno}: {line.strip()}")
    return found


# Settings whose names say "password" but whose values are no secret (PostgreSQL's hash algorithm).
_COMPOSE_NOT_SECRETS = {"password_encryption"}


def compose_secret_findings(text: str) -> list[str]:
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        m = _COMPOSE_SECRET.match(line)
        value = m.group("value").strip("'\"") if m else ""
        literal = (
            m is not None
            and bool(value)
            and not value.startswith("${")
            and not value.startswith("/")  # files, e.g. *_FILE: /run/...
            and m.group("key").lower() not in _COMPOSE_NOT_SECRETS
        )
        in_url = _URL_CREDENTIALS.search(line) or re.search(
            r"""(?i)"password"\s*:\s*"(?!\$\{)[^"]{3,}""", line
        )
        if literal or in_url:
            found.append(f"{lineno}: {line.strip()}")
    return found


@pytest.mark.parametrize(
    ("text", "finds"),
    [
        ('password = "hunter22"', True),
        ("DB_PASSWORD='s3cr3t!'", True),
        ('conn = connect("postgresql://app:hunter22@db/x")', True),
        ('token: str = "abcdef"', True),
        ('password = os.environ["POSTGRES_PASSWORD"]', False),
        ('password: str = env("POSTGRES_PASSWORD", "", secret=True)', False),
        ("password=passwords[APP_ROLE]", False),
    ],
)
def test_python_secret_detector(text: str, finds: bool) -> None:
    assert bool(python_secret_findings(text)) is finds


@pytest.mark.parametrize(
    ("text", "finds"),
    [
        ("  POSTGRES_PASSWORD: hunter22", True),
        ('  AIRFLOW__CORE__FERNET_KEY: "abc123def"', True),
        ("  - POSTGRES_PASSWORD=hunter22", True),
        ("  url: postgresql://airflow:hunter22@db/airflow", True),
        ('    "password": "hunter22"}', True),
        ("  POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it}", False),
        ("  POSTGRES_PASSWORD:", False),
        ("  url: postgresql://airflow:${AIRFLOW_POSTGRES_PASSWORD:?x}@db/airflow", False),
        ("  # POSTGRES_PASSWORD: example in a comment", False),
        ("      - password_encryption=scram-sha-256", False),
        ("      - password=scram-sha-256", True),
    ],
)
def test_compose_secret_detector(text: str, finds: bool) -> None:
    assert bool(compose_secret_findings(text)) is finds


def test_no_credential_literals_in_python_code() -> None:
    files = _python_files()
    assert len(files) > 10, files  # the walk found the code
    findings = [
        f"{p.relative_to(REPO)}:{hit}" for p in files for hit in python_secret_findings(p.read_text())
    ]
    assert not findings, "credential literals in code:\n" + "\n".join(findings)


def test_no_credential_literals_in_compose() -> None:
    compose = REPO / "docker-compose.yml"
    findings = compose_secret_findings(compose.read_text())
    assert not findings, "credential literals in docker-compose.yml:\n" + "\n".join(findings)


_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET_KEY|API_KEY|JWT")


def test_env_example_secrets_are_placeholders() -> None:
    values: dict[str, str] = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        m = re.match(r"^\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            values[m.group(1)] = m.group(2).strip().strip("'\"")
    secrets = {k: v for k, v in values.items() if _SECRET_NAME.search(k)}
    assert {"POSTGRES_PASSWORD", "POSTGRES_MIGRATION_PASSWORD"} <= secrets.keys(), sorted(values)
    not_placeholders = {k: v for k, v in secrets.items() if not v.startswith("change-me")}
    assert not not_placeholders, (
        f"secrets in .env.example that are not change-me placeholders: {sorted(not_placeholders)}"
    )
    assert len(set(secrets.values())) == len(secrets), "two secrets share a placeholder: each must differ"
