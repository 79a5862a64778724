"""kafka-python 3.0.12's join race, driven by hand on a real broker (consumer/group.py).

The race: the group leader re-joins because its cached topic metadata changed since it assigned
(kafka/coordinator/consumer.py `need_rejoin`, the `_assignment_snapshot != _metadata_snapshot`
branch, which does not set `rejoin_needed`). If the poll that started that join returns before
the join ends (its time ran out), the join task runs on by itself; it performs the assignment,
which makes `need_rejoin()` False again. The next poll then never waits for the task: its
SyncGroup answer is never applied, the membership state stays REBALANCING and heartbeats stay
off, while poll() fetches as if nothing happened, until the broker drops the member.

Two things in GroupMember answer it: a member takes the topic's metadata *after* subscribing, so
the leader's first assignment is made on the metadata it will see next (no follow-up re-join, the
trigger seen in every CI failure), and a poll that returns records while kafka-python says
REBALANCING is that orphaned join, which the member leaves and joins again at once."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from consumer.group import GroupMember
from tests.support import produce, wait_until
from utils.config import Settings
from utils.kafka_cleanup import admin_client


@pytest.fixture
def members() -> Iterator[list[GroupMember]]:
    made: list[GroupMember] = []
    yield made
    for m in made:
        m.consumer.close(autocommit=False)


def _joined(member: GroupMember, polls: int = 150) -> None:
    """Poll (with the member's own poll) until kafka-python reports a stable membership with
    partitions assigned; bounded by a number of polls, each at most CONSUMER_POLL_TIMEOUT_MS."""
    for _ in range(polls):
        member.poll()
        if member.consumer.assignment() and not member._rebalancing():
            return
    raise AssertionError(f"never joined: {member.describe()['generation']=}, {member.consumer.assignment()}")


def test_the_leaders_first_assignment_is_not_followed_by_a_rejoin(
    settings_factory: Callable[..., Settings], members: list[GroupMember]
) -> None:
    """Before: the leader assigned with an empty metadata snapshot (it had fetched the topic's
    metadata before subscribing), the metadata that arrived next differed, and it joined again
    at once: generation 2 right after generation 1, the join in which the race struck. The
    polls here are long, so that every join is waited for inside one poll (a join's answer
    landing as a poll gives up is kafka-python's other fault, test_a_leader_waits_...)."""
    s = settings_factory(partitions=2)
    member = GroupMember(s, threading.Event())
    members.append(member)
    assert member.consumer.poll(timeout_ms=5000) == {}  # the partitions are paused until set up
    assert {tp.partition for tp in member.consumer.assignment()} == {0, 1}
    member.consumer.topics()  # whatever metadata the leader asked for has arrived by now
    assert member.consumer.poll(timeout_ms=2000) == {}
    assert member.describe()["generation"] == 1, "the leader joined again right after its first assignment"
    assert not member._rebalancing()
    assert {tp.partition for tp in member.consumer.assignment()} == {0, 1}


def test_a_join_kafka_python_left_unfinished_is_left_and_joined_again(
    settings_factory: Callable[..., Settings], members: list[GroupMember], caplog: pytest.LogCaptureFixture
) -> None:
    """The race made deterministic: partitions added (the leader's metadata changes), a poll that
    gives up at once while the join it started is in flight, and the join reaches its SyncGroup
    before the next poll. kafka-python then fetches with its state REBALANCING for good; the
    member notices it from the records and joins again, getting the added partition."""
    s = settings_factory(partitions=2)
    produce(s, 400, seed=71)
    member = GroupMember(s, threading.Event())
    members.append(member)
    _joined(member)
    consumer = member.consumer
    consumer.resume(*consumer.assignment())  # the listener paused them for the machine's setup
    generation = member.describe()["generation"]
    with contextlib.closing(admin_client(s.kafka.bootstrap_servers)) as admin:
        admin.create_partitions({s.kafka.topic: 3})
    consumer.topics()  # the leader sees the new partition: it must re-join
    assert consumer.poll(timeout_ms=0) == {}  # starts the join and gives up at once
    wait_until(lambda: member.describe()["generation"] != generation, 30, what="the JoinGroup answer")
    # One more round trip through kafka-python's IO thread: the join task's step that took the
    # JoinGroup answer (it performs the assignment and sends SyncGroup) has ended by then.
    consumer.topics()
    assert member._rebalancing()

    caplog.set_level(logging.WARNING, logger="consumer")
    polled = 0
    for _ in range(100):
        polled += sum(len(recs) for recs in member.poll().values())
        if not member._rebalancing() and len(consumer.assignment()) == 3:
            break
    assert not member._rebalancing(), f"still REBALANCING, {polled} records polled meanwhile"
    assert {tp.partition for tp in consumer.assignment()} == {0, 1, 2}
    assert member.describe()["generation"] > generation + 1
    assert "returned records while its re-join of the group is unfinished" in caplog.text


def test_a_leader_waits_in_poll_for_a_join_the_other_members_hold_up(
    settings_factory: Callable[..., Settings], members: list[GroupMember]
) -> None:
    """The race's usual window: a join the broker holds until the other members re-join (each
    hears of it at its next heartbeat, seconds later). Before, the leader's poll() returned after
    CONSUMER_POLL_TIMEOUT_MS with the join in flight, its answer landed while the main loop worked
    elsewhere (the sleep here), and the join was left behind: REBALANCING for good, unnoticed by
    the records check since its partitions are paused until set up. Now poll() polls on while
    kafka-python is joining, so the answer lands while kafka-python waits for it."""
    s = settings_factory(partitions=2)
    leader = GroupMember(s, threading.Event())
    members.append(leader)
    _joined(leader)
    follower = GroupMember(s, threading.Event())
    members.append(follower)
    stop = threading.Event()

    def follow() -> None:  # the follower's own main loop, in its own thread (one client, one thread)
        while not stop.is_set():
            follower.consumer.poll(timeout_ms=200)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        for _ in range(150):
            leader.poll()
            if follower.consumer.assignment() and not leader._rebalancing() and not follower._rebalancing():
                break
        assert follower.consumer.assignment(), "the follower never got a partition"
        with contextlib.closing(admin_client(s.kafka.bootstrap_servers)) as admin:
            admin.create_partitions({s.kafka.topic: 3})
        leader.consumer.topics()  # the leader sees the new partition: it must re-join
        leader.poll()
        time.sleep(3.0)  # the main loop busy elsewhere (a batch written, partitions set up)
        for _ in range(50):
            leader.poll()
            if (
                not leader._rebalancing()
                and len(leader.consumer.assignment() | follower.consumer.assignment()) == 3
            ):
                break
        assert not leader._rebalancing(), "the leader's join was left behind"
        held = leader.consumer.assignment() | follower.consumer.assignment()
        assert {tp.partition for tp in held} == {0, 1, 2}
    finally:
        stop.set()
        thread.join(10)
