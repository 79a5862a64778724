"""Send a bank's own history through the pipeline: `python producer/transaction_producer.py
--from FILE --mapping MAP`. The thin shell around producer/importer.py: read, map, report every
row that cannot be sent (with its line), send the rest in event-time order with record time =
event time, keyed by account, and summarise."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError

from producer.importer import Imported, RowProblem, load_mapping, map_rows, record_time_ms
from producer.transaction_producer import BrokerUnavailable, _Delivery, _flush, _make_kafka_producer
from utils.config import Settings
from utils.errors import ConfigError

__all__ = ["ReplaySummary", "run_replay"]

log = logging.getLogger("producer.replay")


@dataclass(slots=True)
class ReplaySummary:
    file: str
    topic: str
    rows: int = 0
    mapped: int = 0
    problems: list[RowProblem] = field(default_factory=list)
    sent: int = 0
    acked: int = 0
    failed: int = 0
    labelled: dict[str, int] = field(default_factory=dict)
    first_event: str | None = None
    last_event: str | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.acked == self.sent

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "topic": self.topic,
            "rows": self.rows,
            "mapped": self.mapped,
            "unmappable": len(self.problems),
            "problems_by_reason": dict(Counter(p.reason for p in self.problems)),
            "sent": self.sent,
            "acked": self.acked,
            "failed": self.failed,
            "labelled": self.labelled,
            "first_event": self.first_event,
            "last_event": self.last_event,
            "elapsed_s": round(self.elapsed_s, 1),
        }


def prepare(path: Path, mapping_path: Path, settings: Settings) -> Imported:
    """The file mapped and checked (no Kafka): ConfigError for an unreadable file or mapping."""
    try:
        mapping = load_mapping(json.loads(mapping_path.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"mapping {mapping_path}: {exc}") from None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return map_rows(text, mapping, name=path.name, limits=settings.validation, thresholds=settings.rules)


def run_replay(
    settings: Settings,
    path: Path,
    mapping_path: Path,
    *,
    progress_seconds: float = 5.0,
    dry_run: bool = False,
    bootstrap_timeout_s: float = 10.0,
) -> ReplaySummary:
    """Map `path` with `mapping_path` and send what maps (in event-time order, ties in file
    order) to the configured topic; every row that does not is logged with its line."""
    topic = settings.kafka.topic
    summary = ReplaySummary(file=str(path), topic=topic)
    started = time.monotonic()
    imported = prepare(path, mapping_path, settings)
    summary.rows, summary.mapped, summary.problems = imported.rows, len(imported.messages), imported.problems
    for p in imported.problems:
        log.warning(
            "line %d not sent: %s: %s", p.line, p.reason, p.detail, extra={"line": p.line, "reason": p.reason}
        )
    ordered = sorted(imported.messages, key=lambda lm: (lm[1]["timestamp"], lm[0]))
    if ordered:
        summary.first_event, summary.last_event = ordered[0][1]["timestamp"], ordered[-1][1]["timestamp"]
    summary.labelled = dict(Counter(m["simulated_scenario"] for _, m in ordered if m["simulated_scenario"]))
    if dry_run or not ordered:
        summary.elapsed_s = time.monotonic() - started
        return summary
    producer = _make_kafka_producer(settings.kafka, bootstrap_timeout_s, settings.producer.compression)
    delivery = _Delivery(topic)
    try:
        try:
            producer.partitions_for(topic)
        except KafkaTimeoutError as exc:
            raise BrokerUnavailable(
                f"no metadata for topic {topic!r} at {settings.kafka.bootstrap_servers}: create it with `make topics`"
            ) from exc
        next_progress = time.monotonic() + progress_seconds
        for _line, msg in ordered:
            key = msg["account_id"].encode()
            value = json.dumps(msg, separators=(",", ":")).encode()
            try:
                future = producer.send(topic, key=key, value=value, timestamp_ms=record_time_ms(msg))
            except KafkaError as exc:
                delivery.on_error(key, exc)
            else:
                future.add_callback(delivery.on_ack)
                future.add_errback(delivery.on_error, key)
            summary.sent += 1
            if time.monotonic() >= next_progress:
                log.info(
                    "replay progress: sent %d of %d, acked %d", summary.sent, len(ordered), delivery.acked
                )
                next_progress = time.monotonic() + progress_seconds
        if not _flush(producer, 30.0):
            log.error(
                "flush timed out: %d messages unconfirmed", summary.sent - delivery.acked - delivery.failed
            )
    finally:
        try:
            producer.close(timeout=5)
        except KafkaError as exc:
            log.warning("closing the Kafka producer failed: %r", exc)
    summary.acked, summary.failed = delivery.acked, delivery.failed
    summary.elapsed_s = time.monotonic() - started
    return summary
