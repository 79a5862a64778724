"""The consumer's guard against a Kafka client that stops fetching a partition (GroupMember.stalled,
CONSUMER_STALL_RESTART_SECONDS): kafka-python 3.0.12 was seen to leave partitions unfetched for good
after the member was dropped from the group and given them back in one rebalance. The stall is
made here by pausing a partition inside the running consumer's own client, behind the group state
machine's back: the machine reads it, the client never fetches it."""

from __future__ import annotations

import time
from collections.abc import Callable

from kafka import TopicPartition

from tests.support import consume_in_thread, generated, produce, query, scalar, wait_until
from utils.config import Settings


def test_a_partition_the_client_stops_fetching_gets_the_consumer_a_new_client(
    settings_factory: Callable[..., Settings],
) -> None:
    s = settings_factory(max_poll_records=200, stall_restart_s=3.0)
    produce(s, 2_000, seed=51)
    processor, thread = consume_in_thread(s)
    try:
        wait_until(
            lambda: scalar(s.postgres, "SELECT count(*) FROM transactions") == 2_000, 120, what="2,000 rows"
        )
        member = processor.member
        assert member is not None and member.owned(), "the consumer reads no partition"
        stuck = member.owned()[0]
        in_stuck = "SELECT count(*) FROM transactions WHERE kafka_partition = %s"
        before = scalar(s.postgres, in_stuck, (stuck,))
        member.consumer.pause(TopicPartition(s.kafka.topic, stuck))
        paused_at = time.monotonic()
        produce(s, 3_000, seed=52)
        wait_until(
            lambda: scalar(s.postgres, "SELECT count(*) FROM transactions") == 5_000, 180, what="5,000 rows"
        )
        recovered_after = time.monotonic() - paused_at
        assert processor.summary.client_restarts >= 1
        assert processor.member is not member
    finally:
        processor.stop_event.set()
        thread.join(90)
    assert not thread.is_alive(), "the consumer did not stop"
    ids = [r[0] for r in query(s.postgres, "SELECT transaction_id FROM transactions")]
    expected = {t["transaction_id"] for seed, n in ((51, 2_000), (52, 3_000)) for t in generated(s, n, seed)}
    assert len(ids) == len(set(ids)) == 5_000 and set(ids) == expected
    after = scalar(s.postgres, in_stuck, (stuck,))
    print(
        f"partition {stuck} paused in the client at {before} rows, {after} at the end, {recovered_after:.1f}s later"
    )
    assert after > before, "the stalled partition's new messages were never read"
