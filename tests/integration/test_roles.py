"""The roles on a real server have exactly the privileges utils/roles.py lists: on the native
stack (provisioned by stack/postgres.py, tables granted by the migration runner) and through
`python -m utils.roles provision`, what Compose's db-roles service runs."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql

from stack.orchestrator import LocalStack
from utils import roles, schema
from utils.config import PostgresSettings

pytestmark = pytest.mark.integration

# pg_roles column of each role attribute keyword (NOFOO sets FOO's column to false).
ATTRIBUTE_COLUMNS = {
    "LOGIN": "rolcanlogin",
    "SUPERUSER": "rolsuper",
    "CREATEDB": "rolcreatedb",
    "CREATEROLE": "rolcreaterole",
    "REPLICATION": "rolreplication",
    "BYPASSRLS": "rolbypassrls",
}


def expected_attributes(attributes: tuple[str, ...]) -> dict[str, bool]:
    out = {}
    for word in attributes:
        name = word.removeprefix("NO") if word not in ATTRIBUTE_COLUMNS else word
        out[ATTRIBUTE_COLUMNS[name]] = word == name
    return out


def role_attributes(cur: psycopg2.extensions.cursor, role: str) -> dict[str, bool]:
    columns = sorted(ATTRIBUTE_COLUMNS.values())
    cur.execute(
        sql.SQL("SELECT {} FROM pg_roles WHERE rolname = %s").format(
            sql.SQL(", ").join(map(sql.Identifier, columns))
        ),
        (role,),
    )
    return dict(zip(columns, cur.fetchone(), strict=True))


def database_grants(cur: psycopg2.extensions.cursor, db: str) -> tuple[str, dict[str, set[str]]]:
    """(owner, {grantee: privileges}) for everyone but the owner; PUBLIC is 'PUBLIC'."""
    cur.execute(
        """SELECT pg_get_userbyid(d.datdba), coalesce(r.rolname, 'PUBLIC'), a.privilege_type
           FROM pg_database d CROSS JOIN LATERAL aclexplode(d.datacl) a
           LEFT JOIN pg_roles r ON r.oid = a.grantee
           WHERE d.datname = %s""",
        (db,),
    )
    rows = cur.fetchall()
    assert rows, f"database {db} has its default ACL: PUBLIC may connect"
    owner = rows[0][0]
    grants: dict[str, set[str]] = {}
    for _, grantee, privilege in rows:
        if grantee != owner:
            grants.setdefault(grantee, set()).add(privilege)
    return owner, grants


def relation_grants(
    cur: psycopg2.extensions.cursor, kinds: tuple[str, ...]
) -> dict[str, dict[str, set[str]]]:
    """{relation: {grantee: privileges}} in schema public, for everyone but the relation's owner."""
    cur.execute(
        """SELECT c.relname, coalesce(r.rolname, 'PUBLIC'), a.privilege_type
           FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
           LEFT JOIN pg_roles r ON r.oid = a.grantee
           WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = ANY(%s) AND a.grantee <> c.relowner""",
        (list(kinds),),
    )
    out: dict[str, dict[str, set[str]]] = {}
    for relation, grantee, privilege in cur.fetchall():
        out.setdefault(relation, {}).setdefault(grantee, set()).add(privilege)
    return out


def assert_roles_as_defined(cur: psycopg2.extensions.cursor, names: roles.RoleNames) -> None:
    assert role_attributes(cur, names.owner) == expected_attributes(roles.OWNER_ATTRIBUTES)
    assert role_attributes(cur, names.app) == expected_attributes(roles.APP_ATTRIBUTES)
    assert role_attributes(cur, names.retention) == expected_attributes(roles.RETENTION_ATTRIBUTES)
    assert role_attributes(cur, names.console) == expected_attributes(roles.CONSOLE_ATTRIBUTES)
    assert role_attributes(cur, roles.RULES_ADMIN_GROUP) == expected_attributes(roles.RULES_ADMIN_ATTRIBUTES)


