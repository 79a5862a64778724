"""Kafka's default key -> partition mapping, with each key's hash computed once.

The consumer keeps each account's alert state per partition, so every producer must place a key
where the Java client would: murmur2(key) & 0x7fffffff modulo the partition count. kafka-python's
DefaultPartitioner does exactly that, in pure Python, for every message (~3 µs, about a sixth of
the producer's time measured with py-spy). Accounts repeat, so the hash is remembered per key
(utils/partitioner.py, shared with the consumer's placement check).
"""

from __future__ import annotations

from typing import Any

from kafka.partitioner.default import DefaultPartitioner

from utils.partitioner import key_hash

__all__ = ["CachedKeyPartitioner", "key_hash"]


class CachedKeyPartitioner(DefaultPartitioner):  # type: ignore[misc]  # untyped library base
    def __init__(self) -> None:
        super().__init__()
        self._hashes: dict[bytes, int] = {}

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: bytes | None,
        cluster: Any,
    ) -> int:
        partitions = cluster.partitions_for_topic(topic)
        if serialized_key is None or not partitions:
            # Unkeyed, or no metadata yet: the library's own behaviour and errors.
            return int(super().partition(topic, key, serialized_key, value, serialized_value, cluster))
        ordered = sorted(partitions)
        return ordered[key_hash(serialized_key, self._hashes) % len(ordered)]
