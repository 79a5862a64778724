"""The database's roles and what each may do: one definition, rendered to SQL with psycopg2.sql.

    owner role (POSTGRES_MIGRATION_USER)  owns the database, hence its schema and the tables the
                                          migrations create; the migration runner logs in as it
    app role   (POSTGRES_USER)            what the producer, consumer and DAGs log in as: reads and
                                          writes rows, owns nothing, so it cannot drop or alter tables;
                                          the audit tables (transactions, alerts, rejected_transactions)
                                          it may only read and add to
    retention  (POSTGRES_RETENTION_USER)  what the retention cleanup logs in as: counts old rows and
                                          calls purge_expired() (migration 070), nothing else
    console    (POSTGRES_CONSOLE_USER)    what the analysts' console (console/) logs in as: reads the
                                          pipeline's tables, writes only the console's; a case's
                                          history (case_events) it may only add to
    txmon_rules_admin (a group, no login)  its members, each a named person's own login
                                          (`python -m utils.roles add-rules-admin NAME`), publish and
                                          activate rule sets: INSERT on the history tables only

Three places apply this definition, each with the rights it has:
  - the native stack (stack/postgres.py) and Compose's one-shot `db-roles` service
    (`python -m utils.roles provision`), as the superuser: the roles, the database, who may connect;
  - the migration runner (utils/schema.py), as the owner, after the migrations: table privileges.

To change what a role may do with a table, change its line in APP_TABLE_PRIVILEGES; a new
migration's table needs a line too (tests/unit/test_roles.py fails until it has one).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

if __package__ in (None, ""):  # `python utils/roles.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from utils.config import PostgresSettings, load_settings
from utils.errors import ConfigError, DatabaseUnavailable

log = logging.getLogger(__name__)

# The cluster's superuser: initdb's (native) and the postgres image's (Compose) POSTGRES_USER.
SUPERUSER = "postgres"
SCHEMA = "public"

# Both roles log in and may do nothing cluster-wide: no superuser, no new databases or roles,
# no replication, no bypassing row-level security.
LOGIN_ONLY = ("LOGIN", "NOSUPERUSER", "NOCREATEDB", "NOCREATEROLE", "NOREPLICATION", "NOBYPASSRLS")
OWNER_ATTRIBUTES = LOGIN_ONLY
APP_ATTRIBUTES = LOGIN_ONLY
RETENTION_ATTRIBUTES = LOGIN_ONLY
CONSOLE_ATTRIBUTES = LOGIN_ONLY

# Nobody but the owner (implicitly) and the app role may connect. TEMPORARY: the consumer's COPY
# goes through a temporary staging table.
APP_DATABASE_PRIVILEGES = ("CONNECT", "TEMPORARY")
RETENTION_DATABASE_PRIVILEGES = ("CONNECT",)
CONSOLE_DATABASE_PRIVILEGES = ("CONNECT",)
APP_SCHEMA_PRIVILEGES = ("USAGE",)
# bigserial keys: inserting a row takes the next value of its sequence.
APP_SEQUENCE_PRIVILEGES = ("USAGE", "SELECT")

READ_WRITE = ("SELECT", "INSERT", "UPDATE", "DELETE")
# The audit trail: what happened is only ever added to (the consumer's writes are idempotent
# INSERTs); what is old goes through the retention role.
INSERT_ONLY = ("SELECT", "INSERT")
# What the app role may do with each table's rows, one line per table. A table not listed gets
# nothing (and a warning from the migration runner).
APP_TABLE_PRIVILEGES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "transactions": INSERT_ONLY,
        "alerts": INSERT_ONLY,
        "rejected_transactions": INSERT_ONLY,
        # Every stored transaction_id, once (migration 090): the consumer adds to it with each batch.
        "transaction_ids": INSERT_ONLY,
        "daily_summary": READ_WRITE,
        "rule_quality": READ_WRITE,
        "pipeline_metrics": READ_WRITE,
        "reconciliation": READ_WRITE,
        # Rule sets: the consumer reads them; publishing and activating run as the owner role
        # (python -m consumer.rulesets), so the pipeline can never change what it evaluates.
        "rule_set_versions": ("SELECT",),
        "rule_set_active": ("SELECT",),
        "rule_set_activations": ("SELECT",),
        # Where each partition's evaluation switched version: the consumer adds a line per switch.
        "rule_set_applied": INSERT_ONLY,
        # The consumer's offsets and the DLQ publisher's progress: read, made, moved on.
        "consumer_offsets": ("SELECT", "INSERT", "UPDATE"),
        "dlq_progress": ("SELECT", "INSERT", "UPDATE"),
        # How far each partition of each topic incarnation is stored: raised, never lowered.
        "stored_positions": ("SELECT", "INSERT", "UPDATE"),
        # The partition counts each topic incarnation has had: recorded once each, read back.
        "topic_partition_counts": INSERT_ONLY,
        # The migration history: readable (migrate's up-to-date check runs as any role), never written.
        "schema_migrations": ("SELECT",),
        # The console's tables (console/): the pipeline writes none of them; closed cases and
        # their alerts it reads, as labels (utils/verdicts.py: precision from analysts' verdicts).
        "console_users": (),
        "console_sessions": (),
        "cases": ("SELECT",),
        "case_alerts": ("SELECT",),
        "case_links": (),
        "case_events": (),
        # How long data is kept: the owner sets it (utils/schema.set_retention_days).
        "retention_policy": ("SELECT",),
    }
)
# What the retention role may do: count what has expired and call the one function that deletes
# it (purge_expired, migration 070: rows older than retention_policy.days, nothing else). It holds
# no DELETE privilege, so it cannot delete a young row. A transaction's alerts go with it by
# ON DELETE CASCADE.
RETENTION_TABLE_PRIVILEGES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "transactions": ("SELECT",),
        "rejected_transactions": ("SELECT",),
        "pipeline_metrics": ("SELECT",),
        "retention_policy": ("SELECT",),
    }
)
RETENTION_FUNCTIONS = ("purge_expired(text, integer)",)
# Since migration 090 (day partitions): where purge_expired's whole-day drops stop, so the
# cleanup's plan counts exactly what will go.
RETENTION_PARTITION_FUNCTIONS = ("retention_boundary(text)",)
# The app role creates today's and the next days' partitions before writing into them
# (migration 090: a SECURITY DEFINER function that can create nothing else).
APP_FUNCTIONS = ("ensure_partitions(integer)",)

# The people who may change the rules (migration 071): add to the history, read it, nothing more.
# No UPDATE, DELETE or TRUNCATE anywhere, and they own nothing, so the history stays as written.
RULES_ADMIN_GROUP = "txmon_rules_admin"
RULES_ADMIN_ATTRIBUTES = (
    "NOLOGIN",
    "NOSUPERUSER",
    "NOCREATEDB",
    "NOCREATEROLE",
    "NOREPLICATION",
    "NOBYPASSRLS",
)
PERSON_ATTRIBUTES = LOGIN_ONLY
RULES_ADMIN_TABLE_PRIVILEGES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "rule_set_versions": ("SELECT", "INSERT"),
        "rule_set_activations": ("SELECT", "INSERT"),
        "rule_set_active": ("SELECT",),
    }
)
RULES_ADMIN_SEQUENCES = ("rule_set_activations_activation_id_seq",)


# What the console role may do: read what the pipeline stored, write its own tables. A table
# not listed gets nothing; a pipeline table it should read needs a line here.
CONSOLE_TABLE_PRIVILEGES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "transactions": ("SELECT",),
        "alerts": ("SELECT",),
        "rejected_transactions": ("SELECT",),
        "daily_summary": ("SELECT",),
        "rule_quality": ("SELECT",),
        "rule_set_versions": ("SELECT",),
        "rule_set_active": ("SELECT",),
        "rule_set_activations": ("SELECT",),
        "rule_set_applied": ("SELECT",),
        # A lead's backtest replays the topic's current incarnation (migration 060), and the
        # partitions' placement check reads the counts each incarnation has had (065).
        "stored_positions": ("SELECT",),
        "topic_partition_counts": ("SELECT",),
        "schema_migrations": ("SELECT",),
        # Users: created by `python -m console add-user` (as this role); a failed sign-in counts.
        "console_users": ("SELECT", "INSERT", "UPDATE"),
        "console_sessions": READ_WRITE,
        "cases": ("SELECT", "INSERT", "UPDATE"),
        # Never detached; the copy of the case's status and assignee moves with the case.
        "case_alerts": ("SELECT", "INSERT", "UPDATE"),
        "case_links": INSERT_ONLY,
        # The audit trail of decisions: only ever added to (a trigger refuses the rest to anyone).
        "case_events": INSERT_ONLY,
    }
)


@dataclass(frozen=True, slots=True)
class RoleNames:
    """The roles' names, which settings choose (POSTGRES_MIGRATION_USER, POSTGRES_USER,
    POSTGRES_RETENTION_USER). `retention` is empty where no retention role is set up."""

    owner: str
    app: str
    retention: str = ""
    console: str = ""

    def __post_init__(self) -> None:
        if not self.owner or not self.app:
            raise ConfigError(
                "the owner role (POSTGRES_MIGRATION_USER) and the app role (POSTGRES_USER) both need a name"
            )
        if self.owner == self.app:
            raise ConfigError(
                f"POSTGRES_MIGRATION_USER and POSTGRES_USER are both {self.app!r}: the owner role and "
                "the app role must differ, or the pipeline could drop its own tables"
            )
        if self.retention in (self.owner, self.app):
            raise ConfigError(
                f"POSTGRES_RETENTION_USER is {self.retention!r}, a role the pipeline already uses: the "
                "retention role must be its own, or the app role could delete the audit trail"
            )
        if self.console and self.console in (self.owner, self.app, self.retention):
            raise ConfigError(
                f"POSTGRES_CONSOLE_USER is {self.console!r}, a role the pipeline already uses: the "
                "console's role must be its own, or the console could write the pipeline's tables"
            )
        if SUPERUSER in (self.owner, self.app, self.retention, self.console):
            raise ConfigError(f"{SUPERUSER!r} is the superuser: give the pipeline's roles other names")

    @classmethod
    def from_settings(cls, pg: PostgresSettings) -> RoleNames:
        return cls(owner=pg.migration_user, app=pg.user, retention=pg.retention_user, console=pg.console_user)


# --------------------------------------------------------------------------------------------
# Rendering (pure: statements as psycopg2.sql objects, executed by the functions below)
# --------------------------------------------------------------------------------------------


def _keywords(words: Iterable[str]) -> sql.Composable:
    return sql.SQL(" ").join(sql.SQL(w) for w in words)


def _list(words: Iterable[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL(w) for w in words)


def role_statement(name: str, attributes: Sequence[str], *, exists: bool) -> sql.Composed:
    """CREATE (or ALTER, when it exists) ROLE with its attributes; the password is the one parameter
    (`%s`), so it never appears in the statement text. Pass it through `password_verifier`: the
    server then receives a SCRAM verifier, never the password itself (nor do its logs)."""
    verb = "ALTER" if exists else "CREATE"
    return sql.SQL("{} ROLE {} WITH {} PASSWORD %s").format(
        sql.SQL(verb), sql.Identifier(name), _keywords(attributes)
    )


def password_verifier(
    password: str, role: str, scope: psycopg2.extensions.connection | psycopg2.extensions.cursor
) -> str:
    """The SCRAM-SHA-256 verifier of `password` for `role`, computed here by libpq
    (PQencryptPasswordConn; `scope` is any open connection or cursor): what ALTER/CREATE ROLE
    ... PASSWORD is given instead of the password."""
    return psycopg2.extensions.encrypt_password(password, role, scope, "scram-sha-256")


def rules_admin_statements(db: str, tables: Iterable[str]) -> list[sql.Composed]:
    """The rules-admin group's privileges: connect, use the schema, add to (and read) the rule-set
    history. Revoked first, so a narrower definition takes privileges away."""
    group, schema = sql.Identifier(RULES_ADMIN_GROUP), sql.Identifier(SCHEMA)
    out = [
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(db), group),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, group),
    ]
    for table in sorted(set(tables)):
        name = sql.Identifier(SCHEMA, table)
        out.append(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(name, group))
        if table in RULES_ADMIN_TABLE_PRIVILEGES:
            out.append(
                sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                    _list(RULES_ADMIN_TABLE_PRIVILEGES[table]), name, group
                )
            )
    if "rule_set_activations" in tables:
        for seq in RULES_ADMIN_SEQUENCES:
            out.append(sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(sql.Identifier(SCHEMA, seq), group))
    return out


def create_database_statement(db: str, owner: str) -> sql.Composed:
    return sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8'").format(
        sql.Identifier(db), sql.Identifier(owner)
    )


def database_statements(db: str, names: RoleNames) -> list[sql.Composed]:
    """The owner owns the database; PUBLIC may do nothing with it, the app role what the definition
    says. Revoke first, so that applying a narrower definition takes privileges away too."""
    database, owner, app = sql.Identifier(db), sql.Identifier(names.owner), sql.Identifier(names.app)
    out = [
        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, owner),
        sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC, {}").format(database, app),
        sql.SQL("GRANT {} ON DATABASE {} TO {}").format(_list(APP_DATABASE_PRIVILEGES), database, app),
    ]
    if names.retention:
        retention = sql.Identifier(names.retention)
        out += [
            sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(database, retention),
            sql.SQL("GRANT {} ON DATABASE {} TO {}").format(
                _list(RETENTION_DATABASE_PRIVILEGES), database, retention
            ),
        ]
    if names.console:
        console = sql.Identifier(names.console)
        out += [
            sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(database, console),
            sql.SQL("GRANT {} ON DATABASE {} TO {}").format(
                _list(CONSOLE_DATABASE_PRIVILEGES), database, console
            ),
        ]
    return out


def table_statements(
    app: str, tables: Iterable[str], retention: str = "", console: str = ""
) -> list[sql.Composed]:
    """The app role's (and the retention role's, when named) privileges on the schema, the
    sequences and each of `tables` that the definition lists (revoked first, so a narrower
    definition takes privileges away)."""
    tables = set(tables)
    role, schema = sql.Identifier(app), sql.Identifier(SCHEMA)
    out = [
        sql.SQL("GRANT {} ON SCHEMA {} TO {}").format(_list(APP_SCHEMA_PRIVILEGES), schema, role),
        sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(schema, role),
        sql.SQL("GRANT {} ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
            _list(APP_SEQUENCE_PRIVILEGES), schema, role
        ),
    ]
    for table in sorted(set(tables) & APP_TABLE_PRIVILEGES.keys()):
        name = sql.Identifier(SCHEMA, table)
        out.append(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(name, role))
        if APP_TABLE_PRIVILEGES[table]:
            out.append(
                sql.SQL("GRANT {} ON TABLE {} TO {}").format(_list(APP_TABLE_PRIVILEGES[table]), name, role)
            )
    partitioned = "transaction_ids" in tables  # migration 090 made the partition functions
    if partitioned:
        for function in APP_FUNCTIONS:
            out.append(
                sql.SQL("GRANT EXECUTE ON FUNCTION {}.{} TO {}").format(schema, sql.SQL(function), role)
            )
    if retention:
        purger = sql.Identifier(retention)
        out.append(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, purger))
        for table in sorted(tables):
            name = sql.Identifier(SCHEMA, table)
            out.append(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(name, purger))
            if table in RETENTION_TABLE_PRIVILEGES:
                out.append(
                    sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                        _list(RETENTION_TABLE_PRIVILEGES[table]), name, purger
                    )
                )
        if "retention_policy" in tables:  # migration 070 made the function
            for function in RETENTION_FUNCTIONS + (RETENTION_PARTITION_FUNCTIONS if partitioned else ()):
                out.append(
                    sql.SQL("GRANT EXECUTE ON FUNCTION {}.{} TO {}").format(schema, sql.SQL(function), purger)
                )
    if console:
        out += console_table_statements(console, tables)
    return out


def console_table_statements(console: str, tables: Iterable[str]) -> list[sql.Composed]:
    """The console role's privileges: the schema, the sequences of its own tables (bigserial
    keys), and each table as CONSOLE_TABLE_PRIVILEGES lists it (revoked first)."""
    role, schema = sql.Identifier(console), sql.Identifier(SCHEMA)
    out = [
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role),
        sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(schema, role),
    ]
    for table in sorted(set(tables)):
        name = sql.Identifier(SCHEMA, table)
        out.append(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(name, role))
        wanted = CONSOLE_TABLE_PRIVILEGES.get(table, ())
        if wanted:
            out.append(sql.SQL("GRANT {} ON TABLE {} TO {}").format(_list(wanted), name, role))
        if "INSERT" in wanted and table in _SERIAL_KEYS:
            sequence = sql.Identifier(SCHEMA, f"{table}_{_SERIAL_KEYS[table]}_seq")
            out.append(sql.SQL("GRANT USAGE, SELECT ON SEQUENCE {} TO {}").format(sequence, role))
    return out


# The console's tables with a bigserial key: inserting takes the next value of its sequence.
_SERIAL_KEYS = MappingProxyType({"console_users": "user_id", "cases": "case_id", "case_events": "event_id"})


def _execute_atomically(cur: psycopg2.extensions.cursor, statements: Sequence[sql.Composable]) -> None:
    # One query string runs as one transaction even on an autocommit connection: the app role
    # never sees a moment between a REVOKE and its GRANT.
    cur.execute(sql.SQL(";\n").join(statements))


# --------------------------------------------------------------------------------------------
# Applying it
# --------------------------------------------------------------------------------------------


def provision(
    conn: psycopg2.extensions.connection, db: str, names: RoleNames, passwords: Mapping[str, str]
) -> None:
    """As the superuser: the roles (created or updated, so the passwords always match
    `passwords`, keyed by role name; the retention role only when named and given a password),
    the database (created if missing) and who may connect. Idempotent; the connection is
    switched to autocommit (CREATE DATABASE needs it)."""
    conn.autocommit = True
    if names.retention and not passwords.get(names.retention):
        log.warning(
            "no password for the retention role %r (POSTGRES_RETENTION_PASSWORD): not set up, so the "
            "retention cleanup cannot run",
            names.retention,
        )
        names = RoleNames(owner=names.owner, app=names.app, console=names.console)
    wanted = [(names.owner, OWNER_ATTRIBUTES), (names.app, APP_ATTRIBUTES)]
    if names.retention:
        wanted.append((names.retention, RETENTION_ATTRIBUTES))
    if names.console and not passwords.get(names.console):
        log.warning(
            "no password for the console role %r (POSTGRES_CONSOLE_PASSWORD): not set up, so the "
            "console cannot sign in to the database",
            names.console,
        )
        names = dataclasses.replace(names, console="")
    if names.console:
        wanted.append((names.console, CONSOLE_ATTRIBUTES))
    with conn.cursor() as cur:
        for name, attributes in wanted:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
            exists = cur.fetchone() is not None
            cur.execute(
                role_statement(name, attributes, exists=exists),
                (password_verifier(passwords[name], name, cur),),
            )
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (RULES_ADMIN_GROUP,))
        if cur.fetchone() is None:
            cur.execute(
                sql.SQL("CREATE ROLE {} WITH {}").format(
                    sql.Identifier(RULES_ADMIN_GROUP), _keywords(RULES_ADMIN_ATTRIBUTES)
                )
            )
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
        if cur.fetchone() is None:
            log.info("creating database %s owned by %s", db, names.owner)
            cur.execute(create_database_statement(db, names.owner))
        grant_database_privileges(cur, db, names)
    log.info("roles %r (owner of %s) and %r (app) provisioned", names.owner, db, names.app)


def grant_database_privileges(cur: psycopg2.extensions.cursor, db: str, names: RoleNames) -> None:
    """As the superuser or the database's owner: its owner and who may connect."""
    statements = database_statements(db, names)
    if _role_exists(cur, RULES_ADMIN_GROUP):
        statements.append(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(db), sql.Identifier(RULES_ADMIN_GROUP)
            )
        )
    _execute_atomically(cur, statements)


