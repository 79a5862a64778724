"""PostgreSQL at the edge: one pool per process, one context manager, and the commands that look
after the schema.

    python -m utils.database migrate      apply pending migrations (as POSTGRES_MIGRATION_USER)
    python -m utils.database status       applied and pending migrations

The migration runner lives in `utils/schema.py`; the consumer's batch writes and account loads
in `consumer/storage.py`, its offsets in `consumer/offsets.py`. `classify` tells what a database
error means (outage, conflict, timeout, data) by its SQLSTATE.
"""

from __future__ import annotations

import argparse
import enum
import logging
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

if __package__ in (None, ""):  # `python utils/database.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.pool

from utils.config import PostgresSettings, Settings, load_settings
from utils.errors import DatabaseUnavailable, MigrationError

log = logging.getLogger(__name__)


class ErrorKind(enum.Enum):
    """What a database error means for whoever retries, decided by SQLSTATE, never by message text."""

    OUTAGE = "outage"  # no server, lost connection, admin/crash shutdown: hold the work, back off
    CONFLICT = "conflict"  # serialization failure or deadlock: the transaction may simply run again
    TIMEOUT = "timeout"  # statement_timeout or lock_timeout cancelled it: the server is up
    DATA = "data"  # a row the schema refuses (classes 22 and 23)
    OTHER = "other"  # a bug or a privilege problem: retrying will not help


# admin_shutdown, crash_shutdown, cannot_connect_now; the server closed an idle session
# (idle_in_transaction_session_timeout, idle_session_timeout: our process was frozen); a standby
# answered (read_only_sql_transaction, after a failover until the address points at the primary).
_OUTAGE_CODES = frozenset({"57P01", "57P02", "57P03", "25P03", "57P05", "25006"})
_CONFLICT_CODES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
_TIMEOUT_CODES = frozenset({"57014", "55P03"})  # query_canceled, lock_not_available


def classify(exc: BaseException) -> ErrorKind:
    """psycopg2 files a cancelled query (57014) under OperationalError like a dead server, so the
    class hierarchy alone cannot tell an outage from a timeout: the SQLSTATE can. An error
    without one is raised by libpq itself (refused, reset, closed): an outage."""
    if isinstance(exc, DatabaseUnavailable):
        return ErrorKind.OUTAGE
    if not isinstance(exc, psycopg2.Error):
        return ErrorKind.OTHER
    code = exc.pgcode or ""
    if code in _CONFLICT_CODES:
        return ErrorKind.CONFLICT
    if code in _TIMEOUT_CODES:
        return ErrorKind.TIMEOUT
    if code in _OUTAGE_CODES or code.startswith("08"):
        return ErrorKind.OUTAGE
    if not code and isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
        return ErrorKind.OUTAGE
    if code.startswith(("22", "23")):
        return ErrorKind.DATA
    return ErrorKind.OTHER


def is_outage(exc: BaseException) -> bool:
    return classify(exc) is ErrorKind.OUTAGE


def _dsn(
    pg: PostgresSettings,
    *,
    migration: bool = False,
    dbname: str | None = None,
    session: Mapping[str, object] | None = None,
) -> str:
    dsn = pg.dsn(migration=migration)
    if dbname is not None:
        dsn = psycopg2.extensions.make_dsn(dsn, dbname=dbname)
    # statement_timeout bounds every query, so a stuck statement can never stall the consumer forever.
    settings = {"statement_timeout": pg.statement_timeout_ms, **(session or {})}
    return psycopg2.extensions.make_dsn(dsn, options=" ".join(f"-c {k}={v}" for k, v in settings.items()))


def connect(pg: PostgresSettings, *, migration: bool = False) -> psycopg2.extensions.connection:
    """A single connection outside the pool (migrations, CLI tools)."""
    try:
        return psycopg2.connect(_dsn(pg, migration=migration))
    except psycopg2.OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {pg.host}:{pg.port}/{pg.db} as "
            f"{(pg.migration_user if migration and pg.migration_user else pg.user)!r}: "
            f"{str(exc).strip()}. Is it running? (`make stack-up`, or check POSTGRES_* in .env)"
        ) from exc


