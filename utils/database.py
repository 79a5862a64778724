"""PostgreSQL at the edge: one pool per process, one context manager, versioned migrations,
idempotent batch writes, and the queries the consumer needs to rebuild its state.

    python -m utils.database migrate      apply pending migrations (as POSTGRES_MIGRATION_USER)
    python -m utils.database status       applied and pending migrations
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import logging
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python utils/database.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
import psycopg2.pool
from psycopg2 import sql

from utils.config import PostgresSettings, Settings, load_settings
from utils.errors import DatabaseUnavailable, MigrationError
from utils.models import Alert, Rejection, Transaction

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_MIGRATION_LOCK = 7_141_592_653  # pg_advisory_lock key: serialises migrations across consumers

# Errors that mean "the server is not there (right now)": retry, don't crash.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    psycopg2.errors.AdminShutdown,
    psycopg2.errors.CannotConnectNow,
)


def _dsn(pg: PostgresSettings, *, migration: bool = False, dbname: str | None = None) -> str:
    dsn = pg.dsn(migration=migration)
    if dbname is not None:
        dsn = psycopg2.extensions.make_dsn(dsn, dbname=dbname)
    # statement_timeout bounds every query, so a stuck statement can never stall the consumer forever.
    return psycopg2.extensions.make_dsn(dsn, options=f"-c statement_timeout={pg.statement_timeout_ms}")


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

    def __init__(self, pg: PostgresSettings, *, maxconn: int | None = None) -> None:
        self.settings = pg
        self._maxconn = maxconn or pg.pool_max
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._lock = threading.Lock()

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        with self._lock:
            if self._pool is None:
                try:
                    self._pool = _Pool(self._maxconn, _dsn(self.settings))
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
            broken = isinstance(exc, CONNECTION_ERRORS) or conn.closed != 0
            if not broken:
                try:
                    conn.rollback()
                except CONNECTION_ERRORS:
                    broken = True
            if isinstance(exc, CONNECTION_ERRORS):
                raise DatabaseUnavailable(f"lost the PostgreSQL connection: {str(exc).strip()}") from exc
            raise
        finally:
            pool.putconn(conn, close=broken or conn.closed != 0)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.closeall()
                self._pool = None


# --------------------------------------------------------------------------- migrations


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
    """The pipeline's role reads and writes rows; it never owns tables, so it cannot drop them."""
    if not pg.migration_user or pg.migration_user == pg.user:
        return
    app = sql.Identifier(pg.user)
    cur.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(app))
    cur.execute(
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(app)
    )
    cur.execute(sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(app))
    cur.execute(sql.SQL("REVOKE ALL ON schema_migrations FROM {}").format(app))
    cur.execute(sql.SQL("GRANT SELECT ON schema_migrations TO {}").format(app))


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


# --------------------------------------------------------------------------- batch writes

# The dataclass's field order; copy_rows() writes the same order (a unit test holds them together).
TXN_COLUMNS = tuple(f.name for f in dataclasses.fields(Transaction) if f.init)
_TXN_COLS_SQL = ", ".join(f'"{c}"' for c in TXN_COLUMNS)

# COPY's text format: backslash, tab, newline and carriage return must be escaped.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str | None) -> str:
    if value is None:
        return "\\N"
    # isprintable() is False for tab, newline and CR: one C scan settles nearly every value
    # without building a translated copy.
    if value.isprintable() and "\\" not in value:
        return value
    return value.translate(_COPY_ESCAPES)


def copy_rows(txns: Sequence[Transaction]) -> str:
    """The COPY payload for a batch: one tab-separated line per transaction (~3 µs per row;
    a join of a tuple measured ~2x faster here than one f-string with the same fields)."""
    esc = _copy_text
    null = "\\N"
    lines = [
        "\t".join(
            (
                esc(t.transaction_id),
                esc(t.account_id),
                t.transaction_type,
                f"{t.amount:.2f}",
                t.currency,
                t.timestamp.isoformat(),
                t.channel,
                t.country,
                esc(t.merchant),
                esc(t.merchant_category),
                esc(t.city),
                null if t.latitude is None else repr(t.latitude),
                null if t.longitude is None else repr(t.longitude),
                esc(t.simulated_scenario),
                str(t.schema_version),
                str(t.kafka_partition),
                str(t.kafka_offset),
            )
        )
        for t in txns
    ]
    lines.append("")
    return "\n".join(lines)


