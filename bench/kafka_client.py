"""What kafka-python's client costs per message, and what changes it (issue 23;
docs/performance-investigations.md, "The Kafka client's share").

    python -m bench.kafka_client settings [--count 100000] [--rounds 4] [--state-dir D --kafka-port ..]
    python -m bench.kafka_client parser [--count 60000] [--rounds 7]

`settings`: one topic produced uncompressed, copied (same records, same partitions) into topics
with lz4 batches and with 16 kB / 256 kB producer batches; then read to the end by a fresh
KafkaConsumer per variant, the variants alternating round by round. The figure is the process's
CPU per message (kafka-python's I/O thread included), with the collector as the consumer sets it.
The consumer's own fetch settings (consumer/group.py) are the base every variant changes one of.

`parser` (no Kafka): kafka-python's per-record unpacking (as `Fetcher._unpack_records` does it, over
`MemoryRecords`) against a tighter pure-Python parser with the same checks (batch CRC-32C, record
lengths) over the same 256 kB record batches of generated messages: what a faster parser would
buy. Measured only; kafka-python has no public call that hands over raw record batches, so the
pipeline cannot use such a parser without patching its internals.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from crc32c import crc32c
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.record import MemoryRecords, MemoryRecordsBuilder

from bench import harness
from bench.context import produce
from bench.harness import Workspace
from utils.config import Settings
from utils.logs import configure_logging

# As consumer/group.py builds its KafkaConsumer.
BASE: dict[str, Any] = {
    "max_poll_records": 5000,
    "max_partition_fetch_bytes": 4 * 1024 * 1024,
    "fetch_max_bytes": 32 * 1024 * 1024,
}
MB = 1024 * 1024

# name: (topic, consumer settings changed)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "base": ("none", {}),
    "max_partition_fetch_bytes=1M": ("none", {"max_partition_fetch_bytes": MB}),
    "max_partition_fetch_bytes=16M": (
        "none",
        {"max_partition_fetch_bytes": 16 * MB, "fetch_max_bytes": 64 * MB},
    ),
    "fetch_min_bytes=1M,wait=100": ("none", {"fetch_min_bytes": MB, "fetch_max_wait_ms": 100}),
    "incremental_fetch_sessions=off": ("none", {"enable_incremental_fetch_sessions": False}),
    "metrics_enabled=off": ("none", {"metrics_enabled": False}),
    "max_poll_records=500": ("none", {"max_poll_records": 500}),
    "max_poll_records=20000": ("none", {"max_poll_records": 20000}),
    "receive_buffer_bytes=4M": ("none", {"receive_buffer_bytes": 4 * MB}),
    "producer batch 16 kB": ("b16k", {}),
    "producer batch 256 kB (copy)": ("b256k", {}),
    "lz4": ("lz4", {}),
    "lz4, max_poll_records=500": ("lz4", {"max_poll_records": 500}),
}


def read_cpu(settings: Settings, topic: str, changed: dict[str, Any], n: int) -> tuple[float, int]:
    """CPU seconds of this process to poll `n` messages of `topic` from its start; (cpu, polls)."""
    kw = {**BASE, **changed}
    c = KafkaConsumer(
        **settings.kafka.client_kwargs(), group_id=None, enable_auto_commit=False, client_id="kclient", **kw
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        got = polls = 0
        cpu0 = time.process_time()
        deadline = time.monotonic() + 300
        while got < n and time.monotonic() < deadline:
            batch = c.poll(timeout_ms=500, max_records=kw["max_poll_records"])
            polls += bool(batch)
            got += sum(len(v) for v in batch.values())
        if got < n:
            raise RuntimeError(f"read {got} of {n} messages of {topic}")
        return time.process_time() - cpu0, polls
    finally:
        c.close()


def copy_topic(settings: Settings, src: str, dst: str, n: int, **producer: Any) -> None:
    """`src`'s first `n` records into `dst`, same partitions, keys, values and timestamps."""
    k = settings.kafka
    c = KafkaConsumer(**k.client_kwargs(), group_id=None, enable_auto_commit=False, max_poll_records=5000)
    p = KafkaProducer(**k.client_kwargs(), acks="all", linger_ms=10, **producer)
    try:
        tps = [TopicPartition(src, q) for q in sorted(c.partitions_for_topic(src) or ())]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        got = 0
        while got < n:
            for tp, recs in c.poll(timeout_ms=500).items():
                for r in recs:
                    p.send(dst, key=r.key, value=r.value, partition=tp.partition, timestamp_ms=r.timestamp)
                got += len(recs)
        p.flush()
    finally:
        p.close()
        c.close()


