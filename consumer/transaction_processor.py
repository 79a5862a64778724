"""The consumer's command line: `python consumer/transaction_processor.py [options]`. Flags
override the settings read once from the environment and `.env`; SIGTERM and SIGINT finish the
current batch, then exit. The consumer itself is consumer/processor.py."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

if __package__ in (None, ""):  # `python consumer/transaction_processor.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka.errors import KafkaError

from consumer.processor import TransactionProcessor
from consumer.summary import format_summary
from consumer.timings import TimingRecorder
from utils.config import Settings, load_settings
from utils.errors import TxmonError

log = logging.getLogger("consumer")


def tune_gc() -> None:
    """Every batch allocates tens of thousands of short-lived objects while the account state
    holds long-lived ones; with the default thresholds the collector re-scans that state
    constantly (~16% of the consumer's CPU measured). Freeze what start-up created and collect
    the young generation less often; memory stays bounded by the state's own limits."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(200_000, 100, 1000)


# How long a thread holding the GIL may run while another waits for it (Python's default: 5 ms).
# The writer thread waits for it after every round trip to PostgreSQL while the main thread
# validates and evaluates the next batch: at 5 ms a batch of ~10 round trips could spend most of
# its write waiting for the GIL, not for the database (docs/performance-investigations.md, where the
# latency goes).
SWITCH_INTERVAL_S = 0.0005


def tune_threads() -> None:
    """Hand the GIL over sooner to a thread whose I/O completed. A scheduling setting only:
    nothing the consumer decides depends on it."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    k, cs = settings.kafka, settings.consumer
    p = argparse.ArgumentParser(
        prog="python consumer/transaction_processor.py",
        description="Consume transactions, validate, apply alert rules, store in PostgreSQL.",
    )
    p.add_argument(
        "--bootstrap-servers",
        default=k.bootstrap_servers,
        help=f"Kafka brokers [env: KAFKA_BOOTSTRAP_SERVERS] (default {k.bootstrap_servers})",
    )
    p.add_argument("--topic", default=k.topic, help=f"[env: KAFKA_TOPIC] (default {k.topic})")
    p.add_argument("--dlq-topic", default=k.dlq_topic, help=f"[env: KAFKA_DLQ_TOPIC] (default {k.dlq_topic})")
    p.add_argument(
        "--group",
        default=k.consumer_group,
        help=f"consumer group [env: KAFKA_CONSUMER_GROUP] (default {k.consumer_group})",
    )
    p.add_argument(
        "--max-idle-seconds",
        type=float,
        default=cs.max_idle_seconds,
        help="exit after this many seconds without messages, 0 = run until stopped "
        f"[env: CONSUMER_MAX_IDLE_SECONDS] (default {cs.max_idle_seconds:g})",
    )
    p.add_argument("--summary-json", type=Path, default=None, help="also write the exit summary as JSON here")
    p.add_argument(
        "--timings-json",
        type=Path,
        default=None,
        help="record where each batch's time goes (poll, rules, the writer's round trips, COMMIT, GC "
        "pauses) and write it as JSON here at exit (consumer/timings.py; the benchmark's latency section)",
    )
    p.add_argument(
        "--max-poll-records",
        type=int,
        default=cs.max_poll_records,
        help=f"batch size [env: CONSUMER_MAX_POLL_RECORDS] (default {cs.max_poll_records})",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from utils.logs import configure_logging

    try:
        settings = load_settings()
    except TxmonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = build_parser(settings).parse_args(argv)
    settings = dataclasses.replace(
        settings,
        kafka=dataclasses.replace(
            settings.kafka,
            bootstrap_servers=args.bootstrap_servers,
            topic=args.topic,
            dlq_topic=args.dlq_topic,
            consumer_group=args.group,
        ),
        consumer=dataclasses.replace(
            settings.consumer,
            max_idle_seconds=args.max_idle_seconds,
            max_poll_records=args.max_poll_records,
        ),
    )
    configure_logging(settings.log_level, settings.log_format)
    tune_gc()
    tune_threads()
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received: finishing the current batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    timings = None
    if args.timings_json:
        timings = TimingRecorder()
        timings.watch_gc()
    processor = TransactionProcessor(settings, stop_event=stop, timings=timings)
    # `kill -USR1 <pid>`: log what the member owns and what kafka-python will fetch (docs/operations.md).
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: processor.describe_requested.set())
    log.info(
        "consuming %s as group %s from %s; storing in %s:%d/%s",
        settings.kafka.topic,
        settings.kafka.consumer_group,
        settings.kafka.bootstrap_servers,
        settings.postgres.host,
        settings.postgres.port,
        settings.postgres.db,
    )
    try:
        summary = processor.run()
    except KafkaError as exc:
        log.error(
            "Kafka error (%s): %s. Is the broker at %s up? (`make stack-up`)",
            type(exc).__name__,
            exc,
            settings.kafka.bootstrap_servers,
        )
        return 2
    except TxmonError as exc:
        log.error("%s", exc)
        return 1
    print(format_summary(summary), flush=True)
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary.as_dict(), indent=2))
    if timings is not None and args.timings_json:
        timings.unwatch_gc()
        timings.write(args.timings_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