@dataclass(slots=True)
class BatchResult:
    inserted: int = 0  # new transactions stored by this batch
    already_stored: int = 0  # the same Kafka message was stored before (a replay after a crash)
    duplicates: list[Rejection] | None = None  # same transaction_id, different message: rejected
    alerts_inserted: int = 0
    rejected_inserted: int = 0
    alerts_by_type: Counter[str] = field(default_factory=Counter)  # of the alerts actually stored


def _copy_in(cur: psycopg2.extensions.cursor, table: str, payload: str) -> None:
    # One read() for the whole payload: psycopg2 drops the GIL for every chunk it sends and must
    # win it back from the busy polling thread for the next read (up to the 5 ms switch interval
    # each time); at its default 8 kB chunks a 5,000-row batch paid that ~150 times.
    data = payload.encode()
    cur.copy_expert(f"COPY {table} ({_TXN_COLS_SQL}) FROM STDIN", io.BytesIO(data), size=len(data) + 1)


def _ensure_staging(cur: psycopg2.extensions.cursor) -> None:
    # Session-local, emptied by every commit: nothing leaks between batches or consumers.
    cur.execute(
        "CREATE TEMP TABLE IF NOT EXISTS txn_stage "
        "(LIKE transactions INCLUDING DEFAULTS EXCLUDING CONSTRAINTS) ON COMMIT DELETE ROWS"
    )


def write_batch(
    conn: psycopg2.extensions.connection,
    txns: Sequence[Transaction],
    alerts: Sequence[Alert],
    rejections: Sequence[Rejection],
    *,
    raw_by_position: Mapping[tuple[int, int], tuple[bytes | None, bytes]] | None = None,
    topic: str = "",
    alert_positions: Sequence[tuple[int, int]] | None = None,
    direct: bool = True,
) -> BatchResult:
    """Store one polled batch idempotently inside the caller's transaction.

    Fast path: COPY straight into `transactions` inside a savepoint; in steady state no row exists
    yet, and this is the cheapest write PostgreSQL offers. If any transaction_id is already there
    (a replay after a crash, a duplicate id), the savepoint is rolled back and the batch goes
    through COPY into a temp table and `INSERT ... ON CONFLICT DO NOTHING` instead.
    A transaction_id already stored from the *same* Kafka message is a replay (no-op); from a
    *different* message it is rejected as `duplicate_transaction_id` (its alerts are dropped).
    Alerts are written only for the transactions this batch actually inserted, so a replay can
    never add a second alert. `alert_positions[i]` is the (partition, offset) of the message
    that raised `alerts[i]`: a rejected duplicate's alerts must not attach to the stored row
    that shares its id. `raw_by_position` maps (partition, offset) to (key, value) bytes, to
    keep the original message of such a duplicate. `direct=False` skips the fast path (the
    benchmark's staging-table ceiling, and tests of that path).
    """
    result = BatchResult(duplicates=[])
    with conn.cursor() as cur:
        inserted_at: set[tuple[int, int]] | None = None  # None: every transaction was inserted
        if txns:
            payload = copy_rows(txns)
            if direct:
                cur.execute("SAVEPOINT direct_copy")
                try:
                    _copy_in(cur, "transactions", payload)
                    cur.execute("RELEASE SAVEPOINT direct_copy")
                    result.inserted = len(txns)
                except psycopg2.errors.UniqueViolation:
                    cur.execute("ROLLBACK TO SAVEPOINT direct_copy")
                    direct = False
            if not direct:
                inserted_at = _insert_via_staging(cur, txns, payload, result, raw_by_position or {}, topic)
                result.inserted = len(inserted_at)
        if inserted_at is None:
            stored_alerts = list(alerts)
        elif alert_positions is not None:
            stored_alerts = [a for a, at in zip(alerts, alert_positions, strict=True) if at in inserted_at]
        else:
            ids = {t.transaction_id for t in txns if (t.kafka_partition, t.kafka_offset) in inserted_at}
            stored_alerts = [a for a in alerts if a.transaction_id in ids]
        result.alerts_by_type.update(a.alert_type for a in stored_alerts)
        if stored_alerts:
            psycopg2.extras.execute_values(
                cur,
                "INSERT INTO alerts (transaction_id, account_id, alert_type, severity, alert_message, details) "
                "VALUES %s ON CONFLICT ON CONSTRAINT alerts_one_per_rule DO NOTHING",
                [
                    (
                        a.transaction_id,
                        a.account_id,
                        a.alert_type,
                        a.severity,
                        a.message,
                        orjson.dumps(a.details).decode(),
                    )
                    for a in stored_alerts
                ],
                page_size=1000,
            )
            result.alerts_inserted = cur.rowcount
        all_rejections = [*rejections, *(result.duplicates or [])]
        if all_rejections:
            result.rejected_inserted = insert_rejections(cur, all_rejections)
    return result