def settings_sweep(args: argparse.Namespace) -> int:
    services = harness.open_services(
        args.state_dir, {"zk_port": args.zk_port, "kafka_port": args.kafka_port, "pg_port": args.pg_port}
    )
    ws = Workspace(services, f"kclient{int(time.time()) % 100_000}")
    try:
        s = ws.settings("kclient")
        n = args.count
        produce(
            dataclasses.replace(s, producer=dataclasses.replace(s.producer, compression="none")), n, args.seed
        )
        topics = {"none": s.kafka.topic}
        for name, producer in (
            ("lz4", {"compression_type": "lz4", "batch_size": 256 * 1024}),
            ("b16k", {"batch_size": 16 * 1024}),
            ("b256k", {"batch_size": 256 * 1024}),
        ):
            topics[name] = ws.topic(f"kclient-{name}", s.kafka.topic_partitions)
            copy_topic(s, s.kafka.topic, topics[name], n, **producer)
        gc.collect()
        gc.freeze()
        gc.set_threshold(200_000, 100, 1000)  # as consumer/transaction_processor.py tune_gc()
        cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for r in range(args.rounds):
            for name, (topic, changed) in VARIANTS.items():
                seconds, polls = read_cpu(s, topics[topic], changed, n)
                cpu[name].append(seconds / n * 1e6)
                print(f"round {r} {name:<32} {cpu[name][-1]:6.2f} µs/msg ({polls} polls)", flush=True)
        base = statistics.median(cpu["base"])
        print(f"kafka-python client CPU per message, {n:,} messages, {args.rounds} rounds (median, range):")
        for name, xs in cpu.items():
            med = statistics.median(xs)
            print(f"  {name:<32} {med:6.2f} µs ({min(xs):.2f}-{max(xs):.2f})  {med / base:.3f}x base")
        return 0
    finally:
        ws.close()
        harness.close_services(services, keep=args.keep_stack)


# ------------------------------------------------------------------------------------ parser


def record_batches(count: int, seed: int) -> bytes:
    """`count` generated messages as v2 record batches of up to 256 kB, uncompressed, no headers."""
    from producer.generator import TransactionGenerator
    from producer.pool import AccountPool

    gen = TransactionGenerator(
        seed, AccountPool.create(1000, 0), 0.02, "simulated", datetime(2026, 12, 1, tzinfo=UTC)
    )
    msgs = [(m["account_id"].encode(), orjson.dumps(m)) for m in gen.next_batch(count)]
    out, i, ts = [], 0, 1_765_000_000_000
    while i < len(msgs):
        b = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=256 * 1024)
        while i < len(msgs) and b.append(ts + i, msgs[i][0], msgs[i][1], []) is not None:
            i += 1
        b.close()
        out.append(b.buffer())
    return b"".join(out)


def kafka_python_unpack(data: bytes) -> int:
    """What Fetcher._unpack_records does per batch and record (no deserializers, no headers)."""
    records, n = MemoryRecords(data), 0
    batch = records.next_batch()
    while batch is not None:
        if not batch.validate_crc():
            raise ValueError("batch CRC")
        for rec in batch:
            rec.validate_crc()
            key_size = len(rec.key) if rec.key is not None else -1
            value_size = len(rec.value) if rec.value is not None else -1
            headers = rec.headers
            header_size = sum(len(hk.encode()) + len(hv) for hk, hv in headers) if headers else -1
            ConsumerRecord(
                "t", 0, batch.leader_epoch, rec.offset, rec.timestamp, rec.timestamp_type,
                rec.key, rec.value, headers, rec.checksum, key_size, value_size, header_size,
            )  # fmt: skip
            n += 1
        batch = records.next_batch()
    return n


