"""Latency floor: producer -> Kafka -> kafka-python poll, nothing after. What the consumer's
end-to-end latency cannot go below, measured the same way (receive time - `timestamp`, unlabelled
messages only).

    python bench/latency_floor.py --count N [--max-idle-seconds S] [--dump PATH]

Reads the topic in KAFKA_TOPIC from the beginning with the consumer's fetch settings, no group.
Prints `ready` once it is polling, and at the end one line `latency floor: {json}`.

Run alone after the consumer's run (the "separate" floor) it shares the box with nothing of the
pipeline; run beside the consumer on the same topic (bench/sections.py `latency_once`, the
"same-run" floor) the producer and broker are as busy as the consumer sees them. `--dump`
writes one line per unlabelled message, `partition offset record_ms stamp recv` (record_ms: the
Kafka record's timestamp; stamp/recv: Unix seconds), to join with the consumer's rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from kafka import KafkaConsumer, TopicPartition

from bench.stats import latency_summary
from utils.config import load_settings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/latency_floor.py", description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, required=True, help="stop after this many messages")
    p.add_argument(
        "--max-idle-seconds", type=float, default=10.0, help="stop after this long without messages"
    )
    p.add_argument(
        "--max-start-seconds",
        type=float,
        default=120.0,
        # The producer's start-up (a pool of 90,000 accounts) took over 10 s on a loaded box, and
        # the probe used to give up before the first message.
        help="wait this long for the first message",
    )
    p.add_argument("--dump", type=Path, help="write per-message timings here (see above)")
    args = p.parse_args(argv)
    settings = load_settings()
    k, cs = settings.kafka, settings.consumer
    consumer = KafkaConsumer(
        **k.client_kwargs(),
        group_id=None,
        enable_auto_commit=False,
        max_poll_records=cs.max_poll_records,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
        client_id="txmon-bench-latency-floor",
    )
    latencies: list[float] = []
    rows: list[tuple[int, int, int, float, float]] = []
    seen = 0
    try:
        tps = [TopicPartition(k.topic, part) for part in sorted(consumer.partitions_for_topic(k.topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        consumer.poll(timeout_ms=100)
        print("ready", flush=True)
        last = time.monotonic()
        while seen < args.count and time.monotonic() - last < (
            args.max_idle_seconds if seen else args.max_start_seconds
        ):
            records = consumer.poll(timeout_ms=cs.poll_timeout_ms, max_records=cs.max_poll_records)
            if not records:
                continue
            now = time.time()
            last = time.monotonic()
            for recs in records.values():
                for rec in recs:
                    msg = orjson.loads(rec.value)
                    if msg.get("simulated_scenario") is None:
                        stamp = datetime.fromisoformat(msg["timestamp"]).timestamp()
                        latencies.append(now - stamp)
                        if args.dump is not None:
                            rows.append((rec.partition, rec.offset, rec.timestamp, stamp, now))
                seen += len(recs)
    finally:
        consumer.close()
    if args.dump is not None:
        args.dump.write_text("".join(f"{p} {o} {t} {s:.6f} {r:.6f}\n" for p, o, t, s, r in rows))
    print(f"latency floor: {json.dumps({'messages': seen, **latency_summary(latencies)})}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