def _insert_via_staging(
    cur: psycopg2.extensions.cursor,
    txns: Sequence[Transaction],
    payload: str,
    result: BatchResult,
    raw_by_position: Mapping[tuple[int, int], tuple[bytes | None, bytes]],
    topic: str,
) -> set[tuple[int, int]]:
    """The idempotent path: only rows whose transaction_id is new are inserted. Returns the
    (partition, offset) of the rows inserted."""
    _ensure_staging(cur)
    _copy_in(cur, "txn_stage", payload)
    cur.execute(
        f"INSERT INTO transactions ({_TXN_COLS_SQL}) SELECT {_TXN_COLS_SQL} FROM txn_stage "
        "ORDER BY kafka_partition, kafka_offset "
        "ON CONFLICT (transaction_id) DO NOTHING RETURNING kafka_partition, kafka_offset"
    )
    inserted_at = {(r[0], r[1]) for r in cur.fetchall()}
    # By Kafka coordinates, not by id: a second message reusing an id within this very batch
    # must be rejected too, not silently merged with the first.
    missing = [t for t in txns if (t.kafka_partition, t.kafka_offset) not in inserted_at]
    if missing:
        _classify_not_inserted(cur, missing, result, raw_by_position, topic)
    return inserted_at


def _classify_not_inserted(
    cur: psycopg2.extensions.cursor,
    missing: Sequence[Transaction],
    result: BatchResult,
    raw_by_position: Mapping[tuple[int, int], tuple[bytes | None, bytes]],
    topic: str,
) -> None:
    cur.execute(
        "SELECT transaction_id, kafka_partition, kafka_offset FROM transactions WHERE transaction_id = ANY(%s)",
        ([t.transaction_id for t in missing],),
    )
    stored = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
    assert result.duplicates is not None
    for t in missing:
        where = stored.get(t.transaction_id)
        if where == (t.kafka_partition, t.kafka_offset):
            result.already_stored += 1
            continue
        key, raw = raw_by_position.get((t.kafka_partition, t.kafka_offset), (None, b""))
        result.duplicates.append(
            Rejection(
                reason="duplicate_transaction_id",
                detail=f"transaction_id {t.transaction_id!r} already stored from partition "
                f"{where[0] if where else '?'} offset {where[1] if where else '?'}",
                raw=raw,
                topic=topic,
                partition=t.kafka_partition,
                offset=t.kafka_offset,
                transaction_id=t.transaction_id,
                key=key,
            )
        )