def _role_exists(cur: psycopg2.extensions.cursor, name: str) -> bool:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    return cur.fetchone() is not None


def grant_table_privileges(
    cur: psycopg2.extensions.cursor, app: str, retention: str = "", console: str = ""
) -> None:
    """As the owner, after the migrations: the app role's privileges on what they created, and
    the retention and console roles' where those roles exist."""
    # Views too: rule_set_active is one (migration 071), read like the table it replaced. Not the
    # partitions of a partitioned table (migration 090): every role reaches their rows through
    # the parent, whose privileges are the ones checked.
    cur.execute(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %(s)s AND c.relkind IN ('r', 'p', 'v') AND NOT c.relispartition""",
        {"s": SCHEMA},
    )
    tables = {row[0] for row in cur.fetchall()}
    if retention:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (retention,))
        if cur.fetchone() is None:
            log.warning("role %s does not exist: the retention cleanup has no role to run as", retention)
            retention = ""
    if console:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (console,))
        if cur.fetchone() is None:
            log.warning(
                "role %s does not exist: the console has no role to sign in to the database as", console
            )
            console = ""
    for table in sorted(tables - APP_TABLE_PRIVILEGES.keys()):
        log.warning(
            "table %s has no line in utils/roles.py's APP_TABLE_PRIVILEGES: role %s gets no privileges on it",
            table,
            app,
        )
    statements = table_statements(app, tables, retention, console)
    if _role_exists(cur, RULES_ADMIN_GROUP):
        cur.execute("SELECT current_database()")
        statements += rules_admin_statements(cur.fetchone()[0], tables)
    else:
        log.warning(
            "role %s does not exist: nobody can publish rule sets until `python -m utils.roles provision`",
            RULES_ADMIN_GROUP,
        )
    _execute_atomically(cur, statements)


# --------------------------------------------------------------------------------------------
# CLI: Compose's one-shot `db-roles` service
# --------------------------------------------------------------------------------------------


def add_rules_admin(cur: psycopg2.extensions.cursor, name: str, password: str, names: RoleNames) -> None:
    """As the superuser: `name`'s own login, a member of the rules-admin group (created or its
    password updated). Refused for the pipeline's own roles: a person is not a service."""
    if name in (names.owner, names.app, names.retention, SUPERUSER, RULES_ADMIN_GROUP):
        raise ConfigError(f"{name!r} is one of the pipeline's roles: a rules admin is a person's own login")
    if len(password) < 16:
        raise ConfigError(f"the password for {name!r} is shorter than 16 characters: choose a longer one")
    exists = _role_exists(cur, name)
    cur.execute(
        role_statement(name, PERSON_ATTRIBUTES, exists=exists), (password_verifier(password, name, cur),)
    )
    cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(RULES_ADMIN_GROUP), sql.Identifier(name)))
    log.info("role %s: a rules admin (member of %s)", name, RULES_ADMIN_GROUP)