def assert_database_as_defined(cur: psycopg2.extensions.cursor, db: str, names: roles.RoleNames) -> None:
    owner, grants = database_grants(cur, db)
    assert owner == names.owner
    assert grants == {
        names.app: set(roles.APP_DATABASE_PRIVILEGES),
        names.retention: set(roles.RETENTION_DATABASE_PRIVILEGES),
        names.console: set(roles.CONSOLE_DATABASE_PRIVILEGES),
        roles.RULES_ADMIN_GROUP: {"CONNECT"},
    }  # and nothing for PUBLIC


def assert_tables_as_defined(conn: psycopg2.extensions.connection, names: roles.RoleNames) -> None:
    with conn.cursor() as cur:
        tables = relation_grants(cur, ("r", "p", "v"))  # rule_set_active is a view (migration 071)
        expected = {t: {names.app: set(p)} for t, p in roles.APP_TABLE_PRIVILEGES.items() if p}
        for table, privileges in roles.RETENTION_TABLE_PRIVILEGES.items():
            expected[table][names.retention] = set(privileges)
        for table, privileges in roles.CONSOLE_TABLE_PRIVILEGES.items():
            expected.setdefault(table, {})[names.console] = set(privileges)
        for table, privileges in roles.RULES_ADMIN_TABLE_PRIVILEGES.items():
            expected[table][roles.RULES_ADMIN_GROUP] = set(privileges)
        assert tables == expected
        sequences = relation_grants(cur, ("S",))
        assert sequences, "the migrations create bigserial keys"
        console_sequences = {"console_users_user_id_seq", "cases_case_id_seq", "case_events_event_id_seq"}
        for seq, grants in sequences.items():
            assert grants.pop(names.console, set()) == (
                {"USAGE", "SELECT"} if seq in console_sequences else set()
            )
            wanted = {names.app: set(roles.APP_SEQUENCE_PRIVILEGES)}
            if seq in roles.RULES_ADMIN_SEQUENCES:
                wanted[roles.RULES_ADMIN_GROUP] = {"USAGE"}
            assert grants == wanted, (seq, grants)
        cur.execute("SELECT proname, proacl::text[] FROM pg_proc WHERE proname = 'purge_expired'")
        ((_, acl),) = cur.fetchall()
        assert any(entry.startswith(f"{names.retention}=X/") for entry in acl), acl
        assert not any(entry.startswith("=") or entry.startswith(f"{names.app}=") for entry in acl), acl
        cur.execute(
            "SELECT has_schema_privilege(%s, 'public', 'USAGE'), has_schema_privilege(%s, 'public', 'CREATE')",
            (names.app, names.app),
        )
        assert cur.fetchone() == (True, False)
        cur.execute(
            "SELECT has_schema_privilege(%s, 'public', 'USAGE'), has_schema_privilege(%s, 'public', 'CREATE')",
            (names.retention, names.retention),
        )
        assert cur.fetchone() == (True, False)


@pytest.fixture
def native_stack(test_stack: LocalStack) -> LocalStack:
    if not test_stack.is_local("postgres"):
        pytest.fail(
            "this test checks the native stack's roles, but the session uses an external PostgreSQL "
            "(POSTGRES_HOST answered): unset it so the test stack runs its own"
        )
    return test_stack


def test_native_stack_roles_have_exactly_the_defined_privileges(
    native_stack: LocalStack, fresh_db: PostgresSettings
) -> None:
    names = roles.RoleNames.from_settings(fresh_db)
    with contextlib.closing(native_stack.postgres.connect_superuser()) as conn, conn.cursor() as cur:
        assert_roles_as_defined(cur, names)
        # The stack's own database (provisioned at `up`) and this test's (create_database).
        for db in (native_stack.env().postgres_db, fresh_db.db):
            assert_database_as_defined(cur, db, names)
    with contextlib.closing(native_stack.postgres.connect_superuser(fresh_db.db)) as conn:
        assert_tables_as_defined(conn, names)


