"""One polled batch through the pure core: validate, decide each message's fate, evaluate the rules.

No I/O: the consumer loads the accounts a batch needs between `validate_records` and
`evaluate_batch` (`AccountStates.missing` names them), and the tests' model runs the same two
functions over a whole stream at once. Every decision is a function of the messages and their
Kafka coordinates, never of the clock or of how the messages were grouped into polls:

* validation judges time against the record's own Kafka timestamp (consumer/validation.py);
* an id used twice is kept at its first position within the partition and rejected after it
  (`duplicate_transaction_id`) before any rule sees it. Across partitions the stream gives no
  order: within one batch the first partition polled wins, across batches the first row the
  database commits. A write that finds an id stored from another message rolls back, and the
  batch is prepared again with that knowledge (`Facts`), so the rules never count such a message.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from kafka import TopicPartition

from consumer.account_state import AccountStates, Event
from consumer.positions import NIL
from consumer.rules import dispatcher, evaluate
from consumer.rulesets.active import ActiveRules
from consumer.timings import BatchTiming
from consumer.validation import accept, validate_full
from utils.config import RuleThresholds, ValidationLimits
from utils.models import Alert, Rejection, Transaction
from utils.money import RateTable

__all__ = [
    "Batch",
    "Facts",
    "KafkaRecord",
    "RawByPosition",
    "evaluate_batch",
    "evaluate_message",
    "validate_records",
]


class KafkaRecord(Protocol):
    """What is read of a kafka-python ConsumerRecord (tests pass their own records)."""

    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int | None: ...


Records = Mapping[TopicPartition, Sequence[KafkaRecord]]
K = TypeVar("K")
V = TypeVar("V")


class RawByPosition(Mapping[tuple[int, int], tuple[bytes | None, bytes]]):
    """(partition, offset) -> (key, value) of one poll's records, indexed on first use: only a
    rejected duplicate needs its original bytes back, so the common batch never pays for it."""

    __slots__ = ("_index", "_records")

    def __init__(self, records: Records) -> None:
        self._records = records
        self._index: dict[tuple[int, int], tuple[bytes | None, bytes]] | None = None

    def _built(self) -> dict[tuple[int, int], tuple[bytes | None, bytes]]:
        if self._index is None:
            self._index = {
                (tp.partition, rec.offset): (rec.key, rec.value or b"")
                for tp, recs in self._records.items()
                for rec in recs
            }
        return self._index

    def __getitem__(self, position: tuple[int, int]) -> tuple[bytes | None, bytes]:
        return self._built()[position]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._built())

    def __len__(self) -> int:
        return len(self._built())


@dataclass(slots=True)
class Batch:
    """One poll's worth of messages, validated and evaluated, ready to store."""

    txns: list[Transaction] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    alert_positions: list[tuple[int, int]] = field(default_factory=list)  # message that raised alerts[i]
    rejections: list[Rejection] = field(default_factory=list)
    raw: Mapping[tuple[int, int], tuple[bytes | None, bytes]] = field(default_factory=dict)
    spans: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)  # first, last offset read
    # Per partition (offset stored before this batch, offset after it): set by the consumer.
    moves: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)
    topic_id: uuid.UUID | None = None  # the topic incarnation the moves belong to: set by the consumer
    evaluation_s: float = 0.0  # validating and evaluating it (account loads excluded)
    load_s: float = 0.0  # loading the accounts not in memory (a wait for the batch in flight included)
    rule_set_version: int | None = None  # the version the rules ran with (None: the environment's)
    incarnation: uuid.UUID = NIL  # the topic's, Kafka's topic id (consumer/positions.py): set by the consumer
    timing: BatchTiming | None = None  # where its time went (consumer/timings.py), when recorded
    _accounts: set[str] | None = None

    @property
    def size(self) -> int:
        return len(self.txns) + len(self.rejections)

    def accounts(self) -> set[str]:
        """The accounts of the batch's transactions, worked out once they are settled."""
        if self._accounts is None:
            self._accounts = {t.account_id for t in self.txns}
        return self._accounts


@dataclass(slots=True)
class Facts:
    """What rolled-back writes taught about messages of the stream, kept so that preparing those
    messages again settles their fate before the rules see them. Bounded: a forgotten fact only
    costs another rollback, never a wrong result (the write checks every id again)."""

    limit: int = 10_000
    # transaction_id -> (topic, partition, offset, topic incarnation) of the row stored with that id
    stored_at: dict[str, tuple[str, int, int, uuid.UUID]] = field(default_factory=dict)
    # (topic, partition, offset) -> why PostgreSQL refused the row
    unstorable: dict[tuple[str, int, int], str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.stored_at or self.unstorable)

    def learn_stored(self, stored_at: Mapping[str, tuple[str, int, int, uuid.UUID]]) -> None:
        _remember(self.stored_at, stored_at, self.limit)

    def learn_unstorable(self, unstorable: Mapping[tuple[str, int, int], str]) -> None:
        _remember(self.unstorable, unstorable, self.limit)


def _remember(into: dict[K, V], new: Mapping[K, V], limit: int) -> None:
    for key, value in new.items():
        into.pop(key, None)
        into[key] = value
    while len(into) > limit:
        del into[next(iter(into))]