def tight_unpack(data: bytes) -> int:
    """The same records and checks (batch CRC-32C over attributes..end, each record's length), the
    zigzag varints decoded inline, one (offset, timestamp, key, value) tuple per record."""
    view, pos, end, n = memoryview(data), 0, len(data), 0
    out: list[tuple[int, int, bytes, bytes]] = []
    append, from_bytes = out.append, int.from_bytes
    while pos + 61 <= end:
        base_offset = from_bytes(data[pos : pos + 8], "big")
        batch_end = pos + 12 + from_bytes(data[pos + 8 : pos + 12], "big")
        if crc32c(view[pos + 21 : batch_end]) != from_bytes(data[pos + 17 : pos + 21], "big"):
            raise ValueError("batch CRC")
        first_ts = from_bytes(data[pos + 27 : pos + 35], "big", signed=True)
        p = pos + 61
        for _ in range(from_bytes(data[pos + 57 : pos + 61], "big")):
            fields = []
            for _f in range(6):  # length, attributes, timestamp delta, offset delta, key length, then value
                b = data[p]
                p += 1
                r, shift = b & 0x7F, 7
                while b & 0x80:
                    b = data[p]
                    p += 1
                    r |= (b & 0x7F) << shift
                    shift += 7
                v = (r >> 1) ^ -(r & 1)
                if _f == 4:
                    key, p = data[p : p + v], p + v
                elif _f == 5:
                    value, p = data[p : p + v], p + v
                fields.append(v)
            if data[p] != 0:
                raise ValueError("headers: not in this sketch")
            p += 1
            append((base_offset + fields[3], first_ts + fields[2], key, value))
            n += 1
        if p != batch_end:
            raise ValueError("batch length")
        pos = batch_end
    return n


def parser_estimate(args: argparse.Namespace) -> int:
    data = record_batches(args.count, args.seed)
    print(f"{args.count:,} messages, {len(data) / args.count:.0f} bytes each, in 256 kB batches")
    fns: dict[str, Callable[[bytes], int]] = {"kafka-python": kafka_python_unpack, "tight": tight_unpack}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            c0 = time.process_time()
            if fn(data) != args.count:
                raise RuntimeError(f"{name} read a wrong count")
            cpu[name].append((time.process_time() - c0) / args.count * 1e6)
    for name, xs in cpu.items():
        print(f"  {name:<13} best {min(xs):.2f}, median {statistics.median(xs):.2f} µs per message")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.kafka_client", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    sw = sub.add_parser("settings", help="client CPU per message under each consumer/producer setting")
    sw.add_argument("--count", type=int, default=100_000)
    sw.add_argument("--rounds", type=int, default=4)
    sw.add_argument("--state-dir", type=Path)
    sw.add_argument("--zk-port", type=int, default=harness.BENCH_PORTS["zk_port"])
    sw.add_argument("--kafka-port", type=int, default=harness.BENCH_PORTS["kafka_port"])
    sw.add_argument("--pg-port", type=int, default=harness.BENCH_PORTS["pg_port"])
    sw.add_argument("--keep-stack", action="store_true")
    pa = sub.add_parser("parser", help="kafka-python's record unpacking against a tighter parser (no Kafka)")
    pa.add_argument("--count", type=int, default=60_000)
    pa.add_argument("--rounds", type=int, default=7)
    for q in (sw, pa):
        q.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    configure_logging("WARNING", "text")
    return settings_sweep(args) if args.what == "settings" else parser_estimate(args)


if __name__ == "__main__":
    sys.exit(main())
