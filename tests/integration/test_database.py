"""The database layer against a real PostgreSQL: the pool keeps its connections (a new backend per
batch cost more than writing the batch), discards broken ones, write_batch is idempotent."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest

from consumer.storage import write_batch
from consumer.validation import validate
from producer.generator import AccountPool, TransactionGenerator, encode
from utils.config import PostgresSettings, ValidationLimits
from utils.database import Database
from utils.errors import DatabaseUnavailable
from utils.models import Transaction


@pytest.fixture
def db(fresh_db: PostgresSettings) -> Iterator[Database]:
    database = Database(fresh_db, maxconn=2)
    yield database
    database.close()


def _backend_pid(db: Database) -> int:
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        row = cur.fetchone()
        assert row is not None
        return int(row[0])


def _txns(n: int, *, seed: int = 3, first_offset: int = 0) -> list[Transaction]:
    gen = TransactionGenerator(seed, AccountPool.create(50, 0), 0.0, "simulated")
    out = []
    for i, msg in enumerate(gen.next_batch(n)):
        key, value = encode(msg)
        item = validate(
            value,
            topic="t",
            partition=0,
            offset=first_offset + i,
            key=key,
            limits=ValidationLimits(),
            now=time.time(),
        )
        assert isinstance(item, Transaction), item
        out.append(item)
    return out


def test_the_pool_reuses_its_connection_between_batches(db: Database) -> None:
    first = _backend_pid(db)
    assert [_backend_pid(db) for _ in range(5)] == [first] * 5


def test_a_broken_connection_is_discarded_and_the_next_call_reconnects(db: Database) -> None:
    doomed = _backend_pid(db)
    with pytest.raises(DatabaseUnavailable), db.connection() as conn, conn.cursor() as cur:
        # Same role, so the app role may end its own session: the server side of `conn` is gone.
        cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    assert _backend_pid(db) != doomed


@pytest.mark.parametrize("direct", [True, False], ids=["direct-copy", "staging-table"])
def test_write_batch_twice_stores_each_row_once(db: Database, direct: bool) -> None:
    txns = _txns(200)
    with db.connection() as conn:
        first = write_batch(conn, txns, [], [], topic="t", direct=direct)
    with db.connection() as conn:
        again = write_batch(conn, txns, [], [], topic="t", direct=direct)
    assert (first.inserted, first.already_stored) == (200, 0)
    assert (again.inserted, again.already_stored, again.duplicates) == (0, 200, [])
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT transaction_id) FROM transactions")
        assert cur.fetchone() == (200, 200)


def test_a_reused_id_from_another_message_is_rejected_not_merged(db: Database) -> None:
    txns = _txns(10)
    with db.connection() as conn:
        write_batch(conn, txns, [], [], topic="t")
    # The same ids arriving again from other offsets: different messages, not a replay.
    moved = [dataclasses.replace(t, kafka_offset=t.kafka_offset + 100) for t in txns[:3]]
    with db.connection() as conn:
        result = write_batch(conn, [*moved, *_txns(5, seed=4, first_offset=500)], [], [], topic="t")
    assert result.inserted == 5 and result.already_stored == 0
    assert result.duplicates is not None
    assert sorted(r.offset for r in result.duplicates) == [100, 101, 102]
    assert {r.reason for r in result.duplicates} == {"duplicate_transaction_id"}
