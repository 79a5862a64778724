"""The consumer: poll -> validate -> rules -> persist (one DB transaction) -> commit offsets.

    python consumer/transaction_processor.py [--max-idle-seconds S] [--group G] ...

Run several with the same group and Kafka shares the topic's partitions among them. Offsets are
committed only after the batch's database transaction has committed, and every write is
idempotent, so a crash anywhere replays at most one batch and stores nothing twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # `python consumer/transaction_processor.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg2
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from consumer import storage
from consumer.account_state import AccountStates, Event
from consumer.rules import evaluate
from consumer.validation import validate
from utils import database, schema
from utils.config import Settings, load_settings
from utils.errors import DatabaseUnavailable, TxmonError
from utils.models import Alert, Rejection, Transaction

log = logging.getLogger("consumer")


@dataclass(slots=True)
class Batch:
    """One poll's worth of messages, validated and evaluated, ready to store."""

    txns: list[Transaction] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    alert_positions: list[tuple[int, int]] = field(default_factory=list)  # message that raised alerts[i]
    replayed: set[tuple[int, int]] = field(default_factory=set)  # stored before: not added to the windows
    rejections: list[Rejection] = field(default_factory=list)
    raw: Mapping[tuple[int, int], tuple[bytes | None, bytes]] = field(default_factory=dict)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # last offset seen per partition
    replays: int = 0  # messages whose transaction the rebuilt state already holds

    @property
    def size(self) -> int:
        return len(self.txns) + len(self.rejections)


