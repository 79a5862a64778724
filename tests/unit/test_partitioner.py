"""The producer's partitioner must place every key where Kafka's default (Java) partitioner does:
the consumer's per-account state depends on one account living in one partition."""

from __future__ import annotations

import random

import pytest
from kafka.partitioner.default import murmur2

from producer.partitioner import key_hash
from utils import partitioner


def test_known_java_client_placements() -> None:
    # Placements on 1,000 partitions computed by the Java client's partitioner (the values
    # kafka-python pins in its own murmur2 compatibility test): a cross-language contract.
    java = {b"": 681, b"a": 524, b"ab": 434, b"abc": 107, b"123456789": 566, b"\x00 ": 742}
    assert {key: key_hash(key, {}) % 1000 for key in java} == java


def test_same_hash_as_the_library_for_many_keys_first_time_and_remembered() -> None:
    rng = random.Random(5)
    keys = [f"ACC-{rng.randrange(10**9):09d}".encode() for _ in range(2000)] + [b"", b"\x00\xff"]
    memo: dict[bytes, int] = {}
    for _ in range(2):  # second round: every hash comes from the memo
        for key in keys:
            assert key_hash(key, memo) == murmur2(key) & 0x7FFFFFFF
    assert len(memo) == len(set(keys))


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partitioner, "MAX_REMEMBERED_KEYS", 10)
    memo: dict[bytes, int] = {}
    for i in range(35):
        assert key_hash(str(i).encode(), memo) == murmur2(str(i).encode()) & 0x7FFFFFFF
        assert len(memo) <= 10
