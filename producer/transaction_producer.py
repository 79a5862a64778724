"""Send the generated transaction stream to Kafka: flags/env -> settings -> generator -> Kafka.

    python producer/transaction_producer.py --count 10000 --rate 500 --seed 42
    python -m producer --help

A message counts as delivered only when the broker acknowledged it (acks=all, idempotent
producer). Exit codes: 0 all sent messages acked (also after Ctrl-C / SIGTERM), 1 some failed or
stayed unconfirmed, 2 the broker or topic is unreachable, or the configuration is invalid.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repo root importable before any project import.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import dataclasses
import json
import logging
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from producer.frontier import continue_after_topic
from producer.generator import Clock, TransactionGenerator, clones_for_rate, encode
from producer.metrics import ProducerCounts, serve_producer_metrics
from producer.partitioner import CachedKeyPartitioner
from producer.pool import AccountPool
from utils.config import KafkaSettings, ProducerSettings, Settings, load_settings
from utils.errors import ConfigError, TxmonError
from utils.kafka_auth import refused_credentials
from utils.logs import configure_logging

log = logging.getLogger("producer")

# Unacked messages we let pile up in the client before waiting: kafka-python 3 has no
# buffer_memory bound, so without this a slow broker would grow the accumulator without limit.
MAX_IN_FLIGHT = 100_000
# How many failures are logged one by one; later ones are counted and summarised per progress line.
MAX_FAILURES_LOGGED = 20
# A rate-limited sender that fell behind (GC pause, slow broker) may catch up by at most this
# much; beyond it the schedule is shifted instead of bursting.
MAX_BURST_SECONDS = 1.0


class BrokerUnavailable(TxmonError):
    """Kafka could not be reached, or the topic's metadata could not be fetched."""


class CaughtUpWithPresent(TxmonError):
    """A simulated run with `pace=False` reached the present: the rest would go at real pace."""


@dataclasses.dataclass(slots=True)
class ProducerSummary:
    topic: str
    seed: int
    clock: str
    sent: int = 0
    acked: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    start: str | None = None  # simulated clock: where its event time began (replay with --start)
    clones: int = 1  # wall clock: copies of each account, so each keeps its own pace at this rate
    paced_s: float = 0.0  # simulated clock: time spent waiting for the present to catch up
    scenario_counts: dict[str, int] = dataclasses.field(default_factory=dict)  # sent messages per label
    first_error: str | None = None

    @property
    def unconfirmed(self) -> int:
        """Sent but neither acked nor failed when we gave up waiting (flush timed out)."""
        return self.sent - self.acked - self.failed

    @property
    def rate(self) -> float:
        """Acked messages per second over the whole run."""
        return self.acked / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.unconfirmed == 0


