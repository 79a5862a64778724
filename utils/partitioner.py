"""Kafka's default key -> partition mapping (the Java client's, kafka-python's DefaultPartitioner):
murmur2(key) & 0x7fffffff modulo the partition count, with each key's hash remembered.

The producer places keys with it (producer/partitioner.py) and the consumer checks placements
with it (consumer/validation.py `wrong_partition`). murmur2 in pure Python costs ~3-5 µs a key;
accounts repeat, so the hash is computed once per key.
"""

from __future__ import annotations

from kafka.partitioner.default import murmur2

__all__ = ["MAX_REMEMBERED_KEYS", "key_hash"]

# A key costs ~100 bytes here; past this many distinct keys the memo starts over.
MAX_REMEMBERED_KEYS = 1_000_000


def key_hash(key: bytes, memo: dict[bytes, int]) -> int:
    """murmur2(key) & 0x7fffffff, from `memo` when this key was hashed before."""
    h = memo.get(key)
    if h is None:
        if len(memo) >= MAX_REMEMBERED_KEYS:
            memo.clear()
        h = memo[key] = murmur2(key) & 0x7FFFFFFF
    return h