def validate_records(
    records: Records,
    limits: ValidationLimits,
    rates: RateTable,
    facts: Facts | None = None,
    *,
    incarnation: uuid.UUID = NIL,
    partition_counts: Collection[int] | None = None,
) -> Batch:
    """Validate a poll's records (in partition order) and decide which of the valid ones are
    stored: an id is kept at its first position and rejected after it. `incarnation`: the
    topic's (consumer/positions.py), which a position is of. `partition_counts`: the counts the
    incarnation has had (consumer/partition_counts.py), where a key may be (None: unchecked)."""
    batch = Batch(raw=RawByPosition(records), incarnation=incarnation)
    txns, rejections = batch.txns, batch.rejections
    # `validate`, written out: its two paths called positionally (a call with nine keywords
    # per message cost more than several of the checks it makes).
    for tp, recs in records.items():
        topic, partition = tp.topic, tp.partition
        for rec in recs:
            raw, stamp = rec.value, rec.timestamp  # stamp: stored in the log, the same on every replay
            if raw and stamp is not None and stamp >= 0:
                txn = accept(
                    raw, topic, partition, rec.offset, rec.key, limits, stamp, rates, partition_counts
                )
                if txn is not None:
                    txns.append(txn)
                    continue
            item = validate_full(
                raw, topic, partition, rec.offset, rec.key, limits, stamp, rates, partition_counts
            )
            if type(item) is Rejection:
                rejections.append(item)
            else:
                txns.append(item)  # type: ignore[arg-type]
        if recs:
            batch.spans[tp] = (recs[0].offset, recs[-1].offset)
    if facts:
        _apply_facts(batch, facts)
    _keep_first_of_each_id(batch)
    return batch


def _apply_facts(batch: Batch, facts: Facts) -> None:
    kept: list[Transaction] = []
    incarnation = batch.incarnation
    for t in batch.txns:
        where = (t.kafka_topic, t.kafka_partition, t.kafka_offset)
        refused = facts.unstorable.get(where)
        stored = facts.stored_at.get(t.transaction_id)
        if refused is not None:
            batch.rejections.append(_reject(batch, t, "database_rejected", refused))
        elif stored is not None and stored != (*where, incarnation):
            detail = _already(t, stored)
            if stored[:3] == where:
                detail += " of an earlier incarnation of the topic (deleted and created again)"
            batch.rejections.append(_reject(batch, t, "duplicate_transaction_id", detail))
        else:
            kept.append(t)
    batch.txns = kept


def _keep_first_of_each_id(batch: Batch) -> None:
    first: dict[str, Transaction] = {}
    kept: list[Transaction] = []
    for t in batch.txns:
        seen = first.setdefault(t.transaction_id, t)
        if seen is t:
            kept.append(t)
        else:
            where = (seen.kafka_topic, seen.kafka_partition, seen.kafka_offset)
            batch.rejections.append(_reject(batch, t, "duplicate_transaction_id", _already(t, where)))
    if len(kept) != len(batch.txns):
        batch.txns = kept


def _already(t: Transaction, where: tuple[str, int, int] | tuple[str, int, int, uuid.UUID]) -> str:
    return f"transaction_id {t.transaction_id!r} already used at partition {where[1]} offset {where[2]}"


def _reject(batch: Batch, t: Transaction, reason: str, detail: str) -> Rejection:
    key, raw = batch.raw.get((t.kafka_partition, t.kafka_offset), (None, b""))
    return Rejection(
        reason, detail, raw, t.kafka_topic, t.kafka_partition, t.kafka_offset, t.transaction_id, key
    )


def evaluate_batch(batch: Batch, states: AccountStates, rules: ActiveRules | RuleThresholds) -> None:
    """Run the rules over the batch's transactions in order, each against its account's history,
    then add it to that history. Every account must be held (`states.missing` loaded first).
    `rules`: the active rule set, or thresholds alone for the environment's set.

    `evaluate_message` for each transaction, with what is the same for the whole batch (the
    rule set's dispatch, its thresholds, the bound methods) looked up once: at tens of
    thousands of messages a second, the per-message look-ups and the list every call to
    `evaluate` built were a sizeable share of the rules' CPU (docs/performance-investigations.md)."""
    if not isinstance(rules, ActiveRules):
        rules = ActiveRules.environment(rules)
    batch.rule_set_version = rules.version
    alerts, positions = batch.alerts, batch.alert_positions
    thresholds, retune = rules.thresholds, rules.retune
    calls = dispatcher(rules.functions, thresholds)
    active = states.active
    event_of = Event.of
    for t in batch.txns:
        history = active(t.account_id, t.kafka_partition)
        raised: list[Alert] | None = None
        for rule in calls(t.transaction_type, t.amount_base):
            alert = rule(t, history, thresholds)
            if alert is not None:
                if raised is None:
                    raised = [alert]
                else:
                    raised.append(alert)
        history.add(event_of(t))
        if raised is not None:
            if retune is not None:
                raised = rules.adjusted(raised)
            alerts.extend(raised)
            positions.extend([(t.kafka_partition, t.kafka_offset)] * len(raised))


def evaluate_message(t: Transaction, states: AccountStates, rules: ActiveRules) -> list[Alert]:
    """The alerts of one stored message against its account's history, which it then joins: the
    one step every evaluation takes (the consumer's batches, the backtest's replay). Its account
    must be held."""
    history = states.active(t.account_id, t.kafka_partition)
    raised = evaluate(t, history, rules.thresholds, rules.functions)
    history.add(Event.of(t))
    if raised and rules.retune is not None:
        raised = rules.adjusted(raised)
    return raised