def _read_password(name: str) -> str:
    import getpass

    if sys.stdin.isatty():
        first = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != first:
            raise ConfigError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def _connect_superuser(pg: PostgresSettings, timeout_s: float) -> psycopg2.extensions.connection:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return psycopg2.connect(
                host=pg.host,
                port=pg.port,
                dbname="postgres",
                user=SUPERUSER,
                password=pg.superuser_password,
                connect_timeout=pg.connect_timeout_s,
                application_name="txmon-roles",
                **pg.tls_params(),
            )
        except psycopg2.OperationalError as exc:
            if "password authentication failed" in str(exc) or time.monotonic() > deadline:
                raise DatabaseUnavailable(
                    f"cannot connect to PostgreSQL at {pg.host}:{pg.port} as {SUPERUSER!r}: "
                    f"{str(exc).strip()}. Check POSTGRES_SUPERUSER_PASSWORD (.env) and that the server runs"
                ) from exc
            time.sleep(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    from utils.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m utils.roles", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser(
        "provision",
        help="as the superuser: create or update the owner and app roles, the database, who may connect "
        "[env: POSTGRES_SUPERUSER_PASSWORD, POSTGRES_MIGRATION_USER/_PASSWORD, POSTGRES_USER/_PASSWORD, "
        "POSTGRES_RETENTION_USER/_PASSWORD, POSTGRES_CONSOLE_USER/_PASSWORD, POSTGRES_DB]",
    )
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the server (default 60)")
    person = sub.add_parser(
        "add-rules-admin",
        help="as the superuser: a named person's own login, member of txmon_rules_admin (may publish and "
        "activate rule sets); the password is read from the terminal (or the first line of stdin) "
        "[env: POSTGRES_SUPERUSER_PASSWORD]",
    )
    person.add_argument("name", help="the person's PostgreSQL role name, e.g. their user name")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        pg = settings.postgres
        if args.cmd == "add-rules-admin":
            if not pg.superuser_password:
                raise ConfigError("set POSTGRES_SUPERUSER_PASSWORD (see .env.example)")
            password = _read_password(args.name)
            conn = _connect_superuser(pg, 10.0)
            try:
                conn.autocommit = True
                with conn.cursor() as cur:
                    add_rules_admin(cur, args.name, password, RoleNames.from_settings(pg))
            finally:
                conn.close()
            print(f"{args.name} may publish and activate rule sets (member of {RULES_ADMIN_GROUP})")
            return 0
        names = RoleNames.from_settings(pg)
        missing = [
            var
            for var, value in (
                ("POSTGRES_SUPERUSER_PASSWORD", pg.superuser_password),
                ("POSTGRES_MIGRATION_PASSWORD", pg.migration_password),
                ("POSTGRES_PASSWORD", pg.password),
            )
            if not value
        ]
        if missing:
            raise ConfigError(f"set {', '.join(missing)} (see .env.example)")
        conn = _connect_superuser(pg, args.wait)
        try:
            passwords = {names.owner: pg.migration_password, names.app: pg.password}
            passwords[names.retention] = pg.retention_password
            if names.console:
                passwords[names.console] = pg.console_password
            provision(conn, pg.db, names, passwords)
        finally:
            conn.close()
    except (ConfigError, DatabaseUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except psycopg2.Error as exc:
        print(f"error: provisioning the roles failed: {str(exc).strip()}", file=sys.stderr)
        return 2
    print(f"roles ready: {names.owner} (owner of {pg.db}), {names.app} (app)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
