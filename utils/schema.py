"""The versioned schema: `utils/migrations/NNN_name.sql` applied in order, each once, recorded
with its checksum in `schema_migrations`, under an advisory lock so that several consumers
starting together apply each migration exactly once.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from utils import roles
from utils.config import PostgresSettings
from utils.database import connect
from utils.errors import MigrationError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_MIGRATION_LOCK = 7_141_592_653  # pg_advisory_lock key: serialises migrations across consumers


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        m = _MIGRATION_NAME.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: migration files are named NNN_lower_snake.sql")
        found.append(Migration(int(m.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number in {directory}")
    return found


def migrate(pg: PostgresSettings, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations as the owner role, then grant the app role what it needs.
    Safe to run twice and from several processes at once (advisory lock)."""
    migrations = discover_migrations(directory)
    applied_now: list[str] = []
    if _up_to_date(pg, migrations):
        return applied_now  # nothing to do, and no DDL: the app role alone may run this check
    conn = connect(pg, migration=True)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            try:
                _apply(cur, conn, pg, migrations, applied_now)
            except psycopg2.errors.InsufficientPrivilege as exc:
                who = pg.migration_user or pg.user
                raise MigrationError(
                    f"role {who!r} may not change the schema ({str(exc).strip()}): run "
                    "`python -m utils.database migrate` with POSTGRES_MIGRATION_USER set to the owner role"
                ) from exc
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    finally:
        conn.close()
    return applied_now


def _apply(
    cur: psycopg2.extensions.cursor,
    conn: psycopg2.extensions.connection,
    pg: PostgresSettings,
    migrations: list[Migration],
    applied_now: list[str],
) -> None:
    """Apply what is pending, each migration in its own transaction, under the advisory lock."""
    cur.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version integer PRIMARY KEY,
               name text NOT NULL,
               checksum text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    cur.execute("SELECT version, name, checksum FROM schema_migrations")
    done = {v: (n, c) for v, n, c in cur.fetchall()}
    known = {m.version for m in migrations}
    if done and max(done) > max(known, default=0):
        raise MigrationError(
            f"the database has migration {max(done)} but this code only knows up to "
            f"{max(known, default=0)}: upgrade the code before running it against this database"
        )
    for m in migrations:
        if m.version in done:
            if done[m.version][1] != m.checksum:
                raise MigrationError(
                    f"migration {m.name} changed after it was applied; add a new migration instead"
                )
            continue
        conn.autocommit = False
        try:
            cur.execute(m.sql)
            cur.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (m.version, m.name, m.checksum),
            )
            conn.commit()
        except psycopg2.errors.InsufficientPrivilege:
            conn.rollback()
            raise
        except psycopg2.Error as exc:
            conn.rollback()
            raise MigrationError(f"migration {m.name} failed: {str(exc).strip()}") from exc
        finally:
            conn.autocommit = True
        applied_now.append(m.name)
        log.info("applied migration %s", m.name)
    _grant_app_role(cur, pg)


def _up_to_date(pg: PostgresSettings, migrations: list[Migration]) -> bool:
    """True when every migration is recorded with its checksum (read-only check)."""
    conn = connect(pg, migration=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
            if not cur.fetchone()[0]:
                return False
            cur.execute("SELECT version, checksum FROM schema_migrations")
            done = dict(cur.fetchall())
    finally:
        conn.close()
    return all(done.get(m.version) == m.checksum for m in migrations) and len(done) == len(migrations)


def _grant_app_role(cur: psycopg2.extensions.cursor, pg: PostgresSettings) -> None:
    """The pipeline's role gets what utils/roles.py lists; it never owns tables, so it cannot drop them."""
    if not pg.migration_user or pg.migration_user == pg.user:
        return
    roles.grant_table_privileges(cur, pg.user, pg.retention_user, pg.console_user)


def migration_status(pg: PostgresSettings) -> tuple[list[str], list[str]]:
    """(applied, pending) migration names."""
    conn = connect(pg, migration=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
            exists = cur.fetchone()[0]
            done: set[int] = set()
            if exists:
                cur.execute("SELECT version FROM schema_migrations")
                done = {r[0] for r in cur.fetchall()}
    finally:
        conn.close()
    all_m = discover_migrations()
    return [m.name for m in all_m if m.version in done], [m.name for m in all_m if m.version not in done]


def set_retention_days(pg: PostgresSettings, days: int) -> None:
    """As the owner: how many days purge_expired() keeps (migration 070's retention_policy).
    The retention role can read the policy but not change it, so it cannot shorten it."""
    conn = connect(pg, migration=True)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE retention_policy SET days = %s, updated_at = now() WHERE days IS DISTINCT FROM %s",
                (days, days),
            )
            if cur.rowcount:
                log.info("retention policy: keep %d days", days)
    finally:
        conn.close()
