"""The group-membership state machine (consumer/membership.py), event by event, without Kafka or
PostgreSQL. Each issue-18 sequence is written out as the events the shell would feed it; the
seeded simulation (tests/simulation.py, tests/unit/test_group_sim.py) explores the rest."""

from __future__ import annotations

import uuid

from consumer.membership import (
    VERIFY_IDLE_S,
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
from consumer.offsets import Stored

TID = uuid.UUID(int=1)


def owning(*partitions: int, at: int = 500) -> Membership:
    """A member that owns `partitions`, each stored (and positioned) at `at`."""
    m = Membership()
    assert m.assign(partitions) == [Pause(tuple(partitions))]
    assert m.setup_due(0.0) == [ReadStored(tuple(partitions))]
    actions = m.answered({p: Answer(Stored(at, TID), 0, 10_000) for p in partitions}, TID, 0.0)
    assert actions == [
        *(Seek(p, at) for p in partitions),
        Mirror(tuple((p, at) for p in partitions)),
        Resume(tuple(partitions)),
    ]
    return m


def test_a_batch_moves_the_stored_offset_from_where_the_last_one_left_it() -> None:
    m = owning(0, 1)
    m.polled([0, 1])
    accepted, actions = m.accept({0: (500, 599), 1: (500, 549)})
    assert accepted == {0: (500, 599), 1: (500, 549)} and actions == []
    first = m.prepared(accepted)
    assert first == {0: (500, 600), 1: (500, 550)}
    m.polled([0])
    second = m.prepared(m.accept({0: (600, 699)})[0])
    assert second == {0: (600, 700)}
    assert m.stored(first) == [Mirror(((0, 600), (1, 550)))]
    assert m.stored(second) == [Mirror(((0, 700),))]
    assert m.lag({0: 800, 1: 550}) == {0: 100, 1: 0}


def test_records_polled_before_a_rewind_are_read_again_not_skipped() -> None:
    """Issue 18, item 1: poll returns p1 600..699 while a rebalance revokes p0; the batch in
    flight (p1 500..599) fails and rewinds p1 to 500. The polled records must not be taken for a
    retention gap (the next batch would store 500 -> 700 and lose 500..599)."""
    m = owning(0, 1)
    m.polled([1])
    inflight = m.prepared(m.accept({1: (500, 599)})[0])
    assert inflight == {1: (500, 600)}
    m.polled([1])  # the next poll: p1 600..699, while p0 is revoked
    m.revoke([0])
    actions = m.rewind()  # the batch in flight failed
    assert ClearCache() in actions and Seek(1, 500) in actions
    assert m.drop() == [Forget((0,))]
    accepted, _ = m.accept({1: (600, 699)})
    assert accepted == {}, "records polled before the rewind were accepted past the rewind point"
    m.polled([1])  # read again from the rewind point
    assert m.prepared(m.accept({1: (500, 599)})[0]) == {1: (500, 600)}


def test_records_polled_before_an_outage_wait_are_read_again() -> None:
    """Any wait that keeps the membership (it seeks) between poll and accept has item 1's shape."""
    m = owning(1)
    m.polled([1])
    assert m.outage_began() == [Pause((1,))]
    assert m.outage_ended() == [Seek(1, 500), Resume((1,))]
    assert m.accept({1: (500, 599)})[0] == {}


def test_a_partition_revoked_while_its_offset_was_read_is_not_sought() -> None:
    """Issue 18, item 7: `_setup` sought a partition revoked while it waited on PostgreSQL."""
    m = Membership()
    m.assign([0, 1])
    assert m.setup_due(0.0) == [ReadStored((0, 1))]
    m.revoke([0])  # while the database was asked
    actions = m.answered({p: Answer(Stored(7, TID), 0, 100) for p in (0, 1)}, TID, 0.0)
    assert actions == [Seek(1, 7), Mirror(((1, 7),)), Resume((1,))]
    assert m.readable() == [1]


def test_a_partition_gained_during_an_outage_is_set_up_once_the_database_answers() -> None:
    m = owning(0)
    m.outage_began()
    assert m.assign([3]) == [Pause((3,))]  # gained while waiting
    assert m.outage_ended() == [Seek(0, 500), Resume((0,))]  # 3 stays paused: not set up yet
    assert m.setup_due(1.0) == [ReadStored((3,))]
    m.read_failed([3])  # the database went away again
    assert m.setup_due(2.0) == [ReadStored((3,))]  # never forgotten
    actions = m.answered({3: Answer(Stored(40, TID), 0, 100)}, TID, 2.0)
    assert actions == [Seek(3, 40), Mirror(((3, 40),)), Resume((3,))]
    assert m.lag({0: 510, 3: 100}) == {0: 10, 3: 60}


def test_a_group_without_stored_offsets_starts_at_the_log_start_not_at_kafkas_mirror() -> None:
    """Issue 18, item 4: deleting a group's consumer_offsets rows starts it afresh; Kafka's
    committed offsets (a mirror of the old rows) are past a recreated topic's log."""
    m = Membership()
    m.assign([0])
    m.setup_due(0.0)
    actions = m.answered({0: Answer(None, 5, 50)}, TID, 0.0)  # whatever Kafka committed
    assert actions == [CreateStored(((0, 5),), TID)]
    actions = m.answered({0: Answer(Stored(5, TID), 5, 50)}, TID, 0.0)
    assert actions == [Seek(0, 5), Mirror(((0, 5),)), Resume((0,))]  # the mirror follows the rows


def test_a_topic_recreated_under_a_live_member_is_noticed() -> None:
    """Issue 18, item 4: a member alive across a fast delete-and-recreate reads the new log at
    offsets it expects from the old one; the topic id tells them apart."""
    m = owning(0)
    m.polled([0])
    accepted, actions = m.accept({0: (500, 599)}, uuid.UUID(int=2))
    assert accepted == {}
    assert actions == [Pause((0,))]
    assert m.setup_due(0.0) == [ReadStored((0,))]  # and then plan_start refuses the new incarnation
    actions = m.answered({0: Answer(Stored(500, TID), 0, 600)}, uuid.UUID(int=2), 0.0)
    assert actions == [] and m.readable() == []


def test_a_fenced_partition_is_set_up_again_and_the_rest_rewound() -> None:
    m = owning(0, 1)
    m.polled([0, 1])
    m.prepared(m.accept({0: (500, 509), 1: (500, 509)})[0])
    actions = m.fenced([0])
    assert actions == [Pause((0,)), ClearCache(), Seek(1, 500)]
    assert m.setup_due(0.0) == [ReadStored((0,))]


def test_a_blocked_partition_is_looked_at_again_later() -> None:
    m = Membership()
    m.assign([0])
    m.setup_due(0.0)
    assert m.answered({0: Answer(Stored(900, TID), 0, 100)}, TID, 0.0) == []  # past the log end
    assert m.setup_due(30.0) == []
    assert m.setup_due(61.0) == [ReadStored((0,))]


def test_a_partition_revoked_and_gained_back_before_the_drop_is_set_up_afresh() -> None:
    m = owning(0)
    m.revoke([0])
    m.assign([0])
    assert m.accept({0: (500, 510)})[0] == {}  # not read until dropped and set up again
    assert m.drop() == [Forget((0,))]
    assert m.setup_due(0.0) == [ReadStored((0,))]


def test_a_topic_recreated_under_a_live_member_is_noticed_before_its_log_grows() -> None:
    """The new log may stay below the position for good: no record would ever tell."""
    m = owning(0, 1)
    assert m.topic_seen(TID) == []
    assert m.topic_seen(uuid.UUID(int=2)) == [Pause((0,)), Pause((1,))]
    assert m.setup_due(0.0) == [ReadStored((0, 1))]


# --- Kafka's committed offsets (the mirror lag tools read) -------------------------------------


def test_a_partition_taken_over_with_nothing_to_read_is_mirrored_at_once() -> None:
    """CI, stop 26: the previous owner's last Mirror was refused in the rebalance that moved the
    partition; the new owner had nothing to read, so no batch ever mirrored it and a lag tool
    reported stored messages as unread for good. Setting the partition up mirrors its offset."""
    m = owning(4, at=1_872)
    assert m.mirror_of == {4: 1_872}


def test_a_refused_mirror_is_written_again_with_the_latest_offset() -> None:
    m = owning(0, 1)
    m.polled([0, 1])
    moves = m.prepared(m.accept({0: (500, 599), 1: (500, 509)})[0])
    assert m.stored(moves) == [Mirror(((0, 600), (1, 510)))]
    assert m.mirror_due() == []  # nothing failed
    m.mirror_failed([0, 1])  # e.g. the coordinator moved
    m.polled([1])
    assert m.stored(m.prepared(m.accept({1: (510, 519)})[0])) == [Mirror(((1, 520),))]
    # 1's newer Mirror supersedes its failed one; 0 is written again, at what is stored now.
    assert m.mirror_due() == [Mirror(((0, 600),))]
    assert m.mirror_due() == [], "a mirror written again is not repeated without a new failure"


def test_a_refused_mirror_of_a_partition_since_dropped_is_not_written_again() -> None:
    m = owning(0, 1)
    m.mirror_failed([0, 1])
    m.revoke([1])
    assert m.drop() == [Forget((1,))]
    assert m.mirror_due() == [Mirror(((0, 500),))]
    m.mirror_failed([7])  # never ours: ignored
    assert m.mirror_due() == []


def test_an_idle_partition_taken_over_is_checked_until_a_batch_confirms_it() -> None:
    """The previous owner's last batch can commit after we read the stored offset at setup. With
    nothing new to read, no batch of ours is fenced, so the idle check reads it again: moved, the
    partition is set up again (and so mirrored where the rows are)."""
    m = owning(0, 1, at=500)
    assert m.verify_due(VERIFY_IDLE_S - 1) == ()  # not due yet
    assert m.verify_due(VERIFY_IDLE_S) == (0, 1)
    assert m.verify_due(VERIFY_IDLE_S) == (), "asked again before the next interval"
    # 0 unchanged: nothing happens, and it is checked again later. 1 moved to 530 under us.
    actions = m.verified({0: Stored(500, TID), 1: Stored(530, TID)})
    assert Pause((1,)) in actions and ClearCache() in actions and Seek(0, 500) in actions
    assert m.setup_due(VERIFY_IDLE_S) == [ReadStored((1,))]
    actions = m.answered({1: Answer(Stored(530, TID), 0, 530)}, TID, VERIFY_IDLE_S)
    assert Mirror(((1, 530),)) in actions
    assert m.verify_due(2 * VERIFY_IDLE_S) == (0, 1)


def test_a_batch_of_ours_confirms_the_stored_offset_so_the_idle_check_stops() -> None:
    m = owning(0)
    m.polled([0])
    moves = m.prepared(m.accept({0: (500, 509)})[0])
    assert m.verify_due(VERIFY_IDLE_S) == (0,)
    # A batch in flight: the check is not acted on (the caller waits for the batch first).
    assert m.verified({0: Stored(510, TID)}) == [], "our own batch's commit taken for a takeover"
    m.stored(moves)  # our conditional write found 500 where we knew it
    assert m.verify_due(10 * VERIFY_IDLE_S) == ()
    assert m.verified({0: Stored(999, TID)}) == [], "a confirmed partition is not set up again"
