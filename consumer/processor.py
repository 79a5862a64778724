"""The consumer: poll -> validate -> rules -> persist (one DB transaction, offsets included).
Its command line is consumer/transaction_processor.py:

    python consumer/transaction_processor.py [--max-idle-seconds S] [--group G] ...

Run several with the same group and Kafka shares the topic's partitions among them (cooperative
incremental rebalancing: a rebalance moves only the partitions that change owner). Exactly once
by construction:

* Each batch is one PostgreSQL transaction holding its transactions, alerts, rejections and the
  advance of each partition's offset in `consumer_offsets`, conditional on the offset the batch
  started from (consumer/offsets.py). A member that lost a partition while frozen or cut off
  finds the offset moved and rolls its batch back: it is fenced, it writes nothing stale.
* A gained partition is read from its stored offset (consumer/group.py); Kafka's committed
  offsets only mirror it, for lag tools.
* Account state is a cache (consumer/account_state.py): accounts are loaded from the database by
  account_id right before a batch needs them, so a rebalance rebuilds nothing, and a restart, a
  fence or a rewind just empties the cache.
* The dead-letter topic is published from `rejected_transactions` by a background thread
  (consumer/dlq.py), so a refusing DLQ never holds the pipeline up.
* The rules are the active rule-set version (consumer/rulesets/reload.py), checked between
  batches every RULESET_CHECK_SECONDS; each alert stores the version that raised it, and a
  partition's switch of version is recorded in rule_set_applied in the batch's transaction
  (consumer/rulesets/store.py record_applied_sql says exactly when).
* A position (topic incarnation, partition, offset) is stored once: each batch raises
  stored_positions and writes nothing below what it found (consumer/positions.py), so a rewind
  or a new group never stores a message again, even where retention deleted its row.
* Prometheus metrics (consumer/metrics.py) on CONSUMER_METRICS_PORT, recorded once per batch.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import threading
import time
from array import array
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from consumer import offsets, positions, storage
from consumer.account_state import AccountStates
from consumer.batch import Batch, Facts, KafkaRecord, evaluate_batch, validate_records
from consumer.dlq import DlqPublisher
from consumer.group import GroupMember
from consumer.metrics import BatchStats, ConsumerMetrics
from consumer.partitions import PartitionKeeper
from consumer.retry import Attempts, DbRetry
from consumer.rulesets import store as rulesets_store
from consumer.rulesets.model import StateLimits
from consumer.rulesets.reload import RuleSetReloader
from consumer.summary import ProcessorSummary
from consumer.timings import BatchTiming, TimingRecorder
from utils import database, schema
from utils.config import Settings
from utils.database import ErrorKind, classify
from utils.errors import DatabaseUnavailable, TxmonError

log = logging.getLogger("consumer")
T = TypeVar("T")


class Fenced(TxmonError):
    """The batch's offsets moved under it: another member owns these partitions now."""

    def __init__(self, partitions: set[int]) -> None:
        super().__init__(f"partitions {sorted(partitions)} were taken over by another member")
        self.partitions = partitions


class CommitUnknown(DatabaseUnavailable):
    """The connection died after the batch's COMMIT was sent: it may be stored. Settled by
    asking PostgreSQL what became of its transaction (`offsets.commit_status`)."""

    def __init__(self, xid: int, result: storage.BatchResult, cause: BaseException) -> None:
        super().__init__(f"lost the answer to a batch's COMMIT (transaction {xid}): {cause}")
        self.xid, self.result = xid, result


class Outcome(enum.Enum):
    DONE = "done"  # the batch is stored (or there was none)
    REWOUND = "rewound"  # rolled back; every partition was sought back to its stored offset
    STOPPED = "stopped"  # asked to stop while the database was away: nothing stored


