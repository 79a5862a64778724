"""consumer.positions: what a batch stores of each partition, given what was stored before it."""

from __future__ import annotations

import uuid

from consumer.positions import NIL, incarnation, new_from


def test_a_batch_stores_only_from_what_was_stored_before() -> None:
    spans = {0: (100, 199), 1: (50, 60), 2: (0, 9)}
    # Partition 0 is new from 150 (a rewind over 100..149), partition 1 entirely stored before
    # (a new group reading again), partition 2 never stored.
    assert new_from(spans, {0: 150, 1: 61, 2: 0}) == {0: 150, 2: 0}
    assert new_from(spans, {0: 100, 1: 50, 2: 0}) == {0: 100, 1: 50, 2: 0}  # the steady state
    assert new_from({0: (5, 5)}, {0: 5}) == {0: 5} and new_from({0: (5, 5)}, {0: 6}) == {}


def test_an_unknown_topic_id_is_the_nil_incarnation() -> None:
    tid = uuid.uuid4()
    assert incarnation(tid) == tid and incarnation(None) == NIL == uuid.UUID(int=0)
