"""GroupMember.lag() while the IO thread revokes a partition the machine still owns."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from kafka import TopicPartition
from kafka.errors import IllegalStateError

from consumer.group import GroupMember
from consumer.membership import Membership


class _Consumer:
    """kafka-python's answer: partition 1 was just revoked (not assigned any more)."""

    def highwater(self, tp: TopicPartition) -> int:
        if tp.partition == 1:
            raise IllegalStateError("Partition is not assigned")
        return 100


def test_a_partition_revoked_meanwhile_is_left_out_of_the_lag() -> None:
    member: Any = GroupMember.__new__(GroupMember)
    member.topic, member.consumer = "t", _Consumer()
    committed = SimpleNamespace(committed=40)
    member.machine = SimpleNamespace(
        owned={0: committed, 1: committed}, lag=lambda hw: Membership.lag(member.machine, hw)
    )
    assert member.lag() == {("t", 0): 60}
