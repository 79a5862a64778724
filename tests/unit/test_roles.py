"""The roles definition and the SQL rendered from it, without a server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from psycopg2 import sql

from utils import roles
from utils.errors import ConfigError
from utils.schema import MIGRATIONS_DIR

NAMES = roles.RoleNames(owner="txmon_owner", app="txmon_app")


def render(q: sql.Composable) -> str:
    """psycopg2 needs a connection to quote; this is enough for our statements (no literals)."""
    if isinstance(q, sql.Composed):
        return "".join(render(part) for part in q.seq)
    if isinstance(q, sql.SQL):
        return q.string
    if isinstance(q, sql.Identifier):
        return ".".join('"' + s.replace('"', '""') + '"' for s in q.strings)
    raise TypeError(f"unexpected {q!r}")


def migration_tables() -> set[str]:
    text = "\n".join(p.read_text() for p in sorted(MIGRATIONS_DIR.glob("*.sql")))
    # Not a table's partitions (migration 090): roles reach their rows through the parent.
    return set(
        re.findall(
            r"(?im)^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)\b\"?(?!\s+PARTITION\s+OF)", text
        )
    )


def test_every_table_the_migrations_create_has_a_line() -> None:
    created = migration_tables()
    assert {"transactions", "alerts", "rejected_transactions", "daily_summary"} <= created  # parsed
    # schema_migrations is created by the runner itself, not by a migration file.
    assert set(roles.APP_TABLE_PRIVILEGES) == created | {"schema_migrations"}


def test_the_app_role_only_adds_to_the_audit_trail_and_only_reads_history_and_rule_sets() -> None:
    privileges = dict(roles.APP_TABLE_PRIVILEGES)
    assert privileges.pop("schema_migrations") == ("SELECT",)
    for table in ("rule_set_versions", "rule_set_active", "rule_set_activations", "retention_policy"):
        assert privileges.pop(table) == ("SELECT",)
    for table in (
        "transactions",
        "alerts",
        "rejected_transactions",
        "transaction_ids",
        "rule_set_applied",
        "topic_partition_counts",
    ):
        assert privileges.pop(table) == ("SELECT", "INSERT")  # never changed, never deleted
    for table in ("consumer_offsets", "dlq_progress", "stored_positions"):
        assert privileges.pop(table) == ("SELECT", "INSERT", "UPDATE")  # advanced, never deleted
    for table in ("console_users", "console_sessions", "case_links", "case_events"):
        assert privileges.pop(table) == ()  # the console's own tables: none of the pipeline's business
    for table in ("cases", "case_alerts"):
        assert privileges.pop(table) == ("SELECT",)  # analysts' verdicts, read as labels
    assert set(privileges.values()) == {("SELECT", "INSERT", "UPDATE", "DELETE")}  # the DAGs' tables


def test_the_retention_role_deletes_only_through_the_function() -> None:
    """No DELETE privilege at all: what it may delete is what purge_expired() (migration 070)
    deletes, rows older than the owner's retention policy."""
    assert dict(roles.RETENTION_TABLE_PRIVILEGES) == {
        "transactions": ("SELECT",),
        "rejected_transactions": ("SELECT",),
        "pipeline_metrics": ("SELECT",),
        "retention_policy": ("SELECT",),
    }
    tables = ["alerts", "transactions", "retention_policy"]
    statements = [render(s) for s in roles.table_statements("app", tables, "purge")]
    assert statements[-7:] == [
        'GRANT USAGE ON SCHEMA "public" TO "purge"',
        'REVOKE ALL ON TABLE "public"."alerts" FROM "purge"',  # cascaded from transactions
        'REVOKE ALL ON TABLE "public"."retention_policy" FROM "purge"',
        'GRANT SELECT ON TABLE "public"."retention_policy" TO "purge"',
        'REVOKE ALL ON TABLE "public"."transactions" FROM "purge"',
        'GRANT SELECT ON TABLE "public"."transactions" TO "purge"',
        'GRANT EXECUTE ON FUNCTION "public".purge_expired(text, integer) TO "purge"',
    ]
    assert not any("DELETE" in s and '"purge"' in s for s in statements)
    names = roles.RoleNames(owner="o", app="a", retention="r")
    assert [render(s) for s in roles.database_statements("db", names)][-2:] == [
        'REVOKE ALL ON DATABASE "db" FROM "r"',
        'GRANT CONNECT ON DATABASE "db" TO "r"',
    ]


@pytest.mark.parametrize("attributes", [roles.OWNER_ATTRIBUTES, roles.APP_ATTRIBUTES])
def test_neither_role_may_do_anything_cluster_wide(attributes: tuple[str, ...]) -> None:
    # The strictest of what Compose's init script, the native stack and the runner each had:
    # the native owner used to have CREATEDB.
    assert set(attributes) == {
        "LOGIN", "NOSUPERUSER", "NOCREATEDB", "NOCREATEROLE", "NOREPLICATION", "NOBYPASSRLS",
    }  # fmt: skip


