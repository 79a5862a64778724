"""The pure decisions behind exactly-once (issue 10), without Kafka or PostgreSQL: where a gained
partition starts, which copy of a reused id is kept, what a write's rollback teaches, what a
database error means and how it is retried, what the dead-letter topic gets."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import psycopg2
import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, TopicAuthorizationFailedError

from consumer.account_state import AccountStates
from consumer.batch import Facts, evaluate_batch, validate_records
from consumer.dlq import DLQ_MAX_PAYLOAD, dlq_record, fix_for
from consumer.offsets import Start, StartKind, Stored, plan_start
from consumer.retry import CONFLICT_RETRIES, TIMEOUT_RETRIES, Attempts, DbRetry
from utils.config import RuleThresholds, ValidationLimits
from utils.database import ErrorKind, classify
from utils.errors import DatabaseUnavailable, TxmonError
from utils.models import Rejection

# -- where a gained partition starts


TOPIC_ID = uuid.UUID(int=7)


@pytest.mark.parametrize(
    ("stored", "log_start", "log_end", "now_id", "kind", "offset"),
    [
        (Stored(40, TOPIC_ID), 0, 100, TOPIC_ID, StartKind.RESUME, 40),
        (Stored(100, TOPIC_ID), 0, 100, TOPIC_ID, StartKind.RESUME, 100),  # read to the end: nothing new
        (Stored(40, None), 0, 100, TOPIC_ID, StartKind.RESUME, 40),  # no id recorded: offsets decide
        (Stored(40, TOPIC_ID), 0, 100, None, StartKind.RESUME, 40),  # a broker without topic ids
        (Stored(40, TOPIC_ID), 0, 100, uuid.UUID(int=8), StartKind.BLOCKED, 40),  # recreated
        (Stored(140, TOPIC_ID), 0, 100, TOPIC_ID, StartKind.BLOCKED, 140),  # truncated or recreated
        (Stored(40, TOPIC_ID), 60, 100, TOPIC_ID, StartKind.SKIP_DELETED, 60),  # retention was faster
    ],
)
def test_plan_start(
    stored: Stored, log_start: int, log_end: int, now_id: uuid.UUID | None, kind: StartKind, offset: int
) -> None:
    plan = plan_start(stored, log_start, log_end, now_id, "tx/3")
    assert (plan.kind, plan.offset) == (kind, offset)
    if kind is StartKind.RESUME:
        assert plan == Start(StartKind.RESUME, offset)
    else:
        assert plan.message.startswith("tx/3: ")  # loud, and names the partition
    if kind is StartKind.SKIP_DELETED:
        assert "20 messages lost" in plan.message


# -- which copy of an id is kept: the stream decides


@dataclass(frozen=True)
class Rec:
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = 1_764_000_000_000


def msg(tid: str, account: str = "ACC-1", minute: int = 0, amount: float = 10.0) -> tuple[bytes, bytes]:
    doc = {
        "schema_version": 1,
        "transaction_id": tid,
        "account_id": account,
        "transaction_type": "purchase",
        "amount": amount,
        "currency": "USD",
        "timestamp": datetime(2025, 11, 24, 12, minute, tzinfo=UTC).isoformat(),
        "channel": "pos",
        "country": "US",
        "merchant": "Shop",
    }
    return account.encode(), orjson.dumps(doc)


def records(*parts: list[tuple[bytes, bytes]]) -> dict[TopicPartition, list[Rec]]:
    return {
        TopicPartition("tx", p): [Rec(o, k, v) for o, (k, v) in enumerate(ms)] for p, ms in enumerate(parts)
    }


RATES = RuleThresholds().rate_table()


def test_an_id_is_kept_at_its_first_position_in_the_partition() -> None:
    batch = validate_records(records([msg("a"), msg("b"), msg("a", amount=99.0)]), ValidationLimits(), RATES)
    assert [(t.transaction_id, t.kafka_offset) for t in batch.txns] == [("a", 0), ("b", 1)]
    [dup] = batch.rejections
    assert (dup.reason, dup.partition, dup.offset) == ("duplicate_transaction_id", 0, 2)
    assert "already used at partition 0 offset 0" in dup.detail and b'"amount":99.0' in dup.raw


def test_what_a_rolled_back_write_taught_decides_before_the_rules() -> None:
    """The write found "a" stored at tx/1@0 and refused the row at tx/0@1: prepared again, the
    stored copy keeps its id whatever the partition order, the other copy and the refused row
    become rejections, so no rule ever counts them."""
    recs = records([msg("a", minute=1), msg("b", minute=2)], [msg("a", minute=3)])
    facts = Facts()
    facts.learn_stored({"a": ("tx", 1, 0)})
    facts.learn_unstorable({("tx", 0, 1): "CheckViolation: nope"})
    batch = validate_records(recs, ValidationLimits(), RATES, facts)
    assert [(t.kafka_partition, t.kafka_offset) for t in batch.txns] == [(1, 0)]
    assert sorted((r.reason, r.partition, r.offset) for r in batch.rejections) == [
        ("database_rejected", 0, 1),
        ("duplicate_transaction_id", 0, 0),
    ]


def test_facts_are_bounded() -> None:
    facts = Facts(limit=3)
    facts.learn_stored({f"id{i}": ("tx", 0, i) for i in range(5)})
    assert list(facts.stored_at) == ["id2", "id3", "id4"]  # forgetting one costs a rollback, no more


def test_evaluate_needs_every_account_loaded_and_keeps_alerts_at_their_message() -> None:
    recs = records([msg(f"t{i}", minute=0, amount=10.0 + i) for i in range(9)])
    batch = validate_records(recs, ValidationLimits(), RATES)
    states = AccountStates(50, 86_400.0)
    with pytest.raises(KeyError):
        evaluate_batch(batch, states, RuleThresholds())  # never a made-up empty history
    states.load(states.missing(batch.accounts()), [])
    evaluate_batch(batch, states, RuleThresholds())
    assert [a.alert_type for a in batch.alerts] == ["velocity"]  # the 9th within 60 s
    assert batch.alert_positions == [(0, 8)] and batch.alerts[0].transaction_id == "t8"
    assert batch.spans == {TopicPartition("tx", 0): (0, 8)}


# -- what a database error means, and how it is retried


def error(cls: type[psycopg2.Error], pgcode: str | None) -> psycopg2.Error:
    return type(f"Fake{cls.__name__}", (cls,), {"pgcode": pgcode})("injected")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (DatabaseUnavailable("down"), ErrorKind.OUTAGE),
        (error(psycopg2.OperationalError, None), ErrorKind.OUTAGE),  # refused or reset by libpq
        (error(psycopg2.InterfaceError, None), ErrorKind.OUTAGE),  # connection already closed
        (error(psycopg2.OperationalError, "57P01"), ErrorKind.OUTAGE),  # admin_shutdown
        (error(psycopg2.OperationalError, "08006"), ErrorKind.OUTAGE),  # connection_failure
        (error(psycopg2.OperationalError, "57014"), ErrorKind.TIMEOUT),  # statement_timeout, same class!
        (error(psycopg2.OperationalError, "55P03"), ErrorKind.TIMEOUT),  # lock_timeout
        (error(psycopg2.errors.TransactionRollbackError, "40001"), ErrorKind.CONFLICT),
        (error(psycopg2.errors.TransactionRollbackError, "40P01"), ErrorKind.CONFLICT),
        (error(psycopg2.DataError, "22003"), ErrorKind.DATA),
        (error(psycopg2.IntegrityError, "23514"), ErrorKind.DATA),
        (error(psycopg2.ProgrammingError, "42501"), ErrorKind.OTHER),  # insufficient_privilege
        (ValueError("a bug"), ErrorKind.OTHER),
    ],
)
def test_errors_are_classified_by_sqlstate_not_by_class_or_text(exc: BaseException, kind: ErrorKind) -> None:
    assert classify(exc) is kind


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (psycopg2.OperationalError, "25P03"),  # idle_in_transaction_session_timeout: the server closed it
        (psycopg2.OperationalError, "57P05"),  # idle_session_timeout: the server closed it
        (psycopg2.InternalError, "25006"),  # read_only_sql_transaction: a standby answers after a failover
    ],
)
def test_a_connection_the_server_closed_or_demoted_is_an_outage(cls: type[psycopg2.Error], code: str) -> None:
    """Issue 18, item 7: these ended the consumer instead of waiting for the database."""
    assert classify(error(cls, code)) is ErrorKind.OUTAGE


class Clock:
    def __init__(self) -> None:
        self.waited: list[float] = []

    def wait(self, seconds: float) -> None:
        self.waited.append(seconds)


def retry(stop: threading.Event | None = None) -> tuple[DbRetry, Clock]:
    clock = Clock()
    return DbRetry(None, stop or threading.Event(), clock.wait, max_backoff_s=2.0), clock  # type: ignore[arg-type]


def test_conflicts_are_retried_at_once_then_backed_off() -> None:
    r, clock = retry()
    attempts = Attempts()
    conflict = error(psycopg2.errors.TransactionRollbackError, "40001")
    for _ in range(CONFLICT_RETRIES):
        assert r.again(conflict, attempts, "storing")
    assert clock.waited == []
    assert r.again(conflict, attempts, "storing") and clock.waited == [0.5]


def test_timeouts_back_off_a_bounded_number_of_times_and_then_say_why() -> None:
    r, clock = retry()
    attempts = Attempts()
    timeout = error(psycopg2.OperationalError, "57014")
    for _ in range(TIMEOUT_RETRIES):
        assert r.again(timeout, attempts, "storing")
    assert clock.waited == [0.5, 1.0, 2.0, 2.0, 2.0]
    with pytest.raises(TxmonError, match=r"not an outage.*POSTGRES_STATEMENT_TIMEOUT_MS"):
        r.again(timeout, attempts, "storing")


def test_outages_are_retried_until_asked_to_stop_and_other_errors_are_raised() -> None:
    stop = threading.Event()
    r, clock = retry(stop)
    attempts = Attempts()
    for _ in range(10):
        assert r.again(DatabaseUnavailable("down"), attempts, "storing")
    assert clock.waited[-1] == 2.0
    stop.set()
    assert not r.again(DatabaseUnavailable("down"), attempts, "storing")
    bug = error(psycopg2.ProgrammingError, "42P01")
    with pytest.raises(psycopg2.ProgrammingError):
        r.again(bug, Attempts(), "storing")


# -- the dead-letter topic


def test_a_dead_letter_record_carries_the_source_and_fits_the_broker() -> None:
    r = Rejection("invalid_json", "not valid JSON", b"{", "tx", 3, 42, None, b"key")
    record = dlq_record(r)
    headers = dict(record["headers"])
    assert record["value"] == b"{" and record["key"] == b"key"
    assert headers["dlq.source.topic"] == b"tx" and headers["dlq.source.offset"] == b"42"
    big = dlq_record(Rejection("message_too_large", "big", b"x" * (DLQ_MAX_PAYLOAD + 1), "tx", 0, 1))
    assert (
        big["value"] == b""
        and dict(big["headers"])["dlq.payload_omitted"] == str(DLQ_MAX_PAYLOAD + 1).encode()
    )


@pytest.mark.parametrize(
    ("exc", "fix"),
    [
        (MessageSizeTooLargeError(), "max.message.bytes"),
        (TopicAuthorizationFailedError(), "grant this client WRITE"),
        (KafkaTimeoutError(), "make topics"),
    ],
)
def test_a_refusal_names_its_fix(exc: Exception, fix: str) -> None:
    assert fix in fix_for(exc, "tx.dlq")
