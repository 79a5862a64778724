"""The consumer's side of the Kafka group: which partitions it reads, and from which offset.

Cooperative incremental rebalancing (kafka-python's cooperative-sticky assignor): a rebalance
revokes only the partitions that move. The rebalance listener runs on kafka-python's IO thread,
where blocking calls are not allowed, so it only books what changed (`to_setup`, `to_drop`);
the consumer's main loop does the work after poll():

* a gained partition stays paused until its stored offset is read from PostgreSQL (`setup`,
  with the decision in consumer/offsets.py) and the consumer seeks there;
* a lost partition is dropped once the batch in flight is stored or fenced.

Records of a partition that is not set up, or is being dropped, are never evaluated (`accept`).
Kafka's committed offsets are written as a mirror of what this member stored (`mirror`), for
lag tools only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2.extensions
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from consumer import offsets
from consumer.offsets import StartKind
from utils.config import Settings

log = logging.getLogger("consumer")

_BLOCKED_RECHECK_S = 60.0  # how often a partition we refuse to read is looked at again
DbCall = Callable[[Callable[[psycopg2.extensions.connection], Any], str], Any]


@dataclass(slots=True)
class Owned:
    """A partition this member reads. Offsets are Kafka offsets of the next message."""

    committed: int  # what consumer_offsets holds, as far as this member knows
    expected: int  # what it will hold once every batch prepared so far is stored
    position: int  # the next offset to read from Kafka


class _Listener(ConsumerRebalanceListener):
    """Bookkeeping only: kafka-python 3 calls these on its IO thread."""

    def __init__(self, member: GroupMember) -> None:
        self.member = member

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self.member.lose(revoked, "revoked")

    def on_partitions_lost(self, lost: Sequence[TopicPartition]) -> None:
        self.member.lose(lost, "lost (this member was dropped from the group)")

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self.member.gain(assigned)


class GroupMember:
    def __init__(self, settings: Settings, stop_event: threading.Event) -> None:
        k, cs = settings.kafka, settings.consumer
        self.topic, self.group = k.topic, k.consumer_group
        self.settings, self.stop_event = settings, stop_event
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
            heartbeat_interval_ms=min(3000, max(1000, cs.session_timeout_ms // 3)),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            client_id=f"txmon-consumer-{os.getpid()}",
        )
        self.owned: dict[TopicPartition, Owned] = {}  # set up and readable
        self.to_setup: set[TopicPartition] = set()  # gained (or fenced): read the stored offset first
        self.to_drop: set[TopicPartition] = set()  # lost: drop once the batch in flight is done
        self.blocked: dict[TopicPartition, float] = {}  # refused to read, until this monotonic time
        self.rebalances = 0  # bumped by every listener call
        self.mirror_of: dict[TopicPartition, int] = {}  # offsets this member stored, while it owns them
        self._broker_errors = 0  # consecutive retriable Kafka errors from poll()
        self._ever_assigned = False
        self._unassigned_since: float | None = None
        self._watchdog_s = max(30.0, 3 * cs.session_timeout_ms / 1000)
        # Know the topic's partitions before joining: a leader without them assigns nothing, and
        # the rebalance that follows is where kafka-python's join race strikes (watch_assignment).
        self.consumer.partitions_for_topic(self.topic)
        self.consumer.subscribe([self.topic], listener=_Listener(self))

    def close(self) -> None:
        self.mirror(self.mirror_of, sync=True)
        self.consumer.close(autocommit=False)

    # ------------------------------------------------------------------ listener (IO thread)

    def gain(self, partitions: Sequence[TopicPartition]) -> None:
        """Fetch nothing from them until their stored offset is read."""
        self.rebalances += 1
        self.consumer.pause(*partitions)
        self.to_setup.update(partitions)
        log.info("partitions assigned: %s", sorted(tp.partition for tp in partitions))

    def lose(self, partitions: Sequence[TopicPartition], how: str) -> None:
        self.rebalances += 1
        self.to_setup.difference_update(partitions)
        self.to_drop.update(partitions)
        log.info("partitions %s: %s", how, sorted(tp.partition for tp in partitions))

    # ------------------------------------------------------------------ main loop

    def take_drops(self) -> set[TopicPartition]:
        """The lost partitions, forgotten here; the caller drops their accounts."""
        drops, self.to_drop = self.to_drop, set()
        for tp in drops:
            self.owned.pop(tp, None)
            self.mirror_of.pop(tp, None)
            self.blocked.pop(tp, None)
        return drops

    def set_up_pending(self, db_call: DbCall) -> bool:
        """Set up what was gained, fenced or is due for another look. False when the broker or
        the database could not be asked (they stay pending, paused)."""
        now = time.monotonic()
        for tp in [tp for tp, at in self.blocked.items() if at <= now]:
            del self.blocked[tp]
            self.to_setup.add(tp)
        if not self.to_setup:
            return True
        assigned = self.consumer.assignment()
        todo, self.to_setup = sorted(tp for tp in self.to_setup if tp in assigned), set()
        if todo and not self._setup(todo, db_call):
            self.to_setup |= set(todo) - self.owned.keys() - self.blocked.keys()
            return False
        return True

    def _setup(self, tps: list[TopicPartition], db_call: DbCall) -> bool:
        parts = [tp.partition for tp in tps]
        try:
            log_start = self.consumer.beginning_offsets(tps, timeout_ms=10_000)
            log_end = self.consumer.end_offsets(tps, timeout_ms=10_000)
        except KafkaError as exc:
            log.warning("cannot set up partitions %s yet (%s); retrying", parts, exc)
            self.stop_event.wait(1.0)
            return False
        topic_id = self.topic_id()
        stored: dict[int, offsets.Stored] | None = db_call(
            lambda conn: offsets.read(conn, self.group, self.topic, parts),
            f"reading the stored offsets of {parts}",
        )
        if stored is None:
            return False
        new = [tp for tp in tps if tp.partition not in stored]
        if new:
            # No row yet (a new group, or one from before offsets lived here): Kafka's committed
            # offset, else the log start, recorded before anything is read. The coordinator
            # answers nothing while a rebalance is pending: ask briefly, retry after polling.
            starts = {}
            for tp in new:
                try:
                    committed = self.consumer.committed(tp, timeout_ms=2_000)
                except KafkaError as exc:
                    log.info(
                        "partition %d: no committed offset from Kafka yet (%s); retrying", tp.partition, exc
                    )
                    return False
                starts[tp.partition] = log_start[tp] if committed is None else committed

            def create(conn: psycopg2.extensions.connection) -> dict[int, offsets.Stored]:
                offsets.create(conn, self.group, self.topic, starts, topic_id)
                return offsets.read(conn, self.group, self.topic, parts)

            stored = db_call(create, f"recording the start offsets of {sorted(starts)}")
            if stored is None:
                return False
        for tp in tps:
            where = f"{tp.topic}/{tp.partition}"
            plan = offsets.plan_start(stored[tp.partition], log_start[tp], log_end[tp], topic_id, where)
            if plan.kind is StartKind.BLOCKED:
                log.error("%s", plan.message)
                self.blocked[tp] = time.monotonic() + _BLOCKED_RECHECK_S
                continue
            if plan.kind is StartKind.SKIP_DELETED:
                log.error("%s", plan.message)
            n = stored[tp.partition].next_offset
            self.owned[tp] = Owned(committed=n, expected=n, position=plan.offset)
            self.consumer.seek(tp, plan.offset)
            self.consumer.resume(tp)
        resumed = {tp.partition: self.owned[tp].position for tp in tps if tp in self.owned}
        log.info("partitions %s resume at %s", parts, resumed)
        return True

    def topic_id(self) -> uuid.UUID | None:
        """Kafka's id of the topic (KIP-516, metadata v10+), None where the broker has none.
        kafka-python keeps it in its cluster metadata without a public accessor."""
        cluster = getattr(self.consumer, "_cluster", None)
        topic_id = cluster.topic_id(self.topic) if cluster is not None else None
        return topic_id if isinstance(topic_id, uuid.UUID) and topic_id.int != 0 else None

    def accept(self, polled: Mapping[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        """The records of partitions that are set up and still ours, from where we expect them.
        Anything else (a partition lost or gained during the poll) is never evaluated."""
        out: dict[TopicPartition, list[Any]] = {}
        for tp, recs in polled.items():
            st = self.owned.get(tp)
            if st is None or tp in self.to_drop or not recs:
                continue
            first = recs[0].offset
            if first < st.position:
                log.error(
                    "%s/%d: Kafka returned offset %d, before the position %d: the client was reset "
                    "(log truncated or topic recreated); checking the partition again",
                    tp.topic, tp.partition, first, st.position,
                )  # fmt: skip
                self.set_up_again(tp)
                continue
            if first > st.position:
                log.warning(
                    "%s/%d: offsets %d..%d are not in the log (deleted by retention before they were "
                    "read, or transaction markers); continuing at %d",
                    tp.topic, tp.partition, st.position, first - 1, first,
                )  # fmt: skip
            st.position = recs[-1].offset + 1
            out[tp] = recs
        return out

    def set_up_again(self, tp: TopicPartition) -> None:
        """Forget where `tp` stands and read its stored offset again (after a fence or a reset)."""
        self.owned.pop(tp, None)
        self.mirror_of.pop(tp, None)
        if tp in self.consumer.assignment():
            self.consumer.pause(tp)
            self.to_setup.add(tp)

    def rewind(self) -> None:
        """Every owned partition back to its stored offset (those lost meanwhile are dropped
        by the main loop next)."""
        assigned = self.consumer.assignment()
        for tp, st in self.owned.items():
            st.expected = st.position = st.committed
            if tp in assigned:
                self.consumer.seek(tp, st.committed)

    def stored(self, moves: Mapping[TopicPartition, tuple[int, int]]) -> None:
        """A batch with these (start, end) offset moves committed: record and mirror them."""
        now = {}
        for tp, (_start, end) in moves.items():
            st = self.owned.get(tp)
            if st is not None:
                st.committed = self.mirror_of[tp] = now[tp] = end
        self.mirror(now)

    def mirror(self, stored: Mapping[TopicPartition, int], *, sync: bool = False) -> None:
        """Kafka's committed offsets follow the database for lag tools, never read back as truth:
        only offsets this member stored, of partitions it still owns (a partition that went
        elsewhere and came back is not committed from what this member stored before)."""
        mirror = {tp: OffsetAndMetadata(n, None, -1) for tp, n in stored.items() if tp in self.owned}
        if not mirror:
            return
        try:
            if sync:
                self.consumer.commit(mirror)
            else:
                self.consumer.commit_async(mirror, callback=_on_mirrored)
        except KafkaError as exc:
            log.info("mirroring offsets to Kafka failed (lag tools may lag): %s", exc)

    def poll(self) -> dict[TopicPartition, list[Any]]:
        """poll(), riding out broker outages: kafka-python raises its retriable errors (connection
        refused, metadata unavailable) out of poll(); we back off and poll again."""
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

    def keep_membership(self, seconds: float) -> None:
        """Wait while still calling poll() (paused), so the group does not evict us during an
        outage. Rebalances may happen meanwhile: the listener books them as usual."""
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline and not self.stop_event.is_set():
                # Re-pause every round: a rebalance meanwhile brings partitions that are not paused.
                self.consumer.pause(*self.consumer.assignment())
                try:
                    self.consumer.poll(timeout_ms=min(500, int(seconds * 1000)))
                except KafkaError as exc:
                    if not getattr(exc, "retriable", False):
                        raise
                    self.stop_event.wait(0.5)
        finally:
            # Whatever was fetched meanwhile is read again from where we are.
            assigned = self.consumer.assignment()
            for tp, st in self.owned.items():
                if tp in assigned:
                    self.consumer.seek(tp, st.position)
                    self.consumer.resume(tp)

    def watch_assignment(self, now: float) -> None:
        """Work around a kafka-python 3.0.12 race, seen under the cooperative protocol too: the
        leader of a new group sometimes never completes its SyncGroup, gets no partitions, and
        is dropped from the group once its heartbeats stop, while it waits forever. A member
        that has never owned a partition re-joins after a while (the wait doubles each time).
        Harmless now: the re-join moves no other member's partitions (cooperative), and with
        offsets in the database and accounts loaded on demand a rebalance rebuilds nothing."""
        if self.consumer.assignment():
            self._ever_assigned, self._unassigned_since = True, None
            return
        if self._ever_assigned:
            return
        if self._unassigned_since is None:
            self._unassigned_since = now
        elif now - self._unassigned_since > self._watchdog_s:
            log.warning(
                "no partitions assigned after %.0fs; re-joining the group (kafka-python join race)",
                now - self._unassigned_since,
            )
            self.consumer.unsubscribe()
            self.consumer.subscribe([self.topic], listener=_Listener(self))
            self._unassigned_since = now
            self._watchdog_s *= 2

    def lag(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> messages not stored yet, of each partition set up here, from the
        end offset the last fetch reported (no request to the broker)."""
        out = {}
        for tp, st in self.owned.items():
            end = self.consumer.highwater(tp)
            if end is not None:
                out[(tp.topic, tp.partition)] = max(0, end - st.committed)
        return out

    def caught_up(self) -> bool:
        """True when every assigned partition is read to its end, as the broker confirms. A broker
        that cannot be asked is no proof of an empty topic: silence during an outage is not idle."""
        assigned = self.consumer.assignment()
        if not assigned or any(tp not in self.owned for tp in assigned):
            return False
        try:
            ends = self.consumer.end_offsets(list(assigned), timeout_ms=5000)
        except KafkaError as exc:
            log.warning("idle, but cannot confirm the end of the topic (%s): waiting on", exc)
            return False
        lagging = {tp.partition: ends[tp] - self.owned[tp].position for tp in assigned}
        lagging = {p: n for p, n in lagging.items() if n > 0}
        if lagging:
            log.info("idle, but partitions still have messages to read: %s", lagging)
        return not lagging


def _on_mirrored(offsets: dict[TopicPartition, OffsetAndMetadata], response: object) -> None:
    if isinstance(response, Exception):
        log.info("mirroring offsets to Kafka failed (lag tools may lag): %s", response)