def test_provision_cli_sets_up_what_compose_needs(
    native_stack: LocalStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`python -m utils.roles provision` (Compose's db-roles) with other role names, then the
    migrations as the owner: the same privileges, and the roles log in with their passwords."""
    suffix = uuid.uuid4().hex[:8]
    names = roles.RoleNames(
        owner=f"it_owner_{suffix}",
        app=f"it_app_{suffix}",
        retention=f"it_ret_{suffix}",
        console=f"it_con_{suffix}",
    )
    db = f"it_roles_{suffix}"
    pg = PostgresSettings(
        host="127.0.0.1",
        port=native_stack.ports["postgres"],
        db=db,
        user=names.app,
        password=f"app pw '{suffix}",  # a quote and a space: the password is a parameter
        migration_user=names.owner,
        migration_password=f"owner-{suffix}",
        retention_user=names.retention,
        retention_password=f"retention-{suffix}",
        console_user=names.console,
        console_password=f"console-{suffix}",
    )
    monkeypatch.setenv("TXMON_ENV_FILE", str(tmp_path / "none.env"))
    for key, value in {
        "POSTGRES_HOST": pg.host,
        "POSTGRES_PORT": str(pg.port),
        "POSTGRES_DB": db,
        "POSTGRES_USER": pg.user,
        "POSTGRES_PASSWORD": pg.password,
        "POSTGRES_MIGRATION_USER": pg.migration_user,
        "POSTGRES_MIGRATION_PASSWORD": pg.migration_password,
        "POSTGRES_RETENTION_USER": pg.retention_user,
        "POSTGRES_RETENTION_PASSWORD": pg.retention_password,
        "POSTGRES_CONSOLE_USER": pg.console_user,
        "POSTGRES_CONSOLE_PASSWORD": pg.console_password,
        "POSTGRES_SUPERUSER_PASSWORD": native_stack.superuser_password(),
    }.items():
        monkeypatch.setenv(key, value)
    try:
        assert roles.main(["provision"]) == 0
        assert roles.main(["provision"]) == 0  # every `docker compose up` runs it again
        schema.migrate(pg)
        with contextlib.closing(native_stack.postgres.connect_superuser()) as conn, conn.cursor() as cur:
            assert_roles_as_defined(cur, names)
            assert_database_as_defined(cur, db, names)
        with contextlib.closing(native_stack.postgres.connect_superuser(db)) as conn:
            assert_tables_as_defined(conn, names)
        with contextlib.closing(psycopg2.connect(pg.dsn())) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone() == (names.app,)
        with contextlib.closing(psycopg2.connect(pg.as_retention().dsn())) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone() == (names.retention,)
        with contextlib.closing(psycopg2.connect(pg.as_console().dsn())) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone() == (names.console,)
    finally:
        with contextlib.closing(native_stack.postgres.connect_superuser()) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
                for role in (names.app, names.retention, names.console, names.owner):
                    cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_passwords_reach_the_server_only_as_scram_verifiers(native_stack: LocalStack) -> None:
    """CREATE/ALTER ROLE get libpq's SCRAM-SHA-256 verifier, never the password: it is in no
    statement the server parses or logs; the roles still log in with their passwords."""
    suffix = uuid.uuid4().hex[:8]
    names = roles.RoleNames(owner=f"sv_owner_{suffix}", app=f"sv_app_{suffix}", retention=f"sv_ret_{suffix}")
    passwords = {
        names.owner: f"owner {suffix}",
        names.app: f"app '{suffix}",
        names.retention: f"ret-{suffix}",
    }
    db = f"sv_{suffix}"
    sent: list[object] = []

    class Recording(psycopg2.extensions.cursor):
        def execute(self, query: Any, vars: Any = None) -> None:
            sent.append(vars)
            super().execute(query, vars)

    conn = native_stack.postgres.connect_superuser()
    conn.cursor_factory = Recording
    try:
        roles.provision(conn, db, names, passwords)
        parameters = [str(v) for v in sent if v]
        assert all(p not in "".join(parameters) for p in passwords.values()), "a password was sent"
        verifiers = [v[0] for v in sent if isinstance(v, tuple) and str(v[0]).startswith("SCRAM-SHA-256$")]
        assert len(verifiers) == 3
        for role, password in passwords.items():
            psycopg2.connect(
                host="127.0.0.1", port=native_stack.ports["postgres"], dbname=db, user=role, password=password
            ).close()
    finally:
        conn.cursor_factory = psycopg2.extensions.cursor
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            for role in passwords:
                cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.close()