def find_unstorable(
    conn: psycopg2.extensions.connection, txns: Sequence[Transaction]
) -> list[tuple[Transaction, str]]:
    """Rows the database refuses (a constraint validation did not foresee), with the error.

    Slow (one savepoint per row), so it only runs after a batch failed with a data error: it turns
    a poison batch into rejections instead of a crash loop. Nothing is kept: every row is rolled back.
    """
    bad: list[tuple[Transaction, str]] = []
    with conn.cursor() as cur:
        _ensure_staging(cur)
        for t in txns:
            cur.execute("SAVEPOINT probe")
            try:
                cur.copy_expert(f"COPY txn_stage ({_TXN_COLS_SQL}) FROM STDIN", io.StringIO(copy_rows([t])))
                cur.execute(
                    f"INSERT INTO transactions ({_TXN_COLS_SQL}) SELECT {_TXN_COLS_SQL} FROM txn_stage "
                    "ON CONFLICT (transaction_id) DO NOTHING"
                )
            except CONNECTION_ERRORS:
                raise
            except psycopg2.Error as exc:
                bad.append((t, f"{type(exc).__name__}: {str(exc).strip()}"[:500]))
            cur.execute("ROLLBACK TO SAVEPOINT probe")
    conn.rollback()
    return bad


def insert_rejections(cur: psycopg2.extensions.cursor, rejections: Iterable[Rejection]) -> int:
    rows = [
        (
            r.topic,
            r.partition,
            r.offset,
            r.reason,
            r.detail,
            r.transaction_id,
            None if r.key is None else psycopg2.Binary(r.key),
            psycopg2.Binary(r.raw),
        )
        for r in rejections
    ]
    psycopg2.extras.execute_values(
        cur,
        "INSERT INTO rejected_transactions (kafka_topic, kafka_partition, kafka_offset, reason, detail, "
        "transaction_id, message_key, raw_payload) VALUES %s "
        "ON CONFLICT ON CONSTRAINT rejected_one_per_message DO NOTHING",
        rows,
        page_size=500,
    )
    return cur.rowcount


# --------------------------------------------------------------------------- state rebuild


def load_recent_history(
    conn: psycopg2.extensions.connection,
    partitions: Sequence[int],
    *,
    history_seconds: float,
    max_per_account: int,
) -> dict[int, list[tuple[Any, ...]]]:
    """Recent transactions of the accounts in `partitions`, oldest first, per partition.

    The window is anchored at each partition's newest stored event time rather than at now(),
    so replaying an old stream rebuilds the same state it had when it was first processed.
    Rows: (transaction_id, account_id, amount, merchant, country, latitude, longitude, epoch).
    """
    if not partitions:
        return {}
    with conn.cursor() as cur:
        cur.execute(
            """
            WITH newest AS (
                SELECT kafka_partition, max("timestamp") AS ts
                FROM transactions WHERE kafka_partition = ANY(%(parts)s) GROUP BY kafka_partition
            ), recent AS (
                SELECT t.kafka_partition, t.transaction_id, t.account_id, t.amount::float8, t.merchant,
                       t.country::text, t.latitude, t.longitude, extract(epoch FROM t."timestamp")::float8 AS epoch,
                       row_number() OVER (PARTITION BY t.account_id ORDER BY t."timestamp" DESC,
                                          t.kafka_offset DESC) AS rn
                FROM transactions t JOIN newest n USING (kafka_partition)
                WHERE t."timestamp" >= n.ts - make_interval(secs => %(secs)s)
            )
            SELECT kafka_partition, transaction_id, account_id, amount, merchant, country, latitude,
                   longitude, epoch
            FROM recent WHERE rn <= %(k)s
            ORDER BY kafka_partition, epoch, transaction_id
            """,
            {"parts": list(partitions), "secs": history_seconds, "k": max_per_account},
        )
        out: dict[int, list[tuple[Any, ...]]] = {p: [] for p in partitions}
        for row in cur:
            out[row[0]].append(row[1:])
    return out


@contextmanager
def configured_database(maxconn: int = 2) -> Iterator[tuple[Settings, Database]]:
    """Settings from the environment and a small pool, closed afterwards: what one Airflow task
    or CLI command needs (the consumer keeps its own pool for its lifetime)."""
    settings = load_settings()
    db = Database(settings.postgres, maxconn=maxconn)
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
            applied = migrate(settings.postgres)
            print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
        elif args.cmd == "status":
            done, pending = migration_status(settings.postgres)
            print("applied:", ", ".join(done) or "none")
            print("pending:", ", ".join(pending) or "none")
    except (DatabaseUnavailable, MigrationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
