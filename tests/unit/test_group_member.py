"""The kafka-python shell around the membership machine (consumer/group.py), where it can be
driven without a broker: kafka-python changes the assignment on its IO thread, so the shell must
cope with a partition the machine still owns (its revocation queued) that the client refuses."""

from __future__ import annotations

import pytest
from kafka import TopicPartition
from kafka.errors import IllegalStateError, KafkaConnectionError, KafkaError

from consumer.group import GroupMember
from consumer.membership import Membership
from tests.unit.test_membership import owning


class _Client:
    """KafkaConsumer's highwater(): the end offset last fetched, refused for unassigned partitions."""

    def __init__(self, assigned: dict[int, int]) -> None:
        self.assigned = assigned

    def highwater(self, tp: TopicPartition) -> int | None:
        if tp.partition not in self.assigned:
            raise IllegalStateError("Partition is not assigned")
        return self.assigned[tp.partition]


def member(machine: Membership, client: _Client) -> GroupMember:
    m = object.__new__(GroupMember)  # no broker: only the attributes lag() reads
    m.topic, m.machine, m.consumer = "transactions", machine, client  # type: ignore[assignment]
    return m


def test_lag_leaves_out_a_partition_revoked_on_the_io_thread_before_the_machine_heard_of_it() -> None:
    machine = owning(0, 1, at=500)
    # Partition 1 was revoked by kafka-python's IO thread: the event is queued, not yet synced.
    lag = member(machine, _Client({0: 650})).lag()
    assert lag == {("transactions", 0): 150}


def test_lag_of_every_owned_partition_while_the_assignment_is_unchanged() -> None:
    machine = owning(0, 1, at=500)
    assert member(machine, _Client({0: 650, 1: 500})).lag() == {
        ("transactions", 0): 150,
        ("transactions", 1): 0,
    }


def test_a_partition_missing_from_the_offsets_answer_is_a_retriable_kafka_error() -> None:
    """kafka-python 3.0.12's beginning_offsets/end_offsets index the broker's answer by every
    partition asked for, and raise KeyError when one is missing (its leader moving): CI stop 28,
    a consumer crashed in the cluster test's broker bounces. The member's callers retry on
    KafkaError, so that is what it becomes."""
    asked = [TopicPartition("t", 0), TopicPartition("t", 5)]

    def answer_missing_one(tps: list[TopicPartition], timeout_ms: int) -> dict[TopicPartition, int]:
        got = {asked[0]: 7}
        return {tp: got[tp] for tp in tps}

    with pytest.raises(KafkaError, match="no offset in the broker's answer"):
        GroupMember._log_offsets(answer_missing_one, asked, 1000)
    assert GroupMember._log_offsets(answer_missing_one, asked[:1], 1000) == {asked[0]: 7}


class _Metadata:
    """KafkaConsumer.partitions_for_topic(): the cached partitions, or, when an answer dropped the
    topic, a blocking metadata fetch that may fail."""

    def __init__(self, partitions: set[int] | None) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int]:
        if self.partitions is None:
            raise KafkaConnectionError("Connection lost while fetching metadata")
        return self.partitions


def test_a_failed_metadata_fetch_leaves_the_partition_count_unknown_and_the_consumer_running() -> None:
    """A broker restarted in a cluster reports the topic unknown until the controller has told it
    of it; kafka-python then drops the topic and `partitions_for_topic` fetches metadata again,
    raising when that fails. The member counts 0 (no metadata: `partition_counts.record` records
    nothing), instead of letting the error stop the consumer. Found while chasing a consumer
    container's restart in the Compose cluster test (CI rehearsal of stop 29), which left no log
    to confirm that this was its cause."""
    m = member(owning(0, at=0), _Client({}))
    m.consumer = _Metadata(None)  # type: ignore[assignment]
    assert m._partition_count() == 0
    m.consumer = _Metadata({0, 1, 2, 3, 4, 5})  # type: ignore[assignment]
    assert m._partition_count() == 6
