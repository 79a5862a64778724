"""The consumer's side of the Kafka group: the thin shell around consumer/membership.py.

The decisions (which partitions to read, from which offset, what to accept, when to drop, pause,
resume or seek) are taken by the sans-I/O state machine `Membership`; this module turns
kafka-python's callbacks and answers into its events and carries out its actions.

Cooperative incremental rebalancing (kafka-python's cooperative-sticky assignor): a rebalance
revokes only the partitions that move. The rebalance listener runs on kafka-python's IO thread,
where blocking calls are not allowed, so it puts the change on a thread-safe queue (and pauses
what is gained); the main loop feeds the queue to the machine (`sync`) before every decision
that depends on it.

Kafka's committed offsets are written as a mirror of what this member stored (`Mirror`), for lag
tools only, never read back as truth. A refused mirror comes back through the same queue (the
commit callback may run on the IO thread) and is written again (`MIRROR_FAILED`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import psycopg2.extensions
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import IllegalStateError, KafkaError, NoError
from kafka.structs import MemberState, OffsetAndMetadata

from consumer import offsets, partition_counts, positions
from consumer.membership import (
    MIRROR_FAILED,
    Action,
    Answer,
    ClearCache,
    CreateStored,
    Forget,
    Membership,
    Mirror,
    Pause,
    ReadStored,
    Resume,
    Seek,
)
from utils.config import Settings
from utils.errors import TxmonError
from utils.kafka_cleanup import admin_client

log = logging.getLogger("consumer")

DbCall = Callable[[Callable[[psycopg2.extensions.connection], Any], str], Any]
Event = tuple[str, tuple[int, ...]]  # (what happened, to which partitions): see MIRROR_FAILED


class _Listener(ConsumerRebalanceListener):
    """kafka-python 3 calls these on its IO thread: they queue the change for the machine. The
    one thing done here is pausing what is gained (kafka-python's pause is thread-safe): a
    partition must not be fetched from before the machine has set it up. Left unpaused until
    the main loop ran, kafka-python started fetching it from Kafka's committed offset or the log
    start, and that fetch could land after our seek (test_accounts_moved_by_add_partitions_...
    read offset 0 after seeking to 1434, and then hung in poll())."""

    def __init__(self, events: queue.SimpleQueue[Event], consumer: KafkaConsumer) -> None:
        self.events, self.consumer = events, consumer

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self.events.put(("revoked", tuple(tp.partition for tp in revoked)))

    def on_partitions_lost(self, lost: Sequence[TopicPartition]) -> None:
        self.events.put(("lost (this member was dropped from the group)", tuple(tp.partition for tp in lost)))

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self.consumer.pause(*assigned)
        self.events.put(("assigned", tuple(tp.partition for tp in assigned)))


class GroupMember:
    def __init__(
        self,
        settings: Settings,
        stop_event: threading.Event,
        *,
        on_forget: Callable[[tuple[int, ...]], None] = lambda ps: None,
        on_clear: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_forget(partitions)`: the caller drops what it holds of partitions lost;
        `on_clear()`: it empties its account cache (a rewind)."""
        k, cs = settings.kafka, settings.consumer
        self.topic, self.group = k.topic, k.consumer_group
        self.settings, self.stop_event = settings, stop_event
        self.on_forget, self.on_clear = on_forget, on_clear
        self._heartbeat_ms = min(3000, max(1000, cs.session_timeout_ms // 3))
        self.consumer = KafkaConsumer(
            **k.client_kwargs(),
            group_id=k.consumer_group,
            enable_auto_commit=False,  # offsets live in PostgreSQL; Kafka's are a mirror we write
            auto_offset_reset="earliest",  # only before our seek; a rewind past it is detected
            partition_assignment_strategy=(CooperativeStickyAssignor,),
            max_poll_records=cs.max_poll_records,
            session_timeout_ms=cs.session_timeout_ms,
            # Members join a rebalance when a heartbeat tells them of it: a short interval keeps
            # each cooperative round (and the fetching it holds up) to a few seconds.
            heartbeat_interval_ms=self._heartbeat_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            client_id=f"txmon-consumer-{os.getpid()}",
        )
        self.machine = Membership()
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._broker_errors = 0  # consecutive retriable Kafka errors from poll()
        self._ever_assigned = False
        self._unassigned_since: float | None = None
        self._mirror_retry_at = 0.0  # monotonic: refused mirrors are written again from then on
        self._rebalancing_since: float | None = None  # holding partitions, in a re-join (watch_assignment)
        self._watchdog_s = max(30.0, 3 * cs.session_timeout_ms / 1000)
        # The stall guard (`stalled`): per readable partition, when it last returned records (or
        # became readable), on the monotonic clock; time away from poll() does not count.
        self._stall_s = cs.stall_restart_s
        self._progress_at: dict[int, float] = {}
        self._last_poll_at: float | None = None
        self._stall_checked_at = 0.0
        # Per topic incarnation, every partition count the group has recorded (migration 065):
        # where validation accepts a key (consumer/validation.py `wrong_partition`).
        self._counts: dict[uuid.UUID, frozenset[int]] = {}
        self._subscribe(fetch_metadata=True)

    def _subscribe(self, *, fetch_metadata: bool = False) -> None:
        """Subscribe, then fetch the cluster's metadata (topics() always asks the broker). The
        order matters: kafka-python keeps a snapshot of the subscribed topics' partitions, taken
        on each metadata update after subscribe(), and the group leader compares the snapshot it
        assigned with to every later one. Metadata fetched before subscribing left the snapshot
        empty, so the leader's first assignment was followed at once by a re-join (generation 2
        right after 1): the join in which kafka-python's join race strikes (`poll`). Fetched
        after, the leader assigns on what it will see next, and a leader without the topic's
        partitions does not assign nothing either. A re-join (`_rejoin`) keeps the snapshot it
        had and skips the fetch, which blocks while the broker is away."""
        self.consumer.subscribe([self.topic], listener=_Listener(self.events, self.consumer))
        if not fetch_metadata:
            return
        try:
            self.consumer.topics()
        except KafkaError as exc:  # an outage: the snapshot is taken at the next metadata update
            log.warning("cannot fetch the topic's metadata before joining (%s)", exc)

    def close(self) -> None:
        self.sync()
        last = dict(self.machine.mirror_of)
        written = self._commit(last.items(), sync=True)
        self.consumer.close(autocommit=False)
        if not written:
            self._mirror_after_leaving(last)

    def _mirror_after_leaving(self, last: Mapping[int, int]) -> None:
        """The group refused our last mirror (kafka-python's join race leaves a member whose
        every commit is refused: the walkthrough's lag read 3,030 for 30 unread, CI stop 27). Out
        of the group now, write it as an admin tool does, which Kafka accepts only while the
        group has no members, so no member's live mirror is overwritten; and only where Kafka's
        committed offset is behind ours (a member that stored past us and left is not moved
        back). With members left, the new owners mirror these partitions when they set them up."""
        tps = {self._tp(p): n for p, n in last.items()}
        try:
            with contextlib.closing(admin_client(self.settings.kafka, timeout_s=5.0)) as admin:
                committed = admin.list_group_offsets({self.group: None}).get(self.group, {})
                tps = {tp: n for tp, n in tps.items() if tp not in committed or committed[tp].offset < n}
                if not tps:
                    return
                for attempt in range(5):  # our LeaveGroup may take a moment to empty the group
                    result = admin.alter_group_offsets(
                        self.group, {tp: OffsetAndMetadata(n, None, -1) for tp, n in tps.items()}
                    )
                    tps = {tp: tps[tp] for tp, err in result.items() if err is not NoError}
                    if not tps:
                        log.info(
                            "offsets mirrored to Kafka after leaving the group: %s", sorted(last.items())
                        )
                        return
                    if attempt < 4:
                        time.sleep(0.5)
        except (KafkaError, TxmonError) as exc:
            log.warning("could not mirror the stored offsets to Kafka (lag tools show more lag): %s", exc)
            return
        log.warning(
            "could not mirror the stored offsets of partitions %s to Kafka: the group still has members, "
            "which mirror them when they set them up (%s)",
            sorted(tp.partition for tp in tps),
            sorted({err.__name__ for err in result.values() if err is not NoError}),
        )

    # ------------------------------------------------------------------ events in, actions out

    def sync(self) -> None:
        """Feed the rebalances the listener queued to the machine, in order."""
        while True:
            try:
                how, ps = self.events.get_nowait()
            except queue.Empty:
                return
            if how == MIRROR_FAILED:
                self.machine.mirror_failed(ps)
                continue
            log.info("partitions %s: %s", how, sorted(ps))
            if how == "assigned":
                self.execute(self.machine.assign(ps))
            else:
                self.execute(self.machine.revoke(ps))

    def execute(self, actions: Iterable[Action]) -> None:
        """Carry out the machine's actions. The assignment can change on the IO thread at any
        time: an action on a partition no longer assigned is skipped (its revocation is queued)."""
        for a in actions:
            if isinstance(a, Seek):
                try:
                    self.consumer.seek(self._tp(a.partition), a.offset)
                except (ValueError, IllegalStateError, KeyError):
                    log.info("partition %d: no longer assigned, not seeking it", a.partition)
            elif isinstance(a, Pause | Resume):
                assigned = self.consumer.assignment()
                tps = [tp for tp in map(self._tp, a.partitions) if tp in assigned]
                try:
                    if isinstance(a, Pause):
                        self.consumer.pause(*tps)
                    else:
                        self.consumer.resume(*tps)
                except (KeyError, IllegalStateError):
                    log.info("partitions %s: the assignment changed meanwhile", list(a.partitions))
            elif isinstance(a, Mirror):
                self._commit(a.offsets)
            elif isinstance(a, Forget):
                self.on_forget(a.partitions)
            elif isinstance(a, ClearCache):
                self.on_clear()
            else:  # ReadStored and CreateStored are answered where they are asked (_setup)
                raise AssertionError(f"unexpected action {a}")

    def _tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)

    # ------------------------------------------------------------------ partitions

    @property
    def rebalances(self) -> int:
        """Bumped by every assignment change (those queued included)."""
        self.sync()
        return self.machine.rebalances

    def has_drops(self) -> bool:
        self.sync()
        return bool(self.machine.dropping)

    def drop(self) -> tuple[int, ...]:
        """Forget the partitions lost (the caller completed the batch in flight)."""
        actions = self.machine.drop()
        self.execute(actions)
        return next((a.partitions for a in actions if isinstance(a, Forget)), ())

    def owned(self) -> list[int]:
        return self.machine.readable()

    def set_up_pending(self, db_call: DbCall) -> bool:
        """Set up what was gained, fenced or is due for another look. False when the broker or
        the database could not be asked (they stay pending, paused)."""
        self.sync()
        now = time.monotonic()
        if now >= self._mirror_retry_at:  # in a rebalance every commit fails: once a second is enough
            self._mirror_retry_at = now + 1.0
            self.execute(self.machine.mirror_due())
        for a in self.machine.setup_due(now):
            assert isinstance(a, ReadStored)
            if not self._setup(a.partitions, db_call):
                self.machine.read_failed(a.partitions)
                return False
        return True

    @staticmethod
    def _log_offsets(
        ask: Callable[..., dict[TopicPartition, int]], tps: list[TopicPartition], timeout_ms: int
    ) -> dict[TopicPartition, int]:
        """`beginning_offsets` or `end_offsets`, with kafka-python 3.0.12's KeyError (a partition
        left out of the answer while its leader moves: a consumer crashed on it in the cluster
        test's broker bounces, CI stop 28) raised as the retriable KafkaError it is."""
        try:
            return ask(tps, timeout_ms=timeout_ms)
        except KeyError as exc:
            raise KafkaError(f"no offset in the broker's answer for {exc} (its leader moving?)") from exc

    def _setup(self, parts: tuple[int, ...], db_call: DbCall) -> bool:
        tps = [self._tp(p) for p in parts]
        try:
            log_start = self._log_offsets(self.consumer.beginning_offsets, tps, 10_000)
            log_end = self._log_offsets(self.consumer.end_offsets, tps, 10_000)
        except KafkaError as exc:
            log.warning("cannot set up partitions %s yet (%s); retrying", list(parts), exc)
            self.stop_event.wait(1.0)
            return False
        topic_id = self.topic_id()
        incarnation, count = positions.incarnation(topic_id), self._partition_count()

        def read(conn: psycopg2.extensions.connection) -> tuple[frozenset[int], dict[int, offsets.Stored]]:
            counts = partition_counts.record(conn, self.topic, incarnation, count)
            return counts, offsets.read(conn, self.group, self.topic, parts)

        answered = db_call(read, f"reading the stored offsets of {list(parts)}")
        if answered is None:
            return False
        self._counts[incarnation], stored = answered

        def answer(p: int, st: offsets.Stored | None) -> Answer:
            return Answer(st, log_start[self._tp(p)], log_end[self._tp(p)])

        self.sync()  # revocations that came while we waited on PostgreSQL
        actions = self.machine.answered(
            {p: answer(p, stored.get(p)) for p in parts}, topic_id, time.monotonic(), self.topic
        )
        self.execute(a for a in actions if not isinstance(a, CreateStored))
        create = next((a for a in actions if isinstance(a, CreateStored)), None)
        if create is not None:
            starts, tid = dict(create.starts), create.topic_id

            def record_starts(conn: psycopg2.extensions.connection) -> dict[int, offsets.Stored]:
                offsets.create(conn, self.group, self.topic, starts, tid)
                return offsets.read(conn, self.group, self.topic, list(starts))

            created = db_call(record_starts, f"recording the start offsets of {sorted(starts)}")
            if created is None:
                return False
            self.sync()
            again = {p: answer(p, created.get(p)) for p in starts}
            self.execute(self.machine.answered(again, topic_id, time.monotonic(), self.topic))
        return True

    def verify_idle(self, db_call: DbCall) -> None:
        """Idle with nothing in flight: read again the stored offsets of partitions taken over and
        not yet confirmed by a batch of ours (`Membership.verify_due`)."""
        self.sync()
        parts = self.machine.verify_due(time.monotonic())
        if not parts:
            return
        stored = db_call(
            lambda conn: offsets.read(conn, self.group, self.topic, parts),
            f"checking the stored offsets of idle partitions {list(parts)}",
        )
        if stored is not None:
            self.sync()
            self.execute(self.machine.verified(stored))

    def partition_counts(self, incarnation: uuid.UUID) -> frozenset[int]:
        """The partition counts recorded for the incarnation (empty before any setup of it)."""
        return self._counts.get(incarnation, frozenset())

    def refresh_partition_counts(self, incarnation: uuid.UUID, db_call: DbCall) -> frozenset[int] | None:
        """Fresh metadata, its count recorded, and every count recorded since (another member may
        have seen partitions added first). None: the database could not be asked."""
        try:
            # kafka-python refreshes metadata only every metadata_max_age_ms; a producer may
            # have seen added partitions first. topics() is the public call documented to
            # always fetch fresh metadata from the cluster.
            self.consumer.topics()
        except KafkaError as exc:
            log.warning("cannot refresh the topic's metadata (%s); using what the client has", exc)
        count = self._partition_count()
        counts: frozenset[int] | None = db_call(
            lambda conn: partition_counts.record(conn, self.topic, incarnation, count),
            "recording the topic's partition count",
        )
        if counts is not None:
            self._counts[incarnation] = counts
        return counts

    def _partition_count(self) -> int:
        """The topic's partition count as the client knows it; 0 (no metadata, which
        `partition_counts.record` ignores) when that is unknown for now. kafka-python drops a
        topic from its metadata when an answer reports it in error, as a broker restarted in a
        cluster does until the controller has told it of its topics, and then fetches metadata
        again in `partitions_for_topic`, a blocking call whose failure (the node's connection
        lost, a timeout) would otherwise escape and stop the consumer."""
        try:
            return len(self.consumer.partitions_for_topic(self.topic))
        except KafkaError as exc:
            log.warning("the topic's partition count is unknown for now (%s); asking again later", exc)
            return 0

    def topic_id(self) -> uuid.UUID | None:
        """Kafka's id of the topic (KIP-516, metadata v10+), None where the broker has none.
        kafka-python keeps it in its cluster metadata without a public accessor."""
        cluster = getattr(self.consumer, "_cluster", None)
        topic_id = cluster.topic_id(self.topic) if cluster is not None else None
        return topic_id if isinstance(topic_id, uuid.UUID) and topic_id.int != 0 else None

    # ------------------------------------------------------------------ reading

    def poll(self) -> dict[TopicPartition, list[Any]]:
        """poll(), riding out broker outages: kafka-python raises its retriable errors (connection
        refused, metadata unavailable) out of poll(); we back off and poll again."""
        cs = self.settings.consumer
        try:
            records: dict[TopicPartition, list[Any]] = self.consumer.poll(
                timeout_ms=cs.poll_timeout_ms, max_records=cs.max_poll_records
            )
            # kafka-python 3.0.12 carries a join through only while poll() waits for it: an
            # answer that lands between two polls is dropped (a finished join is replaced by a
            # new JoinGroup, for a leader a new rebalance of the whole group) or, for a leader,
            # never applied (watch_assignment). So while a join is in flight, poll again at once
            # instead of going back to the main loop. A join ends once every member re-joined,
            # each told by its next heartbeat: three heartbeat intervals at most, after which
            # the main loop turns again (health file, stop) and the next poll goes on waiting.
            until = time.monotonic() + 3 * self._heartbeat_ms / 1000
            while not records and self._rebalancing() and not self.stop_event.is_set():
                if time.monotonic() >= until:
                    break
                records = self.consumer.poll(timeout_ms=cs.poll_timeout_ms, max_records=cs.max_poll_records)
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
        if records and self._rebalancing():
            # kafka-python 3.0.12 fetches only once a join is complete: records while its state
            # says REBALANCING are a join task nobody will wait for (watch_assignment). Precise,
            # so no back-off; the records are dropped with the partitions (read again from the
            # stored offsets by whoever owns them next).
            self._rejoin(
                "kafka-python returned records while its re-join of the group is unfinished "
                "(a join task left behind: no heartbeats, every commit refused)",
                back_off=False,
            )
            return {}
        self.machine.polled(tp.partition for tp, recs in records.items() if recs)
        now = time.monotonic()
        away = 0.0 if self._last_poll_at is None else now - self._last_poll_at - cs.poll_timeout_ms / 1000
        if away > 1.0:  # a batch retried through an outage, a long write: not the client's silence
            self._progress_at = {p: at + away for p, at in self._progress_at.items()}
        self._last_poll_at = now
        for tp, recs in records.items():
            if recs:
                self._progress_at[tp.partition] = now
        return records

    def stalled(self, now: float) -> dict[int, int]:
        """Partitions read here that returned nothing for CONSUMER_STALL_RESTART_SECONDS of polling
        while the broker holds messages for them: {partition: messages waiting}. kafka-python
        3.0.12 was seen to stop fetching such partitions for good after this member was dropped
        from the group and given its partitions back in one rebalance (tests/integration/
        test_faults.py's broker outage, about 1 run in 20 on a loaded box), its fetch state out
        of step with the group's. Liveness only: what is stored does not depend on it."""
        readable = set(self.machine.readable())
        self._progress_at = {p: at for p, at in self._progress_at.items() if p in readable}
        if self._stall_s <= 0:
            return {}
        quiet = sorted(p for p in readable if now - self._progress_at.setdefault(p, now) >= self._stall_s)
        if not quiet or now - self._stall_checked_at < self._stall_s / 2:
            return {}
        self._stall_checked_at = now
        try:
            ends = self._log_offsets(self.consumer.end_offsets, [self._tp(p) for p in quiet], 5000)
        except KafkaError:
            return {}  # the broker cannot be asked: an outage, which poll() rides out
        waiting = {
            p: ends[self._tp(p)] - self.machine.owned[p].position for p in quiet if self._tp(p) in ends
        }
        for p, n in waiting.items():
            if n <= 0:
                self._progress_at[p] = now  # read to the end: quiet, not stalled
        return {p: n for p, n in waiting.items() if n > 0}

    def accept(self, polled: Mapping[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        """The records to evaluate: of partitions set up and still ours, from where we expect
        them, not sought since the poll (the machine decides)."""
        self.sync()
        topic_id = self.topic_id()
        self.execute(self.machine.topic_seen(topic_id, self.topic))
        spans = {tp.partition: (recs[0].offset, recs[-1].offset) for tp, recs in polled.items() if recs}
        if not spans:
            return {}
        accepted, actions = self.machine.accept(spans, topic_id, self.topic)
        self.execute(actions)
        return {tp: recs for tp, recs in polled.items() if tp.partition in accepted}

    def prepared(
        self, spans: Mapping[TopicPartition, tuple[int, int]]
    ) -> dict[TopicPartition, tuple[int, int]]:
        moves = self.machine.prepared({tp.partition: span for tp, span in spans.items()})
        return {self._tp(p): move for p, move in moves.items()}

    # ------------------------------------------------------------------ batch outcomes

    def stored(self, moves: Mapping[TopicPartition, tuple[int, int]]) -> None:
        """A batch with these (start, end) offset moves committed: record and mirror them."""
        self.execute(self.machine.stored({tp.partition: m for tp, m in moves.items()}))

    def rewind(self) -> None:
        """Every owned partition back to its stored offset (those lost meanwhile are dropped
        by the main loop next); what was polled before is read again."""
        self.sync()
        self.execute(self.machine.rewind())

    def fenced(self, partitions: Iterable[int]) -> None:
        self.sync()
        self.execute(self.machine.fenced(partitions))

    def _commit(self, stored: Iterable[tuple[int, int]], *, sync: bool = False) -> bool:
        """Kafka's committed offsets follow the database for lag tools: only offsets this member
        stored, of partitions it still owns (the machine's Mirror says which). False when the
        commit was refused at once (sync: at all)."""
        mirror = {self._tp(p): OffsetAndMetadata(n, None, -1) for p, n in stored}
        if not mirror:
            return True
        try:
            if sync:
                self.consumer.commit(mirror)
            else:
                self.consumer.commit_async(mirror, callback=self._on_mirrored)
        except KafkaError as exc:
            log.info("mirroring offsets to Kafka failed (written again shortly): %s", exc)
            self.events.put((MIRROR_FAILED, tuple(tp.partition for tp in mirror)))
            return False
        return True

    def _on_mirrored(self, offsets: dict[TopicPartition, OffsetAndMetadata], response: object) -> None:
        """kafka-python's commit callback (it may run on its IO thread): a failure is queued for
        the machine, which mirrors those partitions again (`Membership.mirror_due`)."""
        if isinstance(response, Exception):
            log.info("mirroring offsets to Kafka failed (written again shortly): %s", response)
            self.events.put((MIRROR_FAILED, tuple(tp.partition for tp in offsets)))

    def keep_membership(self, seconds: float) -> None:
        """Wait while still calling poll() (paused), so the group does not evict us during an
        outage. Rebalances may happen meanwhile: they are queued and fed to the machine."""
        deadline = time.monotonic() + seconds
        try:
            self.sync()
            self.execute(self.machine.outage_began())
            while time.monotonic() < deadline and not self.stop_event.is_set():
                try:
                    self.consumer.poll(timeout_ms=min(500, int(seconds * 1000)))
                except KafkaError as exc:
                    if not getattr(exc, "retriable", False):
                        raise
                    self.stop_event.wait(0.5)
                # A rebalance meanwhile brings partitions that are not paused: the machine
                # pauses what it gains.
                self.sync()
        finally:
            self.sync()
            self.execute(self.machine.outage_ended())

    def watch_assignment(self, now: float) -> None:
        """Backstop for kafka-python 3.0.12's join race: a join task nobody waits for.

        The cause (kafka/coordinator/base.py `join_group_async`, kafka/coordinator/consumer.py
        `need_rejoin`, `_perform_assignment`): a poll whose time runs out during a join returns
        and leaves the join task running on the IO thread; the next poll waits for it again only
        if `need_rejoin()` is still True. For the group leader re-joining because its metadata
        snapshot changed, `need_rejoin()` is True through `_assignment_snapshot !=
        _metadata_snapshot` alone (`rejoin_needed` stays False, unlike the Java client's
        requestRejoin), and the task itself makes it False when it performs the assignment.
        If that happens between two polls, the SyncGroup answer is never applied: the state
        stays REBALANCING, heartbeats stay off (the broker drops the member and gives its
        partitions away), every commit is refused, and poll() goes on fetching the old
        assignment. Two shapes were seen: a leader of a new group that never gets partitions,
        and a member that holds partitions (test_a_partition_that_went_elsewhere_and_back_...).

        `_subscribe` removes the usual trigger (the leader's follow-up re-join right after its
        first assignment), `poll` keeps polling while a join is in flight (so its answers land
        while kafka-python waits for them) and catches a left-behind join as soon as it returns
        records; this watch re-joins a member that still holds partitions while REBALANCING, or
        never got any, after a while (the wait doubles each time): harmless, the re-join moves no
        other member's partitions (cooperative), and with offsets in the database and accounts
        loaded on demand a rebalance rebuilds nothing."""
        if self.consumer.assignment():
            self._ever_assigned, self._unassigned_since = True, None
            if not self._rebalancing():
                self._rebalancing_since = None
            elif self._rebalancing_since is None:
                self._rebalancing_since = now
            elif now - self._rebalancing_since > self._watchdog_s:
                self._rejoin(
                    f"a re-join of the group has not completed after {now - self._rebalancing_since:.0f}s"
                )
                self._rebalancing_since = now
            return
        if self._ever_assigned:
            return
        if self._unassigned_since is None:
            self._unassigned_since = now
        elif now - self._unassigned_since > self._watchdog_s:
            self._rejoin(f"no partitions assigned after {now - self._unassigned_since:.0f}s")
            self._unassigned_since = now

    def _rebalancing(self) -> bool:
        """kafka-python's membership state is REBALANCING. It has no public accessor (the state
        values are public, kafka.structs.MemberState): read defensively, False when it moved."""
        return getattr(getattr(self.consumer, "_coordinator", None), "state", None) == MemberState.REBALANCING

    def _rejoin(self, why: str, *, back_off: bool = True) -> None:
        log.warning("%s; re-joining the group (kafka-python join race)", why)
        held = tuple(sorted(tp.partition for tp in self.consumer.assignment()))
        self.consumer.unsubscribe()  # clears the assignment without calling the listener
        if held:
            self.events.put(("lost (re-joining the group)", held))
        self._subscribe()
        if back_off:
            self._watchdog_s *= 2

    def lag(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> messages not stored yet, of each partition set up here, from the
        end offset the last fetch reported (no request to the broker)."""
        highwater = {p: self._highwater(p) for p in self.machine.owned}
        return {(self.topic, p): n for p, n in self.machine.lag(highwater).items()}

    def _highwater(self, partition: int) -> int | None:
        """None for a partition revoked on the IO thread whose revocation is still queued: the
        machine owns it until the next sync, kafka-python already refuses to answer for it (a
        member exporting metrics crashed here on `IllegalStateError` in a rebalance)."""
        try:
            end: int | None = self.consumer.highwater(self._tp(partition))
        except IllegalStateError:
            return None
        return end

    def describe(self) -> dict[str, Any]:
        """What this member believes and what kafka-python will fetch, per partition: the state an
        operator asks for with `kill -USR1 <pid>` when a consumer owns partitions but reads
        nothing. kafka-python's per-partition fetch state has no public accessor (read defensively)."""
        m = self.machine
        subscription = getattr(self.consumer, "_subscription", None)
        states = getattr(subscription, "assignment", {}) or {}
        client: dict[int, dict[str, Any]] = {}
        for tp, st in list(states.items()):
            position = getattr(st, "_position", None)
            client[tp.partition] = {
                "paused": getattr(st, "paused", None),
                "pending_revocation": getattr(st, "_pending_revocation", None),
                "awaiting_validation": getattr(st, "_awaiting_validation", None),
                "awaiting_reset": getattr(st, "reset_strategy", None) is not None,
                "position": getattr(position, "offset", None),
                "position_epoch": getattr(position, "leader_epoch", None),
                "leader_epoch": self._leader_epoch(tp),
                "highwater": getattr(st, "highwater", None),
            }
        coordinator = getattr(self.consumer, "_coordinator", None)
        generation = getattr(coordinator, "_generation", None)
        fetcher = getattr(self.consumer, "_fetcher", None)
        sessions = {
            str(node): {
                "epoch": getattr(getattr(h, "next_metadata", None), "epoch", None),
                "offsets": {
                    tp.partition: getattr(d, "fetch_offset", None) for tp, d in h.session_partitions.items()
                },
                "epochs": {
                    tp.partition: getattr(d, "current_leader_epoch", None)
                    for tp, d in h.session_partitions.items()
                },
            }
            for node, h in dict(getattr(fetcher, "_session_handlers", {}) or {}).items()
        }
        current = getattr(fetcher, "_next_partition_records", None)
        # Where fetched data waits to be returned: a partition with data waiting is left out of
        # the next fetch request, so data that never drains stops the partition for good.
        buffered = {
            "completed": sorted(
                f.topic_partition.partition for f in list(getattr(fetcher, "_completed_fetches", ()))
            ),
            "paused_completed": sorted(
                tp.partition for tp in dict(getattr(fetcher, "_paused_completed_fetches", {}))
            ),
            "paused_records": sorted(
                tp.partition for tp in dict(getattr(fetcher, "_paused_partition_records", {}))
            ),
            "next_in_line": getattr(getattr(current, "topic_partition", None), "partition", None)
            if current
            else None,
        }
        return {
            "fetch_sessions": sessions,
            "buffered": buffered,
            "fetch_in_flight_to": sorted(
                map(str, set(getattr(fetcher, "_nodes_with_pending_fetch_requests", ())))
            ),
            "machine": {
                "assigned": sorted(m.assigned),
                "phase": {p: ph.value for p, ph in sorted(m.phase.items())},
                "owned": {
                    p: {"committed": o.committed, "expected": o.expected, "position": o.position}
                    for p, o in sorted(m.owned.items())
                },
                "dropping": sorted(m.dropping),
                "rebalances": m.rebalances,
            },
            "kafka": client,
            "generation": getattr(generation, "generation_id", None),
            "queued_events": self.events.qsize(),
        }

    def _leader_epoch(self, tp: TopicPartition) -> int | None:
        """The partition's leader epoch in the client's cluster metadata (what fetches send)."""
        cluster = getattr(self.consumer, "_cluster", None)
        try:
            epoch = cluster.leader_epoch_for_partition(tp) if cluster is not None else None
        except Exception:  # a diagnostic: an internal that moved must not crash the dump
            return None
        return epoch if isinstance(epoch, int) else None

    def caught_up(self) -> bool:
        """True when every assigned partition is read to its end, as the broker confirms. A broker
        that cannot be asked is no proof of an empty topic: silence during an outage is not idle."""
        self.sync()
        if self.machine.unread({}) is None:
            return False
        try:
            ends = self._log_offsets(
                self.consumer.end_offsets, [self._tp(p) for p in self.machine.assigned], 5000
            )
        except KafkaError as exc:
            log.warning("idle, but cannot confirm the end of the topic (%s): waiting on", exc)
            return False
        lagging = self.machine.unread({tp.partition: n for tp, n in ends.items()})
        if lagging:
            log.info("idle, but partitions still have messages to read: %s", lagging)
        return lagging == {}