def test_role_statement_creates_or_alters_with_the_password_as_a_parameter() -> None:
    created = render(roles.role_statement('we"ird', roles.APP_ATTRIBUTES, exists=False))
    assert created == (
        'CREATE ROLE "we""ird" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS '
        "PASSWORD %s"
    )
    altered = render(roles.role_statement("txmon_app", roles.APP_ATTRIBUTES, exists=True))
    assert altered.startswith('ALTER ROLE "txmon_app" WITH LOGIN ')


def test_database_statements_give_it_to_the_owner_and_let_only_the_app_role_in() -> None:
    assert [render(s) for s in roles.database_statements("transactions", NAMES)] == [
        'ALTER DATABASE "transactions" OWNER TO "txmon_owner"',
        'REVOKE ALL ON DATABASE "transactions" FROM PUBLIC, "txmon_app"',
        'GRANT CONNECT, TEMPORARY ON DATABASE "transactions" TO "txmon_app"',
    ]
    assert render(roles.create_database_statement("transactions", "txmon_owner")) == (
        'CREATE DATABASE "transactions" OWNER "txmon_owner" ENCODING \'UTF8\''
    )


def test_table_statements_revoke_then_grant_each_listed_table_that_exists() -> None:
    statements = [
        render(s) for s in roles.table_statements("txmon_app", ["alerts", "schema_migrations", "other"])
    ]
    assert statements == [
        'GRANT USAGE ON SCHEMA "public" TO "txmon_app"',
        'REVOKE ALL ON ALL SEQUENCES IN SCHEMA "public" FROM "txmon_app"',
        'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "public" TO "txmon_app"',
        'REVOKE ALL ON TABLE "public"."alerts" FROM "txmon_app"',
        'GRANT SELECT, INSERT ON TABLE "public"."alerts" TO "txmon_app"',
        'REVOKE ALL ON TABLE "public"."schema_migrations" FROM "txmon_app"',
        'GRANT SELECT ON TABLE "public"."schema_migrations" TO "txmon_app"',
    ]  # "other" is not in the definition: nothing granted on it


def test_one_line_changes_one_tables_privileges(monkeypatch: pytest.MonkeyPatch) -> None:
    before = [render(s) for s in roles.table_statements("app", roles.APP_TABLE_PRIVILEGES)]
    monkeypatch.setattr(roles, "APP_TABLE_PRIVILEGES", {**roles.APP_TABLE_PRIVILEGES, "alerts": ("SELECT",)})
    after = [render(s) for s in roles.table_statements("app", roles.APP_TABLE_PRIVILEGES)]
    changed = [(b, a) for b, a in zip(before, after, strict=True) if a != b]
    assert changed == [
        (
            'GRANT SELECT, INSERT ON TABLE "public"."alerts" TO "app"',
            'GRANT SELECT ON TABLE "public"."alerts" TO "app"',
        )
    ]


@pytest.mark.parametrize(
    ("owner", "app", "message"),
    [
        ("same", "same", "must differ"),
        ("", "txmon_app", "both need a name"),
        ("postgres", "txmon_app", "superuser"),
    ],
)
def test_role_names_are_checked(owner: str, app: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        roles.RoleNames(owner=owner, app=app)
    with pytest.raises(ConfigError, match="its own"):
        roles.RoleNames(owner="o", app="a", retention="a")


def test_provision_cli_names_the_missing_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TXMON_ENV_FILE", str(tmp_path / "none.env"))
    for name in ("POSTGRES_SUPERUSER_PASSWORD", "POSTGRES_PASSWORD", "POSTGRES_MIGRATION_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POSTGRES_MIGRATION_USER", "txmon_owner")
    monkeypatch.setenv("POSTGRES_PASSWORD", "app-secret")
    assert roles.main(["provision", "--wait", "0"]) == 2
    err = capsys.readouterr().err
    assert "POSTGRES_SUPERUSER_PASSWORD" in err and "POSTGRES_MIGRATION_PASSWORD" in err
    assert "app-secret" not in err and "POSTGRES_PASSWORD," not in err


def test_the_console_role_reads_the_pipeline_and_writes_only_its_own_tables() -> None:
    console = dict(roles.CONSOLE_TABLE_PRIVILEGES)
    own = {"console_users", "console_sessions", "cases", "case_alerts", "case_links", "case_events"}
    pipeline = set(roles.APP_TABLE_PRIVILEGES) - own
    assert all(console[t] == ("SELECT",) for t in pipeline & console.keys())
    assert own <= console.keys()
    assert console["case_events"] == ("SELECT", "INSERT")  # a case's history: added to, never changed
    assert set(console) <= migration_tables() | {"schema_migrations"}
    statements = [render(s) for s in roles.table_statements("app", ["alerts", "case_events"], console="cons")]
    assert 'GRANT SELECT ON TABLE "public"."alerts" TO "cons"' in statements
    assert 'GRANT SELECT, INSERT ON TABLE "public"."case_events" TO "cons"' in statements
    assert 'GRANT USAGE, SELECT ON SEQUENCE "public"."case_events_event_id_seq" TO "cons"' in statements
    assert not any("cons" in render(s) for s in roles.table_statements("app", ["alerts"]))


def test_the_console_role_must_be_its_own() -> None:
    with pytest.raises(ConfigError, match="POSTGRES_CONSOLE_USER"):
        roles.RoleNames(owner="o", app="a", console="a")