class _Pool(psycopg2.pool.ThreadedConnectionPool):
    """psycopg2's pool closes every connection given back beyond `minconn`, and minconn must be 0
    so the pool can be created while the server is down: every batch would pay for a new backend
    and its authentication (~30 ms, measured; more than writing 500 rows). Created empty, it
    keeps up to `maxconn` idle connections once they exist."""

    def __init__(self, maxconn: int, dsn: str) -> None:
        super().__init__(0, maxconn, dsn)
        self.minconn = maxconn


class Database:
    """One pool per process. `with db.connection() as conn:` commits, or rolls back on error,
    and always gives the connection back; a connection that broke is discarded, not reused."""

    def __init__(
        self, pg: PostgresSettings, *, maxconn: int | None = None, session: Mapping[str, object] | None = None
    ) -> None:
        """`session`: server settings for every connection of the pool (`-c name=value`)."""
        self.settings = pg
        self._session = dict(session or {})
        self._maxconn = maxconn or pg.pool_max
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._lock = threading.Lock()

    @property
    def maxconn(self) -> int:
        """Connections the pool holds at most (psycopg2's pool refuses, never waits, beyond)."""
        return self._maxconn

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        with self._lock:
            if self._pool is None:
                try:
                    self._pool = _Pool(self._maxconn, _dsn(self.settings, session=self._session))
                except psycopg2.OperationalError as exc:  # pragma: no cover - minconn=0 never connects
                    raise DatabaseUnavailable(str(exc)) from exc
            return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        pool = self._get_pool()
        try:
            conn = pool.getconn()
        except psycopg2.OperationalError as exc:
            pg = self.settings
            raise DatabaseUnavailable(
                f"PostgreSQL at {pg.host}:{pg.port}/{pg.db} unavailable: {str(exc).strip()}"
            ) from exc
        broken = False
        try:
            yield conn
            conn.commit()
        except BaseException as exc:
            # A connection the server closed lost the work whatever SQLSTATE it gave: wait, retry.
            outage = is_outage(exc) or (conn.closed != 0 and isinstance(exc, psycopg2.Error))
            broken = outage or conn.closed != 0
            if not broken:
                try:
                    conn.rollback()
                except psycopg2.Error as again:
                    broken = True
                    outage = outage or is_outage(again)
            if outage and not isinstance(exc, DatabaseUnavailable):
                raise DatabaseUnavailable(f"lost the PostgreSQL connection: {str(exc).strip()}") from exc
            raise
        finally:
            pool.putconn(conn, close=broken or conn.closed != 0)

    @contextmanager
    def snapshot(self) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor in one REPEATABLE READ transaction: every statement sees the same data while
        the consumer keeps writing (the report's tables agree with each other)."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield cur

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.closeall()
                self._pool = None


@contextmanager
def configured_database(maxconn: int = 2, *, retention: bool = False) -> Iterator[tuple[Settings, Database]]:
    """Settings from the environment and a small pool, closed afterwards: what one Airflow task
    or CLI command needs (the consumer keeps its own pool for its lifetime). `retention`: log in
    as the retention role, the one that may delete old rows."""
    settings = load_settings()
    db = Database(settings.postgres.as_retention() if retention else settings.postgres, maxconn=maxconn)
    try:
        yield settings, db
    finally:
        db.close()


def wait_for_database(pg: PostgresSettings, *, timeout_s: float = 60.0, migration: bool = False) -> None:
    """Block until the server accepts connections; raise DatabaseUnavailable after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        try:
            connect(pg, migration=migration).close()
            return
        except DatabaseUnavailable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def main(argv: Sequence[str] | None = None) -> int:
    from utils import schema
    from utils.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m utils.database", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("migrate", help="apply pending migrations [env: POSTGRES_MIGRATION_USER]")
    m.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the server (default 60)")
    sub.add_parser("status", help="list applied and pending migrations")
    args = parser.parse_args(argv)
    settings: Settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        if args.cmd == "migrate":
            wait_for_database(settings.postgres, timeout_s=args.wait, migration=True)
            applied = schema.migrate(settings.postgres)
            schema.set_retention_days(settings.postgres, settings.retention_days)
            print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
        else:
            done, pending = schema.migration_status(settings.postgres)
            print("applied:", ", ".join(done) or "none")
            print("pending:", ", ".join(pending) or "none")
    except (DatabaseUnavailable, MigrationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