class RawByPosition(Mapping[tuple[int, int], tuple[bytes | None, bytes]]):
    """(partition, offset) -> (key, value) of one poll's records, indexed on first use: only a
    duplicate or a row the database refuses needs its original bytes back, so the common batch
    never pays for the index."""

    __slots__ = ("_index", "_records")

    def __init__(self, records: dict[TopicPartition, list[Any]]) -> None:
        self._records = records
        self._index: dict[tuple[int, int], tuple[bytes | None, bytes]] | None = None

    def _built(self) -> dict[tuple[int, int], tuple[bytes | None, bytes]]:
        if self._index is None:
            self._index = {
                (tp.partition, rec.offset): (rec.key, rec.value)
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
class ProcessorSummary:
    consumed: int = 0
    stored: int = 0
    already_stored: int = 0
    rejected: int = 0
    alerts: Counter[str] = field(default_factory=Counter)
    rejected_reasons: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    db_retries: int = 0
    elapsed_s: float = 0.0
    active_s: float = 0.0  # first message polled -> last batch committed (excludes idle waiting)
    clean_exit: bool = True

    @property
    def rate(self) -> float:
        """Transactions stored per second of active time."""
        return self.stored / self.active_s if self.active_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["alerts"] = dict(self.alerts)
        d["rejected_reasons"] = dict(self.rejected_reasons)
        d["rate"] = round(self.rate, 1)
        return d


class _Rebalance(ConsumerRebalanceListener):
    """Bookkeeping only: kafka-python 3 calls these on its IO thread, where blocking calls
    (commits, database queries) are not allowed. The main loop does the work after poll()."""

    def __init__(self, processor: TransactionProcessor) -> None:
        self.processor = processor

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # A batch still in flight is one atomic DB transaction: the next owner's state rebuild
        # sees all of it or none of it, and replays it idempotently either way.
        parts = [tp.partition for tp in revoked]
        self.processor.states.drop_partitions(parts)
        self.processor.pending_rebuild.difference_update(parts)
        log.info("partitions revoked: %s", sorted(parts))

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        parts = sorted(tp.partition for tp in assigned)
        self.processor.pending_rebuild.update(parts)
        log.info("partitions assigned: %s", parts)


class TransactionProcessor:
    def __init__(self, settings: Settings, *, stop_event: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop_event = stop_event or threading.Event()
        cs = settings.consumer
        self.states = AccountStates(
            max_events=cs.state_max_events_per_account,
            history_seconds=cs.state_history_hours * 3600.0,
        )
        self.rates = settings.rules.rate_table()  # every amount into the thresholds' base currency
        self.db = database.Database(settings.postgres, maxconn=2)
        self.summary = ProcessorSummary()
        self.consumer: KafkaConsumer | None = None
        self.dlq: KafkaProducer | None = None
        self._last_evict = 0.0
        # One writer thread: batch k is written while batch k+1 is polled and evaluated.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="txmon-writer")
        self._inflight: tuple[Batch, Future[storage.BatchResult]] | None = None
        self._last_done: float | None = None  # when the last batch was stored and committed
        self.pending_rebuild: set[int] = set()
        self._broker_errors = 0  # consecutive retriable Kafka errors from poll()
        self._ever_assigned = False
        self._unassigned_since: float | None = None
        self._assignment_watchdog_s = max(30.0, 3 * settings.consumer.session_timeout_ms / 1000)
        self._uncommitted: dict[
            TopicPartition, OffsetAndMetadata
        ] = {}  # sent async, latest per partition  # assigned partitions whose state is not loaded yet

    # ------------------------------------------------------------------ lifecycle

    def _connect_kafka(self) -> None:
        k, cs = self.settings.kafka, self.settings.consumer
        common: dict[str, Any] = {"bootstrap_servers": k.bootstrap_servers.split(",")}
        self.consumer = KafkaConsumer(
            group_id=k.consumer_group,
            enable_auto_commit=False,  # offsets follow the database commit, never precede it
            auto_offset_reset="earliest",  # a new group starts from the first message: nothing skipped
            max_poll_records=cs.max_poll_records,
            session_timeout_ms=cs.session_timeout_ms,
            heartbeat_interval_ms=max(1000, cs.session_timeout_ms // 3),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            client_id=f"txmon-consumer-{os.getpid()}",
            **common,
        )
        self.consumer.subscribe([k.topic], listener=_Rebalance(self))
        self.dlq = KafkaProducer(acks="all", linger_ms=5, client_id=f"txmon-dlq-{os.getpid()}", **common)

    def rebuild_pending_state(self) -> bool:
        """Load each newly assigned account window from PostgreSQL before any of its records is
        evaluated, so a restart or rebalance does not blind the rules. Retries while the
        database is away; returns False only when asked to stop first."""
        cs = self.settings.consumer
        delay = 0.5
        while self.pending_rebuild:
            parts = sorted(self.pending_rebuild)
            started = time.monotonic()
            try:
                with self.db.connection() as conn:
                    rows = storage.load_recent_history(
                        conn,
                        parts,
                        history_seconds=cs.state_history_hours * 3600.0,
                        max_per_account=cs.state_max_events_per_account,
                    )
            except DatabaseUnavailable as exc:
                if self.stop_event.is_set():
                    return False
                log.warning("cannot rebuild state yet (%s); retrying in %.1fs", exc, delay)
                self._keep_group_membership(delay)  # a rebalance meanwhile may change the set
                delay = min(delay * 2, cs.db_retry_max_backoff_s)
                continue
            loaded = 0
            for partition in parts:
                if partition in self.pending_rebuild:
                    self.states.load(partition, rows.get(partition, ()))
                    self.pending_rebuild.discard(partition)
                    loaded += len(rows.get(partition, ()))
            log.info(
                "state rebuilt for partitions %s: %d events in %.2fs",
                parts,
                loaded,
                time.monotonic() - started,
            )
        return True

    def run(self) -> ProcessorSummary:
        """Poll and prepare batch k while batch k-1 is written by the writer thread.

        At most one batch is in flight, and its offsets are committed only after its database
        transaction committed, so the ordering guarantee is the same as a sequential loop; the
        database's time (spent in the server process, on the other core) just overlaps ours.
        """
        self._migrate_with_retry()
        self._connect_kafka()
        assert self.consumer is not None
        started = time.monotonic()
        last_message = started
        last_progress = started
        joined = False
        first_batch_at: float | None = None
        cs = self.settings.consumer
        try:
            while not self.stop_event.is_set():
                records = self._poll()
                now = time.monotonic()
                self._touch_health()
                self._watch_assignment(now)
                if not joined and self.consumer.assignment():
                    # The idle clock starts at the first assignment: a group join takes seconds.
                    joined, last_message = True, now
                if not records:
                    if not self._complete_inflight():  # nothing new: don't keep a batch waiting
                        break
                    if cs.max_idle_seconds > 0 and joined and now - last_message >= cs.max_idle_seconds:
                        if self._caught_up():
                            log.info(
                                "no messages for %.0fs and nothing left to read: exiting", now - last_message
                            )
                            break
                        last_message = now  # the broker is away or data is pending: not idle
                    continue
                last_message = now
                if first_batch_at is None:
                    first_batch_at = now
                if self.pending_rebuild and not self.rebuild_pending_state():
                    break
                batch = self.prepare(records)
                if not self._complete_inflight():
                    break  # stopping while the database is down: offsets stay uncommitted
                self._inflight = (batch, self._writer.submit(self._write_once, batch))
                if now - last_progress >= 5.0:
                    last_progress = now
                    self._log_progress(now - started)
            self._complete_inflight()
            if first_batch_at is not None and self._last_done is not None:
                self.summary.active_s = self._last_done - first_batch_at
        finally:
            self.summary.elapsed_s = time.monotonic() - started
            self.close()
        return self.summary

    def _complete_inflight(self) -> bool:
        """Wait for the batch in flight, then dead-letter its rejects and commit its offsets.
        Returns False when it could not be stored and we are stopping: its offsets then stay
        uncommitted, so whoever owns the partitions next replays it."""
        if self._inflight is None:
            return True
        batch, future = self._inflight
        self._inflight = None
        try:
            result = future.result()
        except (DatabaseUnavailable, psycopg2.DataError, psycopg2.IntegrityError) as exc:
            stored = self.persist(batch, first_error=exc)
            if stored is None:
                return False
            result = stored
        self._account(batch, result)
        if not self.finish(batch):
            return False
        self._last_done = time.monotonic()
        return True

    def close(self) -> None:
        if self.dlq is not None:
            try:
                self.dlq.flush(timeout=10)
                self.dlq.close(timeout=10)
            except KafkaError as exc:
                log.warning("closing the DLQ producer: %s", exc)
            self.dlq = None
        if self.consumer is not None:
            self._commit_sync()
            self.consumer.close(autocommit=False)
            self.consumer = None
        self._writer.shutdown(wait=True)
        self.db.close()

    def _migrate_with_retry(self) -> None:
        while not self.stop_event.is_set():
            try:
                applied = schema.migrate(self.settings.postgres)
                if applied:
                    log.info("migrations applied: %s", ", ".join(applied))
                return
            except DatabaseUnavailable as exc:
                log.warning("%s; retrying", exc)
                self._sleep_backoff(2.0)

    # ------------------------------------------------------------------ one batch

    def prepare(self, records: dict[TopicPartition, list[Any]]) -> Batch:
        """Validate and evaluate a poll's records. Pure but for the in-memory account state."""
        batch = Batch(raw=RawByPosition(records))
        limits, thresholds = self.settings.validation, self.settings.rules
        states = self.states
        now = time.time()
        batch_ids: dict[str, Transaction] = {}  # first message of each id in this batch
        for tp, recs in records.items():
            topic, partition = tp.topic, tp.partition
            for rec in recs:
                item = validate(
                    rec.value,
                    topic=topic,
                    partition=partition,
                    offset=rec.offset,
                    key=rec.key,
                    limits=limits,
                    now=now,
                    rates=self.rates,
                    kafka_timestamp_ms=rec.timestamp,
                )
                if isinstance(item, Rejection):
                    batch.rejections.append(item)
                    continue
                first = batch_ids.setdefault(item.transaction_id, item)
                if first is not item:
                    # Caught before the rules see it: a reused id must not enter any account window.
                    batch.rejections.append(
                        Rejection(
                            "duplicate_transaction_id",
                            f"transaction_id {item.transaction_id!r} already used in this batch at "
                            f"partition {first.kafka_partition} offset {first.kafka_offset}",
                            rec.value or b"",
                            topic,
                            partition,
                            rec.offset,
                            item.transaction_id,
                            rec.key,
                        )
                    )
                    continue
                history = states.active(partition, item.account_id)
                if history.seen(item.transaction_id):
                    batch.replays += 1  # stored before a restart: its alerts are stored too
                    batch.replayed.add((partition, rec.offset))
                else:
                    raised = evaluate(item, history, thresholds)
                    if raised:
                        batch.alerts.extend(raised)
                        batch.alert_positions.extend([(partition, rec.offset)] * len(raised))
                    history.add(Event.of(item))
                batch.txns.append(item)
            if recs:
                batch.offsets[tp] = recs[-1].offset
        if batch.txns and now - self._last_evict > 10.0:
            # Evict by event time, not wall time: a replayed or simulated stream from the past
            # must keep the windows its own timestamps need.
            self._last_evict = now
            states.evict(max(t.epoch for t in batch.txns))
        return batch

    def _write_once(self, batch: Batch) -> storage.BatchResult:
        with self.db.connection() as conn:
            return storage.write_batch(
                conn,
                batch.txns,
                batch.alerts,
                batch.rejections,
                raw_by_position=batch.raw,
                topic=self.settings.kafka.topic,
                alert_positions=batch.alert_positions,
            )

    def persist(self, batch: Batch, first_error: Exception | None = None) -> storage.BatchResult | None:
        """Store the batch in one database transaction, retrying with backoff while the database
        is away. Returns None only when asked to stop before the batch could be stored."""
        delay = 0.5
        error = first_error
        while True:
            try:
                if error is not None:
                    raise error
                return self._write_once(batch)
            except (psycopg2.DataError, psycopg2.IntegrityError) as exc:
                error = None
                self._reject_unstorable(batch, exc)
            except DatabaseUnavailable as exc:
                error = None
                self.summary.db_retries += 1
                if self.stop_event.is_set():
                    log.warning(
                        "stopping with %d messages unsaved (database down); they will be "
                        "reprocessed on restart",
                        batch.size,
                    )
                    self.summary.clean_exit = False
                    return None
                log.warning(
                    "database unavailable, batch of %d held (retry in %.1fs): %s", batch.size, delay, exc
                )
                self._keep_group_membership(delay)
                delay = min(delay * 2, self.settings.consumer.db_retry_max_backoff_s)

    def _forget(self, batch: Batch, positions: set[tuple[int, int]]) -> None:
        """Take messages the database refused out of the account windows the rules read."""
        for t in batch.txns:
            at = (t.kafka_partition, t.kafka_offset)
            if at in positions and at not in batch.replayed:
                self.states.history(t.kafka_partition, t.account_id).discard(t.transaction_id)

    def _account(self, batch: Batch, result: storage.BatchResult) -> None:
        if result.duplicates:
            self._forget(batch, {(d.partition, d.offset) for d in result.duplicates})
        s = self.summary
        s.batches += 1
        s.consumed += batch.size
        s.stored += result.inserted
        s.already_stored += result.already_stored
        batch.rejections.extend(result.duplicates or [])
        s.rejected += len(batch.rejections)
        s.alerts.update(result.alerts_by_type)
        s.rejected_reasons.update(r.reason for r in batch.rejections)

    def _reject_unstorable(self, batch: Batch, exc: Exception) -> None:
        """A row validation let through was refused by a constraint: reject just those rows."""
        log.error("batch refused by the database (%s); isolating the offending rows", str(exc).strip())
        with self.db.connection() as conn:
            bad = storage.find_unstorable(conn, batch.txns)
        if not bad:
            raise TxmonError(f"batch refused by the database and no single row explains it: {exc}") from exc
        dropped = {(t.kafka_partition, t.kafka_offset) for t, _ in bad}
        self._forget(batch, dropped)
        batch.txns = [t for t in batch.txns if (t.kafka_partition, t.kafka_offset) not in dropped]
        kept = [
            (a, at) for a, at in zip(batch.alerts, batch.alert_positions, strict=True) if at not in dropped
        ]
        batch.alerts = [a for a, _ in kept]
        batch.alert_positions = [at for _, at in kept]
        for t, error in bad:
            key, raw = batch.raw.get((t.kafka_partition, t.kafka_offset), (None, b""))
            batch.rejections.append(
                Rejection(
                    "database_rejected",
                    error,
                    raw,
                    self.settings.kafka.topic,
                    t.kafka_partition,
                    t.kafka_offset,
                    t.transaction_id,
                    key,
                )
            )

    def finish(self, batch: Batch) -> bool:
        """After the database commit: dead-letter the rejects, then commit the offsets.
        Returns False when stopping before the dead letters were acknowledged."""
        assert self.consumer is not None and self.dlq is not None
        if batch.rejections and not self._publish_dlq(batch.rejections):
            return False
        assigned = self.consumer.assignment()
        offsets = {
            tp: OffsetAndMetadata(last + 1, None, -1) for tp, last in batch.offsets.items() if tp in assigned
        }
        if not offsets:
            return True
        # Sent now, after the database commit, but not waited for: a lost or failed commit only
        # means a replay of rows that are already stored, and the loop skips a broker round trip
        # per batch (most of the latency at moderate rates). close() commits synchronously.
        self._uncommitted.update(offsets)
        self.consumer.commit_async(offsets, callback=self._on_commit)
        return True

    def _on_commit(self, offsets: dict[TopicPartition, OffsetAndMetadata], response: object) -> None:
        if isinstance(response, Exception):
            log.warning("offset commit failed (those messages will be replayed idempotently): %s", response)

    def _commit_sync(self) -> None:
        """The final commit at shutdown: the latest stored offsets of partitions we still own."""
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        offsets = {tp: om for tp, om in self._uncommitted.items() if tp in assigned}
        self._uncommitted.clear()
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partitions away; the new owner replays them idempotently.
            log.warning("final offset commit failed (replayed idempotently on restart): %s", exc)

    def _publish_dlq(self, rejections: list[Rejection]) -> bool:
        """Dead-letter every rejection, retrying with backoff until the broker acknowledged all.
        Returns False only when asked to stop first: the offsets then stay uncommitted and a
        restart publishes again (the DLQ is at-least-once; the table already holds them once)."""
        assert self.dlq is not None
        topic = self.settings.kafka.dlq_topic
        pending, delay = list(rejections), 0.5
        while pending:
            sent = []
            for r in pending:
                try:
                    sent.append((r, self.dlq.send(topic, **_dlq_record(r))))
                except KafkaError as exc:  # no metadata (broker away) or a record it refuses outright
                    log.warning(
                        "dead-letter send failed for %s/%d@%d: %s", r.topic, r.partition, r.offset, exc
                    )
                    sent.append((r, None))
            try:
                self.dlq.flush(timeout=30)
            except KafkaError as exc:
                log.warning("dead-letter flush: %s", exc)
            pending = [r for r, f in sent if f is None or not f.succeeded()]
            if not pending:
                return True
            if self.stop_event.is_set():
                log.warning(
                    "stopping with %d dead-letter messages unacknowledged; offsets not committed",
                    len(pending),
                )
                return False
            log.warning("%d dead-letter messages not acknowledged; retrying in %.1fs", len(pending), delay)
            self.stop_event.wait(delay)
            delay = min(delay * 2, self.settings.consumer.db_retry_max_backoff_s)
        return True

    # ------------------------------------------------------------------ helpers

    def _poll(self) -> dict[TopicPartition, list[Any]]:
        """poll(), riding out broker outages: kafka-python raises its retriable errors (connection
        refused, metadata unavailable) out of poll(); we back off and poll again, resuming from
        our position, which the outage did not move."""
        assert self.consumer is not None
        cs = self.settings.consumer
        try:
            records: dict[TopicPartition, list[Any]] = self.consumer.poll(
                timeout_ms=cs.poll_timeout_ms, max_records=cs.max_poll_records
            )
        except KafkaError as exc:
            if not getattr(exc, "retriable", False):
                raise
            self._broker_errors += 1
            if self._broker_errors == 1 or self._broker_errors % 10 == 0:
                log.warning("Kafka unavailable (%s); retrying (%d so far)", exc, self._broker_errors)
            self.stop_event.wait(min(1.0 * self._broker_errors, 5.0))
            return {}
        if self._broker_errors:
            log.info("Kafka reachable again after %d failed polls", self._broker_errors)
            self._broker_errors = 0
        return records

    def _watch_assignment(self, now: float) -> None:
        """Work around a kafka-python 3.0 race: a new group member right after a broker start
        sometimes never applies the assignment it received, and waits forever with no partitions
        while still heartbeating. A member that has never owned a partition re-subscribes after
        a while; the wait doubles each time, so a legitimately idle extra member (more consumers
        than partitions) costs only a few rebalances."""
        assert self.consumer is not None
        if self.consumer.assignment():
            self._ever_assigned, self._unassigned_since = True, None
            return
        if self._ever_assigned:
            return
        if self._unassigned_since is None:
            self._unassigned_since = now
        elif now - self._unassigned_since > self._assignment_watchdog_s:
            log.warning(
                "no partitions assigned after %.0fs; re-joining the group (kafka-python join race)",
                now - self._unassigned_since,
            )
            self.consumer.unsubscribe()
            self.consumer.subscribe([self.settings.kafka.topic], listener=_Rebalance(self))
            self._unassigned_since = now
            self._assignment_watchdog_s *= 2

    def _caught_up(self) -> bool:
        """True when every assigned partition is read to its end, as the broker confirms. A broker
        that cannot be asked is no proof of an empty topic: silence during an outage is not idle."""
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        if not assigned:
            return False
        try:
            ends = self.consumer.end_offsets(list(assigned), timeout_ms=5000)
            behind = {tp: ends[tp] - self.consumer.position(tp, timeout_ms=5000) for tp in assigned}
        except KafkaError as exc:
            log.warning("idle, but cannot confirm the end of the topic (%s): waiting on", exc)
            return False
        lagging = {tp.partition: n for tp, n in behind.items() if n > 0}
        if lagging:
            log.info("idle, but partitions still have messages to read: %s", lagging)
        return not lagging

    def _keep_group_membership(self, seconds: float) -> None:
        """Wait while still calling poll() (paused), so the group does not evict us during an outage."""
        assert self.consumer is not None
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline and not self.stop_event.is_set():
                # Re-pause every round: a rebalance meanwhile brings partitions that are not paused.
                self.consumer.pause(*self.consumer.assignment())
                try:
                    stray = self.consumer.poll(timeout_ms=min(500, int(seconds * 1000)))
                except KafkaError as exc:
                    if not getattr(exc, "retriable", False):
                        raise
                    self.stop_event.wait(0.5)
                    continue
                for tp, recs in stray.items():
                    # Not ours to handle now: rewind so they are polled again after the outage.
                    self.consumer.seek(tp, recs[0].offset)
        finally:
            self.consumer.resume(*self.consumer.assignment())

    def _sleep_backoff(self, seconds: float) -> None:
        self.stop_event.wait(seconds)

    def _touch_health(self) -> None:
        path = self.settings.consumer.health_file
        if path:
            Path(path).touch()

    def _log_progress(self, elapsed: float) -> None:
        s = self.summary
        log.info(
            "progress consumed=%d stored=%d rejected=%d alerts=%d rate=%.0f/s",
            s.consumed,
            s.stored,
            s.rejected,
            sum(s.alerts.values()),
            s.stored / max(elapsed, 1e-9),
        )


# A dead-letter copy must fit the broker's default message limit (~1 MB) with its headers; a
# larger original is dead-lettered without its body (rejected_transactions keeps the bytes).
DLQ_MAX_PAYLOAD = 900_000


def _dlq_record(r: Rejection) -> dict[str, Any]:
    headers = [
        ("dlq.reason", r.reason.encode()),
        ("dlq.detail", r.detail[:1000].encode("utf-8", "replace")),
        ("dlq.source.topic", r.topic.encode()),
        ("dlq.source.partition", str(r.partition).encode()),
        ("dlq.source.offset", str(r.offset).encode()),
    ]
    value = r.raw
    if len(value) > DLQ_MAX_PAYLOAD:
        headers.append(("dlq.payload_omitted", str(len(value)).encode()))
        value = b""
    key = r.key if r.key is None or len(r.key) <= 10_000 else r.key[:10_000]
    return {"value": value, "key": key, "headers": headers}


def tune_gc() -> None:
    """Every batch allocates tens of thousands of short-lived objects while the account state
    holds long-lived ones; with the default thresholds the collector re-scans that state
    constantly (~16% of the consumer's CPU measured). Freeze what start-up created and collect
    the young generation less often; memory stays bounded by the state's own limits."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(200_000, 100, 1000)


def format_summary(s: ProcessorSummary) -> str:
    alerts = ", ".join(f"{k}={v}" for k, v in sorted(s.alerts.items())) or "none"
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(s.rejected_reasons.items())) or "none"
    return (
        f"consumer summary: consumed={s.consumed} stored={s.stored} already_stored={s.already_stored} "
        f"rejected={s.rejected} alerts={sum(s.alerts.values())} ({alerts}) rejected_by_reason=({reasons}) "
        f"batches={s.batches} db_retries={s.db_retries} elapsed={s.elapsed_s:.1f}s active={s.active_s:.1f}s "
        f"rate={s.rate:.0f}/s"
    )


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    k, cs = settings.kafka, settings.consumer
    p = argparse.ArgumentParser(
        prog="python consumer/transaction_processor.py",
        description="Consume transactions, validate, apply alert rules, store in PostgreSQL.",
    )
    p.add_argument(
        "--bootstrap-servers",
        default=k.bootstrap_servers,
        help=f"Kafka brokers [env: KAFKA_BOOTSTRAP_SERVERS] (default {k.bootstrap_servers})",
    )
    p.add_argument("--topic", default=k.topic, help=f"[env: KAFKA_TOPIC] (default {k.topic})")
    p.add_argument("--dlq-topic", default=k.dlq_topic, help=f"[env: KAFKA_DLQ_TOPIC] (default {k.dlq_topic})")
    p.add_argument(
        "--group",
        default=k.consumer_group,
        help=f"consumer group [env: KAFKA_CONSUMER_GROUP] (default {k.consumer_group})",
    )
    p.add_argument(
        "--max-idle-seconds",
        type=float,
        default=cs.max_idle_seconds,
        help="exit after this many seconds without messages, 0 = run until stopped "
        f"[env: CONSUMER_MAX_IDLE_SECONDS] (default {cs.max_idle_seconds:g})",
    )
    p.add_argument("--summary-json", type=Path, default=None, help="also write the exit summary as JSON here")
    p.add_argument(
        "--max-poll-records",
        type=int,
        default=cs.max_poll_records,
        help=f"batch size [env: CONSUMER_MAX_POLL_RECORDS] (default {cs.max_poll_records})",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from utils.logs import configure_logging

    try:
        settings = load_settings()
    except TxmonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = build_parser(settings).parse_args(argv)
    settings = dataclasses.replace(
        settings,
        kafka=dataclasses.replace(
            settings.kafka,
            bootstrap_servers=args.bootstrap_servers,
            topic=args.topic,
            dlq_topic=args.dlq_topic,
            consumer_group=args.group,
        ),
        consumer=dataclasses.replace(
            settings.consumer,
            max_idle_seconds=args.max_idle_seconds,
            max_poll_records=args.max_poll_records,
        ),
    )
    configure_logging(settings.log_level, settings.log_format)
    tune_gc()
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received: finishing the current batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    processor = TransactionProcessor(settings, stop_event=stop)
    log.info(
        "consuming %s as group %s from %s; storing in %s:%d/%s",
        settings.kafka.topic,
        settings.kafka.consumer_group,
        settings.kafka.bootstrap_servers,
        settings.postgres.host,
        settings.postgres.port,
        settings.postgres.db,
    )
    try:
        summary = processor.run()
    except KafkaError as exc:
        log.error(
            "Kafka error: %s. Is the broker at %s up? (`make stack-up`)",
            exc,
            settings.kafka.bootstrap_servers,
        )
        return 2
    except TxmonError as exc:
        log.error("%s", exc)
        return 1
    print(format_summary(summary), flush=True)
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