class _Delivery:
    """Counts acks and failures. Callbacks run on kafka-python's I/O thread, hence the lock."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.acked = 0
        self.failed = 0
        self.first_error: str | None = None
        self._unlogged = 0
        self._lock = threading.Lock()

    def on_ack(self, _metadata: Any) -> None:
        with self._lock:
            self.acked += 1

    def on_error(self, key: bytes, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            n = self.failed
            if self.first_error is None:
                self.first_error = repr(exc)
            if n > MAX_FAILURES_LOGGED:
                self._unlogged += 1
                return
        log.error(
            "delivery failed topic=%s key=%s: %r",
            self.topic,
            key.decode(errors="replace"),
            exc,
            extra={"topic": self.topic, "key": key.decode(errors="replace"), "error": repr(exc)},
        )

    def take_unlogged(self) -> int:
        with self._lock:
            n, self._unlogged = self._unlogged, 0
            return n


@dataclasses.dataclass(slots=True)
class _Live:
    """What /metrics reads while the producer runs, updated per chunk and per progress line."""

    sent: int = 0
    rate: float = 0.0  # acked per second over the last progress interval


class _RateLimiter:
    """Absolute schedule: message i is due at t0 + i/rate, so the long-run rate holds exactly.

    `allowed()` says how many messages may go now; sleeping happens in `wait()`, once per
    schedule slot, never once per message.
    """

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.t0 = now
        self.done = 0

    def allowed(self, now: float) -> int:
        if self.rate <= 0:
            return 1 << 30
        due = int((now - self.t0) * self.rate) - self.done
        burst = max(1, int(self.rate * MAX_BURST_SECONDS))
        if due > burst:
            # Forgive the debt beyond one burst: a stall must not become a flood afterwards.
            self.t0 += (due - burst) / self.rate
            due = burst
        return due

    def seconds_until_next(self, now: float) -> float:
        return max(0.0, self.t0 + (self.done + 1) / self.rate - now)


def _make_kafka_producer(kafka: KafkaSettings, bootstrap_timeout_s: float, compression: str) -> KafkaProducer:
    # kafka-python logs every refused bootstrap attempt at ERROR/WARNING; one clear message of
    # ours says it better. With LOG_LEVEL=DEBUG the library's own lines stay visible.
    kafka_log = logging.getLogger("kafka")
    saved = kafka_log.level
    if kafka_log.getEffectiveLevel() > logging.DEBUG:
        kafka_log.setLevel(logging.CRITICAL)
    try:
        with refused_credentials(kafka):
            return KafkaProducer(
                **kafka.client_kwargs(),
                client_id="txmon-producer",
                acks="all",  # with enable_idempotence (default): no loss, no duplicates on retry
                linger_ms=10,  # a few ms of batching lifts throughput; latency stays well under 50 ms
                batch_size=256 * 1024,
                # PRODUCER_COMPRESSION: each consumer's client then receives ~29 % of the bytes,
                # the I/O thread's share of its CPU per message (docs/performance-investigations.md).
                compression_type=None if compression == "none" else compression,
                max_block_ms=10_000,  # a missing topic fails in 10 s instead of hanging a minute
                partitioner=CachedKeyPartitioner(),  # the default mapping, ~15% faster per message
                bootstrap_timeout_ms=int(bootstrap_timeout_s * 1000),
            )
    except KafkaTimeoutError as exc:  # kafka-python 3: "Unable to bootstrap from ..."
        raise BrokerUnavailable(
            f"cannot reach Kafka at KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers!r} ({exc}). "
            "Start the local stack with `make stack-up`, or point KAFKA_BOOTSTRAP_SERVERS "
            "(or --bootstrap-servers) at a running broker."
        ) from exc
    finally:
        kafka_log.setLevel(saved)


def run_producer(
    settings: Settings,
    *,
    count: int | None = None,
    rate: float | None = None,
    seed: int | None = None,
    clock: Clock = "wall",
    start: datetime | None = None,
    progress_seconds: float = 5.0,
    flush_timeout_s: float = 30.0,
    bootstrap_timeout_s: float = 10.0,
    stop_event: threading.Event | None = None,
    pace: bool = True,
) -> ProducerSummary:
    """Generate and send; return when `count` messages are settled or `stop_event` is set.

    `count`, `rate` and `seed` default to `settings.producer`; a `None` seed there means a
    random one, which is logged and returned so the run can be replayed. Simulated clock: `start`
    None continues after the latest event already on the topic (at most PRODUCER_DAYS_BACK
    ago), so consecutive runs never rewrite an account's history, and no timestamp is ever
    ahead of the present: a run that catches up with it goes on at its real pace. Wall clock:
    the pool is scaled to the rate (clones) so that every account keeps its own pace. Raises
    BrokerUnavailable when the broker or the topic's metadata cannot be reached. `pace=False`
    (the benchmark): a simulated run that catches up with the present raises CaughtUpWithPresent
    instead of going on at real pace, after the messages already sent are settled.
    """
    ps = settings.producer
    count = ps.count if count is None else count
    rate = ps.rate if rate is None else rate
    seed = ps.seed if seed is None else seed
    if seed is None:
        seed = secrets.randbits(31)
    if count < 0 or rate < 0:
        raise ConfigError(f"count and rate must be >= 0, got count={count} rate={rate}")
    topic = settings.kafka.topic
    stop = stop_event or threading.Event()

    pool = AccountPool.create(ps.accounts, ps.account_seed)
    clones = 1
    if clock == "wall":
        natural = TransactionGenerator(seed, pool, ps.fraud_rate).natural_rate
        clones = clones_for_rate(rate, natural)
        log.info(
            "wall clock at %s: %d accounts make about %.2f transactions a second at their own pace; "
            "the pool is scaled %dx (clones named like %s.1) so that each keeps it",
            f"{rate:g}/s" if rate else "full speed", ps.accounts, natural, clones, pool.accounts[0].account_id,
        )  # fmt: skip
    elif start is None:
        start = continue_after_topic(settings.kafka, topic, days_back=ps.days_back)
    generator = TransactionGenerator(
        seed, pool, ps.fraud_rate, clock=clock, start=start or datetime.now(UTC), clones=clones
    )
    producer = _make_kafka_producer(settings.kafka, bootstrap_timeout_s, settings.producer.compression)
    delivery = _Delivery(topic)
    summary = ProducerSummary(
        topic=topic, seed=seed, clock=clock, clones=clones,
        start=start.isoformat() if clock == "simulated" and start else None,
    )  # fmt: skip
    scenarios: Counter[str] = Counter()
    live = _Live()
    caught_up: CaughtUpWithPresent | None = None
    try:
        metrics = serve_producer_metrics(
            lambda: ProducerCounts(live.sent, delivery.acked, delivery.failed, live.rate, rate),
            ps.metrics_port,
            settings.metrics_address,
        )
    except ConfigError:
        producer.close(timeout=5)
        raise
    try:
        try:
            partitions = producer.partitions_for(topic)  # fail fast and clearly on a missing topic
        except KafkaTimeoutError as exc:
            raise BrokerUnavailable(
                f"no metadata for topic {topic!r} at {settings.kafka.bootstrap_servers} within 10 s: "
                "create it with `make topics` (python -m utils.kafka_cleanup create-topics)"
            ) from exc
        log.info(
            "producing topic=%s partitions=%d seed=%d accounts=%d fraud_rate=%.3f clock=%s count=%s rate=%s",
            topic, len(partitions or ()), seed, ps.accounts, ps.fraud_rate, clock,
            count or "unbounded", rate or "max",
            extra={"topic": topic, "seed": seed, "clock": clock, "count": count, "rate": rate},
        )  # fmt: skip

        t_start = time.monotonic()
        limiter = _RateLimiter(rate, t_start)
        next_progress = t_start + progress_seconds
        last_report = (t_start, 0)
        send = producer.send
        sent = 0
        while not stop.is_set() and (count == 0 or sent < count):
            now = time.monotonic()
            if now >= next_progress:
                last_report = _progress(summary, delivery, live, t_start, last_report, now)
                next_progress = now + progress_seconds
            n = min(limiter.allowed(now), 500)  # small chunks keep wall-clock stamps fresh
            if count:
                n = min(n, count - sent)
            in_flight = sent - delivery.acked - delivery.failed
            if in_flight >= MAX_IN_FLIGHT:
                stop.wait(0.005)  # let the I/O thread drain; the limiter keeps the schedule
                continue
            if n <= 0:
                stop.wait(min(limiter.seconds_until_next(now), max(0.0, next_progress - now)))
                continue
            batch = generator.next_batch(n, not_after=datetime.now(UTC))
            if not batch:  # the simulated clock caught up with the present: go on at its pace
                if not pace:
                    caught_up = _caught_up(ps, sent, count, summary.start)
                    break
                summary.paced_s += 0.2
                stop.wait(0.2)
                continue
            n = len(batch)
            for txn in batch:
                key, value = encode(txn)
                try:
                    future = send(topic, key=key, value=value)
                except KafkaError as exc:  # e.g. metadata lost for longer than max_block_ms
                    delivery.on_error(key, exc)
                else:
                    future.add_callback(delivery.on_ack)
                    future.add_errback(delivery.on_error, key)
                sent += 1
                if txn["simulated_scenario"] is not None:
                    scenarios[txn["simulated_scenario"]] += 1
            limiter.done += n
            live.sent = sent
        summary.interrupted = stop.is_set()
        summary.sent = sent
        if not _flush(producer, flush_timeout_s):
            log.error(
                "flush timed out after %.0f s: %d messages unconfirmed",
                flush_timeout_s,
                sent - delivery.acked - delivery.failed,
            )
        summary.elapsed_s = time.monotonic() - t_start
    finally:
        try:
            producer.close(timeout=5)
        except KafkaError as exc:  # nothing left to lose here: the counts are already final
            log.warning("closing the Kafka producer failed: %r", exc)
        if metrics is not None:
            metrics.close()
    unlogged = delivery.take_unlogged()
    if unlogged:
        log.error("%d more delivery failures (not logged one by one)", unlogged)
    summary.acked, summary.failed = delivery.acked, delivery.failed
    summary.first_error = delivery.first_error
    summary.scenario_counts = dict(sorted(scenarios.items()))
    if caught_up is not None:
        raise caught_up
    return summary


def _caught_up(ps: ProducerSettings, sent: int, count: int, start: str | None) -> CaughtUpWithPresent:
    return CaughtUpWithPresent(
        f"the simulated clock (from {start}) reached the present after {sent:,} of {count or 'unbounded'} "
        f"messages: {ps.accounts:,} accounts over {ps.days_back:g} days cannot make more, and the rest "
        "would be sent at real pace. Give the pool more accounts (PRODUCER_ACCOUNTS; the benchmark "
        "sizes it with bench.context.accounts_for) or start further back (PRODUCER_DAYS_BACK, --start)"
    )


def _flush(producer: KafkaProducer, timeout_s: float) -> bool:
    """Wait until every sent record is acked or failed; False if `timeout_s` ran out first."""
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            producer.flush(timeout=remaining)
            return True
        except KafkaTimeoutError:
            return False
        except KafkaError as exc:
            # kafka-python 3.0.12 raises UnknownError('Future not done') when a batch is split
            # (MessageSizeTooLarge) or aborted during the flush; its records are still tracked
            # and will resolve, so wait again rather than report them lost.
            log.debug("flush interrupted by %r; waiting again", exc)
            time.sleep(0.05)
    return False


def _progress(
    summary: ProducerSummary,
    delivery: _Delivery,
    live: _Live,
    t_start: float,
    last: tuple[float, int],
    now: float,
) -> tuple[float, int]:
    unlogged = delivery.take_unlogged()
    if unlogged:
        log.error("%d more delivery failures since the last progress line (first: %s)",
                  unlogged, delivery.first_error)  # fmt: skip
    acked, failed, sent = delivery.acked, delivery.failed, live.sent
    current = (acked - last[1]) / (now - last[0]) if now > last[0] else 0.0
    live.rate = current
    total = acked / (now - t_start) if now > t_start else 0.0
    log.info(
        "progress topic=%s sent=%d acked=%d failed=%d in_flight=%d rate=%.0f/s total_rate=%.0f/s",
        summary.topic, sent, acked, failed, sent - acked - failed, current, total,
        extra={"topic": summary.topic, "sent": sent, "acked": acked, "failed": failed,
               "rate": round(current, 1), "total_rate": round(total, 1)},
    )  # fmt: skip
    return now, acked


def _log_summary(s: ProducerSummary) -> None:
    log.info(
        "summary topic=%s seed=%d sent=%d acked=%d failed=%d unconfirmed=%d elapsed=%.1fs "
        "rate=%.0f/s interrupted=%s scenarios=%s",
        s.topic, s.seed, s.sent, s.acked, s.failed, s.unconfirmed, s.elapsed_s, s.rate,
        s.interrupted, s.scenario_counts or "{}",
        extra={"summary": {**dataclasses.asdict(s), "unconfirmed": s.unconfirmed, "rate": round(s.rate, 1)}},
    )  # fmt: skip
    if s.failed:
        log.error("%d of %d messages failed (first error: %s)", s.failed, s.sent, s.first_error)


# -- command line ------------------------------------------------------------------------------


def _env_help(group: type, name: str, current: Any, text: str = "") -> str:
    f = next(f for f in dataclasses.fields(group) if f.name == name)
    text = text or f.metadata.get("help", "")
    return f"{text} [env: {f.metadata['env']}] (current: {current if current is not None else 'unset'})"


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    ps, ks = settings.producer, settings.kafka
    p = argparse.ArgumentParser(
        prog="python producer/transaction_producer.py",
        description="Send seeded synthetic transactions (with labelled fraud scenarios) to Kafka.",
    )
    p.add_argument("--count", type=int, default=ps.count, help=_env_help(ProducerSettings, "count", ps.count))
    p.add_argument("--rate", type=float, default=ps.rate, help=_env_help(ProducerSettings, "rate", ps.rate))
    p.add_argument("--seed", type=int, default=ps.seed, help=_env_help(ProducerSettings, "seed", ps.seed))
    p.add_argument(
        "--account-seed",
        type=int,
        default=ps.account_seed,
        help=_env_help(ProducerSettings, "account_seed", ps.account_seed, "seed of the account pool"),
    )
    p.add_argument(
        "--accounts",
        type=int,
        default=ps.accounts,
        help=_env_help(ProducerSettings, "accounts", ps.accounts, "accounts in the simulated pool"),
    )
    p.add_argument(
        "--fraud-rate",
        type=float,
        default=ps.fraud_rate,
        help=_env_help(ProducerSettings, "fraud_rate", ps.fraud_rate),
    )
    p.add_argument("--topic", default=ks.topic, help=_env_help(KafkaSettings, "topic", ks.topic))
    p.add_argument(
        "--bootstrap-servers",
        default=ks.bootstrap_servers,
        help=_env_help(KafkaSettings, "bootstrap_servers", ks.bootstrap_servers),
    )
    p.add_argument(
        "--clock",
        choices=("wall", "simulated"),
        default="wall",
        help="wall: timestamps are now (live, latency measurable), the pool scaled to --rate so that "
        "each account keeps its own pace; simulated: an event clock from --start, as fast as sent, "
        "byte-identical per seed and start, never ahead of now (default: wall)",
    )
    p.add_argument(
        "--start",
        type=_aware_datetime,
        default=None,
        help="simulated clock start, ISO-8601 with offset: with --seed, a byte-identical stream "
        "(default: right after the latest event on the topic, at most "
        f"{ps.days_back:g} days back [env: PRODUCER_DAYS_BACK])",
    )
    p.add_argument(
        "--progress-seconds", type=float, default=5.0, help="seconds between progress lines (default: 5)"
    )
    p.add_argument(
        "--from",
        dest="from_file",
        type=Path,
        default=None,
        metavar="FILE",
        help="send a bank's own history instead of simulated traffic: a CSV or JSON Lines file, "
        "mapped with --mapping (docs/rules-typologies.md, examples/)",
    )
    p.add_argument("--mapping", type=Path, default=None, help="with --from: the mapping file (JSON)")
    p.add_argument(
        "--dry-run", action="store_true", help="with --from: map and check every row, send nothing"
    )
    return p


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from producer.replay import run_replay  # only the import path needs it

    if args.mapping is None:
        log.error("--from needs --mapping MAP (a JSON file: see examples/bank-history.mapping.json)")
        return 2
    try:
        summary = run_replay(
            settings,
            args.from_file,
            args.mapping,
            progress_seconds=args.progress_seconds,
            dry_run=args.dry_run,
        )
    except (ConfigError, BrokerUnavailable) as exc:
        log.error("%s", exc)
        return 2
    log.info("replay summary: %s", json.dumps(summary.as_dict()), extra=summary.as_dict())
    print(
        f"{summary.file}: {summary.rows} rows, {summary.mapped} mapped, {len(summary.problems)} not sent "
        f"(each logged with its line), {summary.sent} sent, {summary.acked} acked, {summary.failed} failed; "
        f"labelled: {summary.labelled or 'none'}; events {summary.first_event} .. {summary.last_event}"
    )
    return 0 if summary.ok else 1


def _aware_datetime(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. 2026-01-01T00:00:00+00:00")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    args = build_parser(settings).parse_args(argv)
    configure_logging(settings.log_level, settings.log_format)
    if args.from_file is not None:
        settings = dataclasses.replace(
            settings,
            kafka=dataclasses.replace(
                settings.kafka, topic=args.topic, bootstrap_servers=args.bootstrap_servers
            ),
        )
        return _replay(settings, args)
    if args.accounts < 1 or not 0 <= args.fraud_rate <= 1 or args.count < 0 or args.rate < 0:
        log.error("need --accounts >= 1, 0 <= --fraud-rate <= 1, --count >= 0 and --rate >= 0")
        return 2
    settings = dataclasses.replace(
        settings,
        kafka=dataclasses.replace(settings.kafka, topic=args.topic, bootstrap_servers=args.bootstrap_servers),
        producer=dataclasses.replace(
            settings.producer,
            count=args.count,
            rate=args.rate,
            seed=args.seed,
            accounts=args.accounts,
            account_seed=args.account_seed,
            fraud_rate=args.fraud_rate,
        ),
    )

    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received: stopping, flushing what was sent", signal.Signals(signum).name)
        stop.set()
        # A second Ctrl-C during the flush should kill at once, as users expect.
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        summary = run_producer(
            settings,
            clock=args.clock,
            start=args.start,
            progress_seconds=args.progress_seconds,
            stop_event=stop,
        )
    except BrokerUnavailable as exc:
        log.error("%s", exc)
        return 2
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    _log_summary(summary)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
