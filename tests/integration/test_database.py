"""The database layer against a real PostgreSQL: the pool keeps its connections (a new backend per
batch cost more than writing the batch), discards broken ones, write_batch is idempotent."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator
from datetime import datetime
from types import SimpleNamespace

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest
from kafka import TopicPartition

from consumer import offsets
from consumer.account_state import AccountStates
from consumer.batch import Batch
from consumer.positions import NIL
from consumer.processor import TransactionProcessor
from consumer.storage import (
    BatchResult,
    StoredElsewhere,
    _insert_via_staging,
    copy_rows,
    load_accounts,
    write_batch,
)
from consumer.validation import validate
from producer.generator import AccountPool, TransactionGenerator, encode
from utils.config import PostgresSettings, Settings, ValidationLimits
from utils.database import Database, ErrorKind, classify, connect
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
            kafka_timestamp_ms=int(datetime.fromisoformat(msg["timestamp"]).timestamp() * 1000),  # sent then
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
        first = write_batch(conn, txns, [], [], direct=direct)
    with db.connection() as conn:
        again = write_batch(conn, txns, [], [], direct=direct)
    assert (first.inserted, first.already_stored) == (200, 0)
    assert (again.inserted, again.already_stored) == (0, 200)
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT transaction_id) FROM transactions")
        assert cur.fetchone() == (200, 200)


def _offsets_row(conn: psycopg2.extensions.connection, group: str) -> bytes:
    """A statement of the caller's for write_batch's prelude (the consumer's is rule_set_applied's)."""
    with conn.cursor() as cur:
        return bytes(
            cur.mogrify(
                "INSERT INTO consumer_offsets (consumer_group, kafka_topic, kafka_partition, next_offset) "
                "VALUES (%s, 't', 0, 0)",
                (group,),
            )
        )


@pytest.mark.parametrize("replay", [False, True], ids=["direct-copy", "after-a-unique-violation"])
def test_the_prelude_runs_once_in_the_batch_transaction_whichever_path_stores(
    db: Database, replay: bool
) -> None:
    """The prelude travels with the COPY (one round trip): it is kept when the COPY meets a stored
    id and the batch goes the staging way (the savepoint opens after it), and it rolls back with
    the batch."""
    txns = _txns(20)
    if replay:
        with db.connection() as conn:
            write_batch(conn, txns[:5], [], [])
    with db.connection() as conn:
        result = write_batch(conn, txns, [], [], prelude=_offsets_row(conn, "kept"))
    assert (result.inserted, result.already_stored) == ((15, 5) if replay else (20, 0))
    assert _count(db, "SELECT count(*) FROM consumer_offsets WHERE consumer_group = 'kept'") == 1
    with db.connection() as conn:  # no transactions to COPY: the prelude runs on its own
        write_batch(conn, [], [], [], prelude=_offsets_row(conn, "alone"))
    assert _count(db, "SELECT count(*) FROM consumer_offsets WHERE consumer_group = 'alone'") == 1
    with pytest.raises(RuntimeError), db.connection() as conn:
        write_batch(conn, _txns(3, seed=5, first_offset=100), [], [], prelude=_offsets_row(conn, "gone"))
        raise RuntimeError("the batch fails after its write: everything rolls back")
    assert _count(db, "SELECT count(*) FROM consumer_offsets WHERE consumer_group = 'gone'") == 0
    assert _count(db, "SELECT count(*) FROM transactions") == 20


def test_the_offsets_update_returns_the_transaction_id(db: Database) -> None:
    with db.connection() as conn:
        offsets.create(conn, "g", "t", {0: 0}, None)
    with db.connection() as conn, conn.cursor() as cur:
        fenced, xid = offsets.advance_with_xid(cur, "g", "t", {0: (0, 10)})
        cur.execute("SELECT txid_current()")
        assert (fenced, xid) == (set(), cur.fetchone()[0])  # type: ignore[index]
    with db.connection() as conn, conn.cursor() as cur:
        assert offsets.advance_with_xid(cur, "g", "t", {0: (0, 20)}) == ({0}, None)  # fenced


def test_a_reused_id_from_another_message_rolls_the_batch_back(db: Database) -> None:
    """The rules already saw such a message, so nothing of the batch may be stored: the
    consumer learns where each id is stored and prepares the batch again."""
    txns = _txns(10)
    with db.connection() as conn:
        write_batch(conn, txns, [], [])
    # The same ids arriving again from other offsets: different messages, not a replay.
    moved = [dataclasses.replace(t, kafka_offset=t.kafka_offset + 100) for t in txns[:3]]
    with pytest.raises(StoredElsewhere) as caught, db.connection() as conn:
        write_batch(conn, [*moved, *_txns(5, seed=4, first_offset=500)], [], [])
    assert caught.value.stored_at == {t.transaction_id: ("t", 0, t.kafka_offset, NIL) for t in txns[:3]}
    assert _count(db, "SELECT count(*) FROM transactions") == 10


def test_a_recreated_topic_repeats_positions_never_already_stored(db: Database) -> None:
    """Other messages at stored (topic, partition, offset) positions (the topic was recreated) are
    new rows, told apart by their ids: "already stored" needs the same id at the same position."""
    txns = _txns(3)
    with db.connection() as conn:
        write_batch(conn, txns, [], [])
    other = [dataclasses.replace(t, transaction_id=f"new-{i}") for i, t in enumerate(_txns(3, seed=9))]
    with db.connection() as conn:
        result = write_batch(conn, other, [], [], direct=False)
    assert (result.inserted, result.already_stored) == (3, 0)
    assert _count(db, "SELECT count(*) FROM transactions") == 6


def _count(db: Database, statement: str) -> int:
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(statement)
        row = cur.fetchone()
        assert row is not None
        return int(row[0])


def test_offsets_advance_only_from_where_the_batch_started(db: Database) -> None:
    with db.connection() as conn:
        offsets.create(conn, "g", "t", {0: 0, 1: 5}, None)
        offsets.create(conn, "g", "t", {0: 99}, None)  # a row made meanwhile is kept
        assert offsets.read(conn, "g", "t", [0, 1, 2]) == {
            0: offsets.Stored(0, None),
            1: offsets.Stored(5, None),
        }
    with db.connection() as conn, conn.cursor() as cur:
        assert offsets.advance(cur, "g", "t", {0: (0, 10), 1: (5, 8)}) == set()
    with db.connection() as conn, conn.cursor() as cur:
        # A zombie that started both partitions from before: fenced on both, nothing moves.
        assert offsets.advance(cur, "g", "t", {0: (0, 20), 1: (5, 9)}) == {0, 1}
    with db.connection() as conn:
        assert offsets.read(conn, "g", "t", [0, 1]) == {
            0: offsets.Stored(10, None),
            1: offsets.Stored(8, None),
        }


def test_load_accounts_returns_the_newest_per_account_in_stream_order(db: Database) -> None:
    txns = _txns(400)
    with db.connection() as conn:
        write_batch(conn, txns, [], [])
        # The same account under another topic must not leak in.
        write_batch(
            conn,
            [
                dataclasses.replace(t, kafka_topic="other", transaction_id=f"o{t.transaction_id}")
                for t in txns[:50]
            ],
            [],
            [],
        )
    accounts = sorted({t.account_id for t in txns})[:5]
    with db.connection() as conn:
        rows = load_accounts(conn, "t", [*accounts, "nobody"], 4)
    states = AccountStates(4, 10 * 86_400.0)
    states.load([*accounts, "nobody"], rows)
    for account in accounts:
        mine = sorted(
            (t for t in txns if t.account_id == account),
            key=lambda t: (t.epoch, t.kafka_partition, t.kafka_offset),
        )
        history = states.get(account)
        assert history is not None
        assert [e.transaction_id for e in history] == [t.transaction_id for t in mine[-4:]]
        assert [e.epoch for e in history] == [t.epoch for t in mine[-4:]]  # the same floats as live
    assert len(states.get("nobody") or ()) == 0


def test_errors_are_classified_by_sqlstate(db: Database) -> None:
    with (
        pytest.raises(psycopg2.errors.QueryCanceled) as timeout,
        db.connection() as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SET LOCAL statement_timeout = 50")
        cur.execute("SELECT pg_sleep(1)")
    assert classify(timeout.value) is ErrorKind.TIMEOUT  # an OperationalError, and yet not an outage
    with (
        pytest.raises(psycopg2.errors.SerializationFailure) as conflict,
        db.connection() as conn,
        conn.cursor() as cur,
    ):
        cur.execute("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'serialization_failure'; END $$")
    assert classify(conflict.value) is ErrorKind.CONFLICT
    with pytest.raises(psycopg2.errors.CheckViolation) as data, db.connection() as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO consumer_offsets VALUES ('g', 't', 0, -1)")
    assert classify(data.value) is ErrorKind.DATA
    with pytest.raises(DatabaseUnavailable) as outage, db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    assert classify(outage.value) is ErrorKind.OUTAGE
    assert _backend_pid(db) > 0  # the pool still works after each of them


def test_offsets_advance_only_for_the_topic_incarnation_they_were_stored_for(db: Database) -> None:
    """Issue 18, item 4: a member alive across a delete-and-recreate writes under the new
    topic id; the row of the old incarnation fences it even where the offsets line up."""
    old, new = uuid.UUID(int=11), uuid.UUID(int=12)
    with db.connection() as conn:
        offsets.create(conn, "g-inc", "t", {0: 0}, old)
    with db.connection() as conn, conn.cursor() as cur:
        assert offsets.advance(cur, "g-inc", "t", {0: (0, 10)}, new) == {0}
    with db.connection() as conn, conn.cursor() as cur:
        assert offsets.advance(cur, "g-inc", "t", {0: (0, 10)}, old) == set()
        assert offsets.advance(cur, "g-inc", "t", {0: (10, 12)}, None) == set()  # a broker without ids


class _DeleteBeforeLookup:
    """A cursor that, right before the staging path looks up the ids it could not insert,
    lets another session delete one of them (retention, or an operator) and commit."""

    def __init__(self, cur: psycopg2.extensions.cursor, pg: PostgresSettings, victim: str) -> None:
        self.cur, self.pg, self.victim, self.deleted = cur, pg, victim, False

    def execute(self, sql: str, params: object = None) -> None:
        if sql.startswith("SELECT transaction_id, kafka_topic") and not self.deleted:
            # The retention job's role: the consumer's may not delete.
            with contextlib.closing(connect(self.pg, migration=True)) as other, other, other.cursor() as cur:
                # Both the row and its registry entry (migration 090), as retention removes them.
                cur.execute("DELETE FROM transactions WHERE transaction_id = %s", (self.victim,))
                assert cur.rowcount == 1
                cur.execute("DELETE FROM transaction_ids WHERE transaction_id = %s", (self.victim,))
                assert cur.rowcount == 1
            self.deleted = True
        self.cur.execute(sql, params)

    def __getattr__(self, name: str) -> object:
        return getattr(self.cur, name)


def test_a_replayed_row_deleted_meanwhile_is_stored_again_not_dropped(
    db: Database, fresh_db: PostgresSettings
) -> None:
    """Issue 18, item 7: the staging path took a row it could not insert for a replay, but the
    row was gone when it looked: the message was neither inserted nor already stored."""
    txns = _txns(10)
    with db.connection() as conn:
        write_batch(conn, txns, [], [])
    result = BatchResult()
    with db.connection() as conn, conn.cursor() as cur:
        proxy = _DeleteBeforeLookup(cur, fresh_db, txns[0].transaction_id)
        inserted_at = _insert_via_staging(proxy, txns, copy_rows(txns), result, NIL)  # type: ignore[arg-type]
    assert proxy.deleted
    assert (sorted(inserted_at), result.already_stored) == ([(0, 0)], 9)
    assert _count(db, "SELECT count(*) FROM transactions") == 10


class _CommitAnswerLost(Database):
    """PostgreSQL commits the first transaction that reaches COMMIT, and the connection dies
    before its answer arrives (a network cut at the worst moment)."""

    armed = False

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        with super().connection() as conn:
            yield conn
            if not self.armed:
                return
            self.armed = False
            conn.commit()
        raise DatabaseUnavailable("lost the PostgreSQL connection: server closed the connection unexpectedly")


def test_a_commit_whose_answer_was_lost_is_resolved_by_reading_back_not_taken_for_a_fence(
    fresh_db: PostgresSettings,
) -> None:
    """Issue 18, item 7: the retry found its own offsets moved, reported a zombie fence and
    left the batch out of the summary (it was stored)."""
    settings = dataclasses.replace(Settings(), postgres=fresh_db)
    proc = TransactionProcessor(settings)
    fake_db = _CommitAnswerLost(fresh_db, maxconn=3)
    proc.db = proc.retry.db = fake_db
    fences: list[set[int]] = []
    proc.member = SimpleNamespace(  # type: ignore[assignment]
        fenced=fences.append, rewind=lambda: None, keep_membership=lambda seconds: None, close=lambda: None
    )
    txns = _txns(20)
    batch = Batch(txns=txns, moves={TopicPartition("t", 0): (0, 20)})
    with fake_db.connection() as conn:
        offsets.create(conn, settings.kafka.consumer_group, settings.kafka.topic, {0: 0}, None)
    fake_db.armed = True
    try:
        with pytest.raises(DatabaseUnavailable) as lost:
            proc._write_once(batch)
        outcome = proc._persist(batch, lost.value)
        assert isinstance(outcome, BatchResult), outcome
        assert (outcome.inserted, fences, proc.summary.fenced) == (20, [], 0)
        assert _count(fake_db, "SELECT count(*) FROM transactions") == 20
    finally:
        proc.close()
