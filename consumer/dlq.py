"""The dead-letter topic, published from `rejected_transactions` (an outbox).

A batch's database transaction stores its rejections with everything else; this background
thread of the consumer publishes them to the dead-letter topic afterwards, and records how far it
got per source partition in `dlq_progress` (so the audit table stays insert-only). Rejections of
one partition commit in offset order, so "published up to offset N" is all the state it needs.

The topic may lag or refuse (message too large, no permission, missing topic): the thread logs
the fix, backs off and tries again, while the pipeline keeps storing and advancing its offsets.
The topic is at-least-once (a crash between sending and recording progress sends again); the
table is exactly-once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaProducer
from kafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from consumer.positions import NIL
from utils.database import Database
from utils.models import Rejection

log = logging.getLogger("consumer.dlq")

# A dead-letter copy must fit the broker's default message limit (~1 MB) with its headers; a
# larger original is dead-lettered without its body (rejected_transactions keeps the bytes).
DLQ_MAX_PAYLOAD = 900_000
_PAGE = 500  # rejections read and sent per partition and round


def dlq_record(r: Rejection, full_length: int | None = None) -> dict[str, Any]:
    """The dead-letter copy of `r`; `full_length`: the original's size when `r.raw` holds only its
    first bytes (consumer/storage.py keeps at most REJECTED_PAYLOAD_MAX_BYTES)."""
    headers = [
        ("dlq.reason", r.reason.encode()),
        ("dlq.detail", r.detail[:1000].encode("utf-8", "replace")),
        ("dlq.source.topic", r.topic.encode()),
        ("dlq.source.partition", str(r.partition).encode()),
        ("dlq.source.offset", str(r.offset).encode()),
    ]
    value = r.raw
    if full_length is not None and full_length > len(value):
        headers.append(("dlq.payload_truncated_from", str(full_length).encode()))
    if len(value) > DLQ_MAX_PAYLOAD:
        headers.append(("dlq.payload_omitted", str(len(value)).encode()))
        value = b""
    key = r.key if r.key is None or len(r.key) <= 10_000 else r.key[:10_000]
    return {"value": value, "key": key, "headers": headers}


def fix_for(exc: BaseException, topic: str) -> str:
    """What an operator should do about a refusal, by error class."""
    if isinstance(exc, MessageSizeTooLargeError):
        return (
            f"raise the topic's max.message.bytes (kafka-configs.sh --alter --entity-type topics "
            f"--entity-name {topic} --add-config max.message.bytes=1048588)"
        )
    if isinstance(exc, TopicAuthorizationFailedError):
        return f"grant this client WRITE on topic {topic}"
    if isinstance(exc, UnknownTopicOrPartitionError | KafkaTimeoutError):
        return f"check that topic {topic} exists (`make topics` creates it) and the broker is reachable"
    return "see the error; the messages stay in rejected_transactions and are retried"


class DlqPublisher(threading.Thread):
    """Publishes the rejections of the partitions this consumer owns (`set_partitions`)."""

    def __init__(
        self,
        db: Database,
        make_producer: Callable[[], KafkaProducer],
        *,
        source_topic: str,
        dlq_topic: str,
        max_backoff_s: float = 60.0,
    ) -> None:
        """`make_producer()` makes the producer, in this thread, when there is something to send."""
        super().__init__(name="txmon-dlq", daemon=True)
        self.db, self._make_producer = db, make_producer
        self._producer: KafkaProducer | None = None
        self._full_length: dict[tuple[int, int], int] = {}  # (partition, offset) of truncated rows
        self.source_topic, self.dlq_topic = source_topic, dlq_topic
        self.max_backoff_s = max_backoff_s
        self.published = 0
        self._partitions: frozenset[int] = frozenset()
        self._incarnation = NIL  # the source topic's (consumer/positions.py)
        self._progress: dict[int, int] = {}  # partition -> highest offset published
        self._retry_at: dict[int, float] = {}
        self._backoff: dict[int, float] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._final_s = 10.0

    def set_partitions(self, partitions: Iterable[int], incarnation: uuid.UUID | None = None) -> None:
        """Publish the rejections of `partitions` of the source topic's `incarnation` (None: the
        one it has): a recreated topic's rejections are those of its new incarnation."""
        new = frozenset(partitions)
        if incarnation is not None and incarnation != self._incarnation:
            self._progress = {}  # the thread reads it again for the new incarnation
            self._incarnation = incarnation
        elif new == self._partitions:
            return
        for gained in new - self._partitions:  # another member may have published meanwhile
            self._progress.pop(gained, None)
        self._partitions = new  # one reference swap: the thread reads it whole
        self._wake.set()

    def wake(self, incarnation: uuid.UUID | None = None) -> None:
        if incarnation is not None and incarnation != self._incarnation:
            self.set_partitions(self._partitions, incarnation)
        self._wake.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            self.publish_pending()
        # One last round for what is pending, bounded: what is left is published by whoever
        # owns the partition next (or by this consumer's next run).
        deadline = time.monotonic() + self._final_s
        self._retry_at.clear()
        while not self.publish_pending() and time.monotonic() < deadline:
            time.sleep(0.2)

    def close(self, timeout_s: float = 10.0) -> None:
        self._final_s = timeout_s
        self._stopping.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout_s + 35.0)  # a flush in progress may take its full 30 s
        self._drop_producer(timeout_s)

    def _drop_producer(self, timeout_s: float) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=timeout_s)
            except KafkaError as exc:
                log.info("closing the dead-letter producer: %s", exc)
            self._producer = None

    def publish_pending(self) -> bool:
        """One round over the owned partitions; True when nothing is left to publish."""
        done = True
        now = time.monotonic()
        for partition in sorted(self._partitions):
            if self._retry_at.get(partition, 0.0) > now:
                done = False
                continue
            try:
                done = self._publish_partition(partition) and done
            except Exception as exc:  # the database or the broker: never let the thread die
                self._back_off(partition, exc, "dead-letter publishing failed")
                done = False
        return done

    def _publish_partition(self, partition: int) -> bool:
        incarnation = self._incarnation  # one for the round, whatever set_partitions does meanwhile
        rows = self._pending(partition, incarnation)
        if not rows:
            return True
        if self._producer is None:
            self._producer = self._make_producer()
        producer = self._producer
        sent = []
        first_error: BaseException | None = None
        for r in rows:
            try:
                full_length = self._full_length.pop((partition, r.offset), None)
                sent.append((r, producer.send(self.dlq_topic, **dlq_record(r, full_length))))
            except KafkaError as exc:  # refused before sending (no metadata, too large for the client)
                first_error = exc
                break
        with contextlib.suppress(KafkaError):  # it raises while it splits a refused batch
            producer.flush(timeout=30)
        deadline = time.monotonic() + 30
        last = None
        for r, future in sent:
            try:  # the broker's answer to each record, in order: the first refusal stops it
                future.get(timeout=max(0.1, deadline - time.monotonic()))
            except KafkaError as exc:
                first_error = exc
                break
            last = r.offset
        if last is not None:
            self._record(partition, last, incarnation)
            self.published += sum(1 for r, _ in sent if r.offset <= last)
        if first_error is not None:
            self._back_off(partition, first_error, f"dead-letter topic {self.dlq_topic} refused a message")
            return False
        self._backoff.pop(partition, None)
        return len(rows) < _PAGE

    def _pending(self, partition: int, topic_id: uuid.UUID) -> list[Rejection]:
        incarnation = str(topic_id)
        with self.db.connection() as conn, conn.cursor() as cur:
            if partition not in self._progress:
                cur.execute(
                    "SELECT published_offset FROM dlq_progress WHERE dlq_topic = %s AND kafka_topic = %s "
                    "AND kafka_topic_id = %s AND kafka_partition = %s",
                    (self.dlq_topic, self.source_topic, incarnation, partition),
                )
                row = cur.fetchone()
                self._progress[partition] = -1 if row is None else int(row[0])
            cur.execute(
                "SELECT kafka_offset, reason, detail, transaction_id, message_key, raw_payload, payload_bytes "
                "FROM rejected_transactions WHERE kafka_topic = %s AND kafka_topic_id = %s "
                "AND kafka_partition = %s AND kafka_offset > %s ORDER BY kafka_offset LIMIT %s",
                (self.source_topic, incarnation, partition, self._progress[partition], _PAGE),
            )
            rows = cur.fetchall()
            for offset, *_, raw, full in rows:
                if full is not None and full > len(raw):
                    self._full_length[(partition, int(offset))] = int(full)
            return [
                Rejection(
                    reason,
                    detail,
                    bytes(raw),
                    self.source_topic,
                    partition,
                    int(offset),
                    tid,
                    None if key is None else bytes(key),
                )
                for offset, reason, detail, tid, key, raw, _ in rows
            ]

    def _record(self, partition: int, offset: int, topic_id: uuid.UUID) -> None:
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO dlq_progress (dlq_topic, kafka_topic, kafka_topic_id, kafka_partition, published_offset) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (dlq_topic, kafka_topic, kafka_topic_id, kafka_partition) "
                "DO UPDATE SET published_offset = greatest(dlq_progress.published_offset, EXCLUDED.published_offset), "
                "updated_at = clock_timestamp()",
                (self.dlq_topic, self.source_topic, str(topic_id), partition, offset),
            )
        self._progress[partition] = offset

    def _back_off(self, partition: int, exc: BaseException, what: str) -> None:
        delay = min(self._backoff.get(partition, 0.5) * 2, self.max_backoff_s)
        self._backoff[partition] = delay
        self._retry_at[partition] = time.monotonic() + delay
        # Another member may have published meanwhile: read the progress again next time.
        self._progress.pop(partition, None)
        log.warning(
            "%s (%s/%d): %s: %s. Fix: %s. The pipeline is not held up; retrying in %.0fs",
            what,
            self.source_topic,
            partition,
            type(exc).__name__,
            exc,
            fix_for(exc, self.dlq_topic),
            delay,
        )