class TransactionProcessor:
    def __init__(
        self,
        settings: Settings,
        *,
        stop_event: threading.Event | None = None,
        timings: TimingRecorder | None = None,
    ) -> None:
        """`timings`: record where each batch's time goes (consumer/timings.py; a diagnostic)."""
        self.settings = settings
        self.timings = timings
        self.stop_event = stop_event or threading.Event()
        # Set from a signal handler (SIGUSR1): the main loop logs the group state at its next turn.
        self.describe_requested = threading.Event()
        cs = settings.consumer
        self.topic, self.group = settings.kafka.topic, settings.kafka.consumer_group
        self.states = AccountStates(
            cs.state_max_events_per_account, cs.state_history_hours * 3600.0, cs.state_max_accounts
        )
        self.rates = settings.rules.rate_table()  # every amount into the thresholds' base currency
        # Writer thread, main thread (account loads, offsets) and the DLQ publisher. A frozen
        # process's open transaction is ended by the server, which frees the offset rows it
        # locked for whoever owns the partitions now.
        self.db = database.Database(
            settings.postgres,
            maxconn=3,
            session={"idle_in_transaction_session_timeout": cs.idle_in_transaction_timeout_ms},
        )
        self.retry = DbRetry(self.db, self.stop_event, self._keep_membership, cs.db_retry_max_backoff_s)
        self.partitions = PartitionKeeper()  # today's and the next days' partitions, made ahead
        self.summary = ProcessorSummary()
        self.facts = Facts()
        self.member: GroupMember | None = None
        self.dlq: DlqPublisher | None = None
        # One writer thread: batch k is written while batch k+1 is polled and evaluated.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="txmon-writer")
        self._inflight: tuple[Batch, Future[storage.BatchResult]] | None = None
        self._last_done: float | None = None  # when the last batch was stored
        self.rulesets = RuleSetReloader(
            self.db, settings.rules, StateLimits.from_settings(cs), cs.ruleset_check_seconds
        )
        self._version_seen: int | None = None
        self.metrics: ConsumerMetrics | None = None
        if cs.metrics_port:
            self.metrics = ConsumerMetrics(self.group)
        self._metrics_server = (
            None if self.metrics is None else self.metrics.serve(cs.metrics_port, settings.metrics_address)
        )

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> ProcessorSummary:
        """Poll and prepare batch k while batch k-1 is written by the writer thread. At most one
        batch is in flight, so the order of commits is the order of the stream."""
        self._migrate_with_retry()
        self.rulesets.start(self.retry.call)
        self._rule_set_version_seen()
        self._rule_set_activation_seen()
        member = self.member = self._new_member()
        self.dlq = DlqPublisher(
            self.db, self._dlq_producer, source_topic=self.topic, dlq_topic=self.settings.kafka.dlq_topic
        )
        self.dlq.start()
        started = time.monotonic()
        last_message = last_progress = started
        joined = False
        first_batch_at: float | None = None
        cs = self.settings.consumer
        timed = self.timings is not None
        try:
            while not self.stop_event.is_set():
                poll_start = time.time() if timed else 0.0
                polled = member.poll()
                now = time.monotonic()
                polled_at = time.time() if timed else 0.0
                if self.describe_requested.is_set():
                    self.describe_requested.clear()
                    log.info("state: %s", json.dumps(member.describe(), sort_keys=True))
                self.partitions.maybe_ensure(self.db)  # hourly, in its own short transaction
                self._touch_health()
                member.watch_assignment(now)
                stalled = member.stalled(now)
                if stalled:
                    if self._complete_inflight() is Outcome.STOPPED:
                        break
                    member = self._replace_member(stalled)
                    continue
                if not self._apply_rebalance():
                    break
                if self.rulesets.poll(now).version != self._version_seen:
                    self._rule_set_version_seen()
                if self.rulesets.activation != self._activation_seen:
                    self._rule_set_activation_seen()
                if not joined and member.owned():
                    # The idle clock starts at the first assignment: a group join takes seconds.
                    joined, last_message = True, now
                records = member.accept(polled)
                if not records:
                    if self._complete_inflight() is Outcome.STOPPED:  # don't keep a batch waiting
                        break
                    member.verify_idle(self.retry.call)
                    if cs.max_idle_seconds > 0 and joined and now - last_message >= cs.max_idle_seconds:
                        if member.caught_up():
                            log.info(
                                "no messages for %.0fs and nothing left to read: exiting", now - last_message
                            )
                            break
                        last_message = now  # the broker is away or data is pending: not idle
                    continue
                last_message = now
                first_batch_at = first_batch_at or now
                rebalances = member.rebalances
                accepted_at = time.time() if timed else 0.0
                batch = self._prepare(records)
                if batch is None:
                    continue
                prepared_at = time.time() if timed else 0.0
                outcome = self._complete_inflight()
                if outcome is Outcome.STOPPED:
                    break
                if outcome is Outcome.REWOUND:
                    continue  # `batch` followed the rolled-back one: read again
                if member.rebalances != rebalances:
                    self._rewind("partitions moved while the previous batch was stored")
                    continue
                if timed:
                    submitted = time.time()
                    batch.timing = BatchTiming(
                        polled=polled_at,
                        poll_s=polled_at - poll_start,
                        house_s=accepted_at - polled_at,
                        prepare_s=prepared_at - accepted_at - batch.load_s,
                        load_s=batch.load_s,
                        wait_s=submitted - prepared_at,
                        submitted=submitted,
                        epochs=array("d", (t.epoch for t in batch.txns if t.simulated_scenario is None)),
                    )
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

    def _new_member(self) -> GroupMember:
        return GroupMember(self.settings, self.stop_event, on_forget=self._forget, on_clear=self._clear_cache)

    def _replace_member(self, stalled: dict[int, int]) -> GroupMember:
        """A new Kafka client for one whose fetching stalled (GroupMember.stalled), as a restart
        of the process would give: the old one leaves the group, the new one joins and reads on
        from the offsets in PostgreSQL. The batch in flight is complete; what was polled since is
        read again, and the account cache starts empty."""
        assert self.member is not None and self._inflight is None
        old = self.member
        log.warning(
            "partitions %s hold %s messages for this consumer but returned none for %.0fs of polling: "
            "replacing its Kafka client; state: %s",
            sorted(stalled),
            sum(stalled.values()),
            self.settings.consumer.stall_restart_s,
            json.dumps(old.describe(), sort_keys=True),
        )
        self.member = None
        try:
            old.close()
        except KafkaError as exc:  # leaving the group is a courtesy: the session expires anyway
            log.info("closing the stalled Kafka client: %s", exc)
        self._clear_cache()
        self.summary.client_restarts += 1
        self.member = self._new_member()
        return self.member

    def _dlq_producer(self) -> KafkaProducer:
        # Not idempotent: the dead-letter topic is at-least-once anyway, and an idempotent
        # producer turns a refused batch into a fatal state for every later send.
        return KafkaProducer(
            **self.settings.kafka.client_kwargs(),
            acks="all",
            enable_idempotence=False,
            linger_ms=5,
            max_block_ms=10_000,
            client_id=f"txmon-dlq-{os.getpid()}",
        )

    def close(self) -> None:
        if self.dlq is not None:
            self.dlq.close()
            self.summary.dlq_published = self.dlq.published
            self.dlq = None
        if self.member is not None:
            self.member.close()
            self.member = None
        self._writer.shutdown(wait=True)
        self.summary.db_retries = self.retry.retries
        self.db.close()
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None

    def _migrate_with_retry(self) -> None:
        while not self.stop_event.is_set():
            try:
                applied = schema.migrate(self.settings.postgres)
                if applied:
                    log.info("migrations applied: %s", ", ".join(applied))
                return
            except DatabaseUnavailable as exc:
                log.warning("%s; retrying", exc)
                self.stop_event.wait(2.0)

    def _keep_membership(self, seconds: float) -> None:
        if self.member is None:
            self.stop_event.wait(seconds)
        else:
            self.member.keep_membership(seconds)

    # ------------------------------------------------------------------ partitions

    def _apply_rebalance(self) -> bool:
        """Drops first (after the batch in flight is stored or fenced), then setups. False when
        asked to stop while the database was away."""
        assert self.member is not None
        if self.member.has_drops():
            if self._complete_inflight() is Outcome.STOPPED:
                return False
            self.member.drop()
        set_up = self.member.set_up_pending(self.retry.call)
        if self.dlq is not None:
            owned = self.member.owned()
            self.dlq.set_partitions(owned, positions.incarnation(self.member.machine.batch_topic_id(owned)))
        return set_up or not self.stop_event.is_set()

    def _forget(self, partitions: tuple[int, ...]) -> None:
        """The machine's Forget: partitions lost are dropped from memory."""
        dropped = self.states.drop_partitions(partitions)
        log.info("dropped %d accounts of partitions %s from memory", dropped, list(partitions))

    def _clear_cache(self) -> None:
        """The machine's ClearCache: what was prepared is void."""
        self.states.clear()

    def _rewind(self, why: str) -> None:
        """Back to the stored offsets with an empty cache: what was prepared is read again."""
        assert self._inflight is None and self.member is not None
        self.member.rewind()
        self.summary.rewinds += 1
        log.info("rewound to the stored offsets (%s)", why)

    # ------------------------------------------------------------------ one batch

    def _prepare(self, records: dict[TopicPartition, list[KafkaRecord]]) -> Batch | None:
        """Validate, load the accounts not in memory, evaluate. None: the records were dropped
        (a rewind, a rebalance while loading, or a stop) and are read again."""
        assert self.member is not None
        rebalances = self.member.rebalances
        rules = self.rulesets.current  # one version for the whole batch
        started = time.perf_counter()
        # The incarnation the partitions were set up under, not the client's latest metadata: a
        # topic recreated meanwhile is noticed by the membership machine, which sets them up again.
        incarnation = positions.incarnation(
            self.member.machine.batch_topic_id(tp.partition for tp in records)
        )
        counts = self.member.partition_counts(incarnation)
        batch = validate_records(
            records,
            self.settings.validation,
            self.rates,
            self.facts,
            incarnation=incarnation,
            partition_counts=counts,
        )
        if any(r.reason == "wrong_partition" for r in batch.rejections):
            # Partitions may have been added since this member last looked (a producer can see
            # them first): refuse a placement only against every count recorded by now.
            fresh = self.member.refresh_partition_counts(incarnation, self.retry.call)
            if fresh is None:
                return None
            if fresh != counts:
                batch = validate_records(
                    records,
                    self.settings.validation,
                    self.rates,
                    self.facts,
                    incarnation=incarnation,
                    partition_counts=fresh,
                )
        validated = time.perf_counter()
        missing = self.states.missing(batch.accounts()) if batch.txns else set()
        if missing:
            # An account of the batch in flight has events that are not stored yet: store it
            # first. Any other account's events are all stored, so it loads while it is written.
            if (
                self._inflight is not None
                and not missing.isdisjoint(self._inflight[0].accounts())
                and self._complete_inflight() is not Outcome.DONE
            ):
                return None
            k = self.settings.consumer.state_max_events_per_account
            accounts = sorted(missing)
            rows = self._read_for_batch(
                lambda conn: storage.load_accounts(conn, self.topic, accounts, k, topic_id=incarnation),
                f"loading {len(accounts)} accounts",
                rebalances,
            )
            if rows is None:
                return None
            self.states.load(accounts, rows)
            self.summary.accounts_loaded += len(accounts)
        evaluating = time.perf_counter()
        evaluate_batch(batch, self.states, rules)
        batch.evaluation_s = (validated - started) + (time.perf_counter() - evaluating)
        batch.load_s = evaluating - validated
        self.states.trim()
        batch.moves = self.member.prepared(batch.spans)
        return batch

    def _read_for_batch(self, read: Callable[[Any], T], what: str, rebalances: int) -> T | None:
        """A read the batch needs before its rules run. None: its records are dropped (asked to
        stop, or partitions moved meanwhile and the consumer rewound) and are read again."""
        assert self.member is not None
        result = self.retry.call(read, what)
        if result is None:
            return None
        if self.member.rebalances != rebalances:
            if self._complete_inflight() is Outcome.DONE:
                self._rewind(f"partitions moved while {what}")
            return None
        return result

    def _write_once(self, batch: Batch) -> storage.BatchResult:
        started = time.perf_counter()
        timing = batch.timing
        if timing is not None:
            timing.writer_started()
        committing: tuple[int, storage.BatchResult] | None = None
        try:
            with self.db.connection() as conn:
                with conn.cursor() as cur:
                    moves = {tp.partition: move for tp, move in batch.moves.items()}
                    # Round trips, not rows, are what a small batch pays for: each one hands the
                    # GIL back and forth with the main thread (docs/performance-investigations.md, where the
                    # latency goes). The transaction's id comes back with the offsets' UPDATE,
                    # and rule_set_applied's INSERT travels with the batch's COPY.
                    fenced, xid_or_none = offsets.advance_with_xid(
                        cur, self.group, self.topic, moves, batch.topic_id
                    )
                    if fenced:
                        raise Fenced(fenced)
                    if xid_or_none is None:  # no partition moved: ask for it
                        cur.execute("SELECT txid_current()")
                        xid_or_none = int(cur.fetchone()[0])  # type: ignore[index]
                    xid = xid_or_none
                    spans = {tp.partition: span for tp, span in batch.spans.items()}
                    stored_below = positions.claim(cur, self.topic, batch.incarnation, spans)
                    applied = rulesets_store.record_applied_sql(
                        cur,
                        self.group,
                        self.topic,
                        batch.incarnation,
                        batch.rule_set_version,
                        positions.new_from(spans, stored_below),
                    )
                pre_done = time.perf_counter()
                result = storage.write_batch(
                    conn,
                    batch.txns,
                    batch.alerts,
                    batch.rejections,
                    alert_positions=batch.alert_positions,
                    rule_set_version=batch.rule_set_version,
                    topic_id=batch.incarnation,
                    stored_below=stored_below,
                    prelude=applied,
                )
                committing = (xid, result)
                copied = time.perf_counter()
        except DatabaseUnavailable as exc:
            if committing is not None:  # everything ran: the COMMIT itself went unanswered
                raise CommitUnknown(*committing, exc) from exc
            raise
        done = time.perf_counter()
        result.write_s = done - started
        result.stored_at = time.time()
        if timing is not None:
            timing.pre_s, timing.copy_s, timing.commit_s = (
                pre_done - started,
                copied - pre_done,
                done - copied,
            )
            timing.stored_at = result.stored_at
        return result

    def _complete_inflight(self) -> Outcome:
        """Wait for the batch in flight and account for it, retrying it as its errors call for."""
        if self._inflight is None:
            return Outcome.DONE
        batch, future = self._inflight
        self._inflight = None
        try:
            result = future.result()
        except Exception as exc:
            outcome = self._persist(batch, exc)
            if not isinstance(outcome, storage.BatchResult):
                return outcome
            result = outcome
        self._stored(batch, result)
        return Outcome.DONE

    def _persist(self, batch: Batch, error: Exception) -> storage.BatchResult | Outcome:
        """A failed batch: rolled back and read again (fenced, an id stored elsewhere, refused
        rows), or retried as the class of its error calls for (consumer/retry.py)."""
        assert self.member is not None
        attempts = Attempts()
        while True:
            if isinstance(error, Fenced):
                self.summary.fenced += 1
                log.warning(
                    "batch of %d messages fenced and rolled back: %s (this member was frozen or cut "
                    "off); reading their stored offsets again",
                    batch.size,
                    error,
                )
                self.member.fenced(error.partitions)
                self.summary.rewinds += 1
                log.info("rewound to the stored offsets (fenced)")
                return Outcome.REWOUND
            if isinstance(error, storage.StoredElsewhere):
                self.facts.learn_stored(error.stored_at)
                self._rewind(f"{len(error.stored_at)} ids were already stored from other messages")
                return Outcome.REWOUND
            if isinstance(error, CommitUnknown):
                stored = self._settle_commit(error)
                if stored is not None:
                    return stored
                if self.stop_event.is_set():
                    return Outcome.STOPPED
            if classify(error) is ErrorKind.DATA:
                return self._reject_unstorable(batch, error)
            if not self.retry.again(error, attempts, f"storing a batch of {batch.size}"):
                self.summary.clean_exit = False
                log.warning("stopping with %d messages unsaved; their offsets did not move", batch.size)
                return Outcome.STOPPED
            try:
                return self._write_once(batch)
            except Exception as exc:
                error = exc

    def _settle_commit(self, error: CommitUnknown) -> storage.BatchResult | None:
        """Whether a COMMIT whose answer was lost went through: its result if it did, None to
        write the batch again (it did not, or asked to stop). Retrying blindly would find the
        offsets moved by this very batch and take it for a zombie's fence."""
        what = f"asking whether transaction {error.xid} committed"
        while True:
            status = self.retry.call(lambda conn: offsets.commit_status(conn, error.xid), what)
            if status != "in progress":
                break
            self._keep_membership(0.5)  # the server has not noticed the dead connection yet
        if status == "committed":
            error.result.stored_at = time.time()
            log.warning("the answer to a batch's COMMIT was lost; it was stored (transaction %d)", error.xid)
            return error.result
        log.warning(
            "the answer to a batch's COMMIT was lost; it was not stored (%s): writing it again", status
        )
        return None

    def _reject_unstorable(self, batch: Batch, error: Exception) -> Outcome:
        """A row validation let through was refused by a constraint: learn which, and read the
        batch again so that they become rejections before the rules see them."""
        bad = self.retry.call(
            lambda conn: storage.find_unstorable(conn, batch.txns), "isolating refused rows"
        )
        if bad is None:
            return Outcome.STOPPED
        if not bad:
            raise TxmonError(f"batch refused by the database and no single row explains it: {error}")
        log.error(
            "batch refused by the database (%s); %d rows will be rejected", str(error).strip(), len(bad)
        )
        self.facts.learn_unstorable(
            {(t.kafka_topic, t.kafka_partition, t.kafka_offset): why for t, why in bad}
        )
        self._rewind("rows refused by the database")
        return Outcome.REWOUND

    def _stored(self, batch: Batch, result: storage.BatchResult) -> None:
        """After the commit: offsets known and mirrored, the DLQ publisher woken, the summary."""
        assert self.member is not None
        self.member.stored(batch.moves)
        if self.timings is not None and batch.timing is not None:
            if not batch.timing.stored_at:  # a COMMIT whose answer was lost, settled since
                batch.timing.stored_at = result.stored_at
            self.timings.stored(batch.timing)
        if self.metrics is not None:
            self._record_metrics(batch, result)
        if batch.rejections and self.dlq is not None:
            self.dlq.wake(batch.incarnation)
        s = self.summary
        s.batches += 1
        s.consumed += batch.size
        s.stored += result.inserted
        s.already_stored += result.already_stored
        s.rejected += len(batch.rejections)
        s.alerts.update(result.alerts_by_type)
        s.rejected_reasons.update(r.reason for r in batch.rejections)
        self._last_done = time.monotonic()

    # ------------------------------------------------------------------ helpers

    def _rule_set_version_seen(self) -> None:
        self._version_seen = self.rulesets.current.version
        if self.metrics is not None:
            self.metrics.set_rule_set_version(self._version_seen)

    def _rule_set_activation_seen(self) -> None:
        self._activation_seen = self.rulesets.activation
        if self.metrics is not None:
            self.metrics.set_rule_set_activation(self._activation_seen)

    def _record_metrics(self, batch: Batch, result: storage.BatchResult) -> None:
        """Once per batch, after its commit. The delays are those of the rows this batch
        inserted (a replayed row's delay would measure the replay, not the pipeline)."""
        assert self.metrics is not None and self.member is not None
        txns = batch.txns
        if result.inserted != len(txns):
            txns = [t for t in txns if (t.kafka_partition, t.kafka_offset) in (result.inserted_at or ())]
        self.metrics.record_batch(
            BatchStats(
                stored=result.inserted,
                rejected=result.rejected_inserted,  # a replayed rejection is already stored
                already_stored=result.already_stored + len(batch.rejections) - result.rejected_inserted,
                alerts=result.alerts_by_rule_severity,
                evaluation_s=batch.evaluation_s,
                write_s=result.write_s,
                sent_epochs=(
                    t.epoch if t.kafka_timestamp_ms is None else t.kafka_timestamp_ms / 1000.0 for t in txns
                ),
                stored_at=result.stored_at,
            )
        )
        self.metrics.set_lag(self.member.lag())

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