def main(argv: list[str] | None = None) -> int:
    """`python -m consumer.dlq replay REJECTED_ID [--payload-file FILE]`: see consumer/dlq_replay.py."""
    import argparse
    import contextlib
    import getpass
    import sys
    from pathlib import Path

    from consumer import dlq_replay
    from utils.config import load_settings
    from utils.database import connect
    from utils.errors import TxmonError
    from utils.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m consumer.dlq", description="the dead-letter queue")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser(
        "replay",
        help="re-publish a rejected message (corrected) to its topic with its original key and a header "
        "naming the rejected offset; refused when its transaction_id is already stored "
        "[env: KAFKA_BOOTSTRAP_SERVERS, POSTGRES_*]",
    )
    p.add_argument("rejected_id", type=int, help="rejected_transactions.rejected_id")
    p.add_argument(
        "--payload-file", help="the corrected payload ('-': standard input; default: the original)"
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    corrected = b""
    if args.payload_file == "-":
        corrected = sys.stdin.buffer.read()
    elif args.payload_file:
        corrected = Path(args.payload_file).read_bytes()
    try:
        with contextlib.closing(connect(settings.postgres)) as conn:
            print(dlq_replay.replay(conn, settings.kafka, args.rejected_id, corrected, by=getpass.getuser()))
    except dlq_replay.ReplayRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    except TxmonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
