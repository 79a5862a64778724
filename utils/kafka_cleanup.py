"""Kafka topics and consumer lag for the pipeline: a CLI, and plain functions Airflow reuses.

    python -m utils.kafka_cleanup create-topics                # KAFKA_TOPIC + KAFKA_DLQ_TOPIC, idempotent
    python -m utils.kafka_cleanup list
    python -m utils.kafka_cleanup describe transactions        # partitions, leaders, offsets
    python -m utils.kafka_cleanup lag [--group G]              # committed vs end offset, per partition
    python -m utils.kafka_cleanup add-partitions transactions 12
    python -m utils.kafka_cleanup purge transactions --yes     # delete every record, keep the topic
    python -m utils.kafka_cleanup delete t1 t2 --yes

Flags fall back to the settings (environment, then `.env`); `--help` names each variable.
Built on kafka-python 3's KafkaAdminClient (list_groups, list_group_offsets, list_partition_offsets,
create_topics with a dict, create_partitions, delete_records, delete_topics).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python utils/kafka_cleanup.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kafka.errors as kafka_errors
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import ConfigResource, OffsetSpec

from utils.config import KafkaSettings, Settings, load_settings
from utils.errors import TxmonError
from utils.kafka_auth import refused_credentials

log = logging.getLogger(__name__)

# A record's CreateTime is the client's to choose, and validation judges event time against it
# (consumer/validation.py): the broker refuses records stamped more than this after its own clock,
# so no client can date an event into next year. 1 hour is Kafka 4.0's default; 3.x's default is
# unbounded. The brokers the project runs set it for every topic (log.message.timestamp.after.max.ms
# in stack/apache_kafka.py and docker/kafka-entrypoint.sh); topics created here carry it too, so
# it holds on a broker someone else runs. The past is not bounded: old record times (a backfill,
# a mirror) cannot hide later events (docs/event-time.md).
TIMESTAMP_AFTER_MAX_MS = 3_600_000
TOPIC_CONFIGS = {"message.timestamp.after.max.ms": str(TIMESTAMP_AFTER_MAX_MS)}
# With three copies a write (acks=all, as the producer sends) is acknowledged once two hold it:
# one broker may crash or restart without losing an acknowledged record or stopping the producer.
REPLICATED_MIN_INSYNC = 2


def new_topic_configs(replication_factor: int) -> dict[str, str]:
    """The configs of a topic the project creates: the timestamp bound, and min.insync.replicas
    2 from replication factor 3 on (1 below: with two copies, 2 would stop writes while either
    broker restarts)."""
    min_insync = REPLICATED_MIN_INSYNC if replication_factor >= 3 else 1
    return {**TOPIC_CONFIGS, "min.insync.replicas": str(min_insync)}


_TOPIC_ALREADY_EXISTS = kafka_errors.TopicAlreadyExistsError.errno
_UNKNOWN_TOPIC = kafka_errors.UnknownTopicOrPartitionError.errno


class KafkaAdminError(TxmonError):
    """A topic or consumer-group operation failed; the message names the fix."""


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    topic: str
    partition: int
    leader: int  # -1: no leader (broker down)
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    earliest: int  # log start offset (moves up on purge / retention)
    latest: int  # high watermark: the offset the next record will get

    @property
    def messages(self) -> int:
        return self.latest - self.earliest


@dataclass(frozen=True, slots=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group has not committed on this partition yet
    end_offset: int
    # Records the group still has to read: end - committed, counted from the log start when the
    # commit is missing or below it (purged or expired records are gone; a consumer with
    # auto_offset_reset='earliest', as the pipeline's, resumes there).
    lag: int


# --------------------------------------------------------------------------------------------
# Functions (each takes an open KafkaAdminClient; the caller closes it)
# --------------------------------------------------------------------------------------------


def admin_client(
    bootstrap_servers: str | KafkaSettings,
    *,
    timeout_s: float = 10.0,
    security: Mapping[str, Any] | None = None,
) -> KafkaAdminClient:
    """A connected admin client, or KafkaAdminError naming the fix when no broker answers.

    Given KafkaSettings it connects with their brokers and credentials (`client_security()`);
    given a bootstrap string, with `security` (plaintext when None)."""
    if isinstance(bootstrap_servers, KafkaSettings):
        with refused_credentials(bootstrap_servers):
            return admin_client(
                bootstrap_servers.bootstrap_servers,
                timeout_s=timeout_s,
                security=bootstrap_servers.client_security(),
            )
    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            **(security or {}),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            request_timeout_ms=int(max(timeout_s, 5.0) * 1000),
            client_id="txmon-kafka-cleanup",
        )
    except kafka_errors.KafkaError as exc:
        raise KafkaAdminError(
            f"no Kafka broker answers at {bootstrap_servers} ({type(exc).__name__}): start one "
            "(make stack-up) or point KAFKA_BOOTSTRAP_SERVERS / --bootstrap-servers at it"
        ) from exc


def _kafka_settings(settings: Settings | KafkaSettings) -> KafkaSettings:
    return settings.kafka if isinstance(settings, Settings) else settings


def _partition_counts(admin: KafkaAdminClient, topics: Iterable[str]) -> dict[str, int]:
    """{topic: partition count} for the topics that exist."""
    out = {}
    for meta in admin.describe_topics(list(topics)):
        if meta.get("error_code", 0) == 0:
            out[meta["name"]] = len(meta.get("partitions") or [])
    return out


def ensure_topics(
    admin: KafkaAdminClient,
    settings: Settings | KafkaSettings,
    *,
    partitions: int | None = None,
    replication_factor: int | None = None,
    timeout_s: float = 30.0,
) -> dict[str, str]:
    """Create the pipeline's topic and dead-letter topic if missing; returns {topic: what happened}.

    An existing topic is left as it is (Kafka cannot shrink one; growing it moves keys between
    partitions, so that is `add-partitions`' explicit job); a smaller one is reported.
    """
    kafka = _kafka_settings(settings)
    partitions = kafka.topic_partitions if partitions is None else partitions
    replication_factor = kafka.replication_factor if replication_factor is None else replication_factor
    if partitions < 1 or replication_factor < 1:
        raise KafkaAdminError(
            f"partitions={partitions}, replication factor={replication_factor}: both must be >= 1"
        )
    topics = list(dict.fromkeys((kafka.topic, kafka.dlq_topic)))
    existing = set(admin.list_topics())
    outcome: dict[str, str] = {}
    missing = [t for t in topics if t not in existing]
    if missing:
        spec = {
            t: {
                "num_partitions": partitions,
                "replication_factor": replication_factor,
                "configs": new_topic_configs(replication_factor),
            }
            for t in missing
        }
        result = admin.create_topics(spec, timeout_ms=int(timeout_s * 1000), raise_errors=False)
        created = []
        for item in result["topics"]:
            code = item.get("error_code", 0)
            if code == 0:
                created.append(item["name"])
                outcome[item["name"]] = f"created ({partitions} partitions, replication {replication_factor})"
            elif code != _TOPIC_ALREADY_EXISTS:  # someone else created it meanwhile: fine
                error = kafka_errors.for_code(code).__name__
                raise KafkaAdminError(
                    f"creating topic {item['name']!r} failed: {error}: {item.get('error_message')}"
                    + (
                        " (fix: --replication-factor / KAFKA_REPLICATION_FACTOR at most the broker count)"
                        if code == kafka_errors.InvalidReplicationFactorError.errno
                        else ""
                    )
                )
        if created:
            # CreateTopics returns before every partition has a leader; producers want one.
            admin.wait_for_topics(created, timeout_ms=int(timeout_s * 1000))
    counts = _partition_counts(admin, [t for t in topics if t not in outcome])
    for topic, count in counts.items():
        note = (
            "" if count >= partitions else f"; fewer than {partitions}: `add-partitions {topic} N` scales it"
        )
        outcome[topic] = f"exists ({count} partitions{note})"
    return {t: outcome.get(t, "missing") for t in topics}


def topic_id(admin: KafkaAdminClient, topic: str) -> uuid.UUID | None:
    """Kafka's id of the topic (KIP-516): what tells a recreated topic from the one it replaced
    (consumer/positions.py). None where the broker reports none."""
    for meta in admin.describe_topics([topic]):
        found = meta.get("topic_id")
        if meta.get("error_code", 0) == 0 and found:
            value = found if isinstance(found, uuid.UUID) else uuid.UUID(str(found))
            return None if value.int == 0 else value
    return None


def topic_configs(admin: KafkaAdminClient, topic: str) -> dict[str, str]:
    """The topic's configuration values that differ from the broker's defaults."""
    result = admin.describe_configs([ConfigResource("TOPIC", topic)])
    entries = result.get("topic", {}).get(topic, {})
    return {
        name: str(entry.get("value") if isinstance(entry, dict) else entry) for name, entry in entries.items()
    }


def list_topics(admin: KafkaAdminClient, *, include_internal: bool = False) -> list[str]:
    names = [
        meta["name"]
        for meta in admin.describe_topics()
        if include_internal or not (meta.get("is_internal") or meta["name"].startswith("__"))
    ]
    return sorted(names)


def _offsets(
    admin: KafkaAdminClient, tps: Sequence[TopicPartition], spec: OffsetSpec
) -> dict[TopicPartition, int]:
    if not tps:
        return {}
    return {tp: found.offset for tp, found in admin.list_partition_offsets({tp: spec for tp in tps}).items()}


def _require_topic(admin: KafkaAdminClient, topic: str) -> dict[str, Any]:
    meta = admin.describe_topics([topic])[0]
    code = meta.get("error_code", 0)
    if code == _UNKNOWN_TOPIC:
        raise KafkaAdminError(
            f"topic {topic!r} does not exist: `list` shows the topics, `create-topics` makes ours"
        )
    if code:
        raise KafkaAdminError(f"topic {topic!r}: {kafka_errors.for_code(code).__name__}")
    return dict(meta)


def describe_topic(admin: KafkaAdminClient, topic: str) -> list[PartitionInfo]:
    """Per partition: leader, replicas, in-sync replicas, first and next offset."""
    meta = _require_topic(admin, topic)
    parts = sorted(meta.get("partitions") or [], key=lambda p: p["partition_index"])
    tps = [TopicPartition(topic, p["partition_index"]) for p in parts]
    led = [tp for tp, p in zip(tps, parts, strict=True) if p.get("leader_id", -1) >= 0]
    earliest = _offsets(admin, led, OffsetSpec.EARLIEST)
    latest = _offsets(admin, led, OffsetSpec.LATEST)
    return [
        PartitionInfo(
            topic=topic,
            partition=p["partition_index"],
            leader=p.get("leader_id", -1),
            replicas=tuple(p.get("replica_nodes") or ()),
            isr=tuple(p.get("isr_nodes") or ()),
            earliest=earliest.get(tp, -1),
            latest=latest.get(tp, -1),
        )
        for tp, p in zip(tps, parts, strict=True)
    ]


def delete_topics(admin: KafkaAdminClient, topics: Sequence[str], *, timeout_s: float = 30.0) -> list[str]:
    """Delete topics (with their data). Unknown names are an error, named, before anything is deleted."""
    existing = set(admin.list_topics())
    unknown = [t for t in topics if t not in existing]
    if unknown:
        raise KafkaAdminError(
            f"no such topic(s): {', '.join(unknown)} (nothing deleted; `list` shows the topics)"
        )
    result = admin.delete_topics(list(topics), timeout_ms=int(timeout_s * 1000), raise_errors=False)
    failed = [
        f"{item['name']}: {kafka_errors.for_code(item['error_code']).__name__}"
        for item in result["topics"]
        if item.get("error_code", 0)
    ]
    if failed:
        raise KafkaAdminError(
            "delete failed for "
            + "; ".join(failed)
            + " (TopicDeletionDisabled: set delete.topic.enable=true)"
        )
    return list(topics)


def purge_topic(admin: KafkaAdminClient, topic: str, *, timeout_s: float = 30.0) -> dict[int, int]:
    """Delete every record up to each partition's high watermark; the topic and its config stay.

    Returns {partition: new log start offset}. Consumer groups keep their committed offsets; a
    committed offset below the new start makes the consumer apply its auto_offset_reset.
    """
    infos = describe_topic(admin, topic)
    leaderless = [i.partition for i in infos if i.leader < 0]
    if leaderless:
        raise KafkaAdminError(f"topic {topic!r} partitions {leaderless} have no leader: is the broker up?")
    to_delete = {TopicPartition(topic, i.partition): i.latest for i in infos if i.latest > i.earliest}
    if to_delete:
        result = admin.delete_records(to_delete, timeout_ms=int(timeout_s * 1000))
        for tp, item in result.items():
            log.debug("purged %s[%d] up to %s", tp.topic, tp.partition, item.get("low_watermark"))
    return {i.partition: i.latest for i in infos}


def add_partitions(admin: KafkaAdminClient, topic: str, total: int, *, timeout_s: float = 30.0) -> int:
    """Grow `topic` to `total` partitions; returns the previous count.

    Keys hash to different partitions afterwards, so per-account ordering holds only for new
    messages: scale before a run, not in the middle of one.
    """
    current = len(_require_topic(admin, topic).get("partitions") or [])
    if total <= current:
        raise KafkaAdminError(
            f"topic {topic!r} has {current} partitions; Kafka can only add: ask for more than {current}"
        )
    result = admin.create_partitions({topic: total}, timeout_ms=int(timeout_s * 1000), raise_errors=False)
    for item in result.results:
        if item.error_code:
            raise KafkaAdminError(
                f"adding partitions to {topic!r}: {kafka_errors.for_code(item.error_code).__name__}: "
                f"{item.error_message}"
            )
    return current


def list_consumer_groups(admin: KafkaAdminClient) -> list[str]:
    return sorted(g["group_id"] for g in admin.list_groups() if g.get("protocol_type") in ("consumer", ""))


def _group_lag(admin: KafkaAdminClient, group: str) -> list[PartitionLag]:
    committed_map = admin.list_group_offsets({group: None}).get(group, {})
    committed = {
        tp: om.offset for tp, om in committed_map.items() if om.offset is not None and om.offset >= 0
    }
    topics = sorted({tp.topic for tp in committed_map})
    if not topics:
        return []
    # Every partition of the group's topics, so a partition nobody committed on yet shows too.
    tps: list[TopicPartition] = []
    for meta in admin.describe_topics(topics):
        if meta.get("error_code", 0):
            log.warning(
                "group %s has offsets for %s, which is gone (%s)", group, meta["name"], meta["error_code"]
            )
            continue
        tps.extend(
            TopicPartition(meta["name"], p["partition_index"])
            for p in meta.get("partitions") or []
            if p.get("leader_id", -1) >= 0
        )
    end = _offsets(admin, tps, OffsetSpec.LATEST)
    start = _offsets(admin, tps, OffsetSpec.EARLIEST)
    rows = []
    for tp in sorted(tps):
        done = committed.get(tp)
        # Records below the log start (purged, or past retention) can no longer be read.
        lag = end[tp] - max(done if done is not None else 0, start[tp])
        rows.append(PartitionLag(group, tp.topic, tp.partition, done, end[tp], max(lag, 0)))
    return rows


def group_lag(admin: KafkaAdminClient | str | KafkaSettings, group: str | None = None) -> list[PartitionLag]:
    """Lag per group and partition: end offset minus committed offset.

    `admin` may be an open client or a bootstrap string or KafkaSettings (then a client is opened and closed here,
    which is what an Airflow task wants). `group=None`: every consumer group on the cluster.
    """
    if isinstance(admin, str | KafkaSettings):
        with contextlib.closing(admin_client(admin)) as client:
            return group_lag(client, group)
    groups = [group] if group else list_consumer_groups(admin)
    rows: list[PartitionLag] = []
    for g in groups:
        rows.extend(_group_lag(admin, g))
    return rows


def total_lag(rows: Iterable[PartitionLag]) -> int:
    return sum(r.lag for r in rows)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [[str(c) for c in header], *([("-" if c is None else str(c)) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _build_parser(settings: Settings) -> argparse.ArgumentParser:
    k = settings.kafka
    parser = argparse.ArgumentParser(
        prog="python -m utils.kafka_cleanup",
        description="Kafka topics and consumer lag for the transaction pipeline.",
    )
    bootstrap_help = f"host:port[,host:port] [env: KAFKA_BOOTSTRAP_SERVERS; now {k.bootstrap_servers}]"
    timeout_help = "seconds to wait for the broker [15]"
    json_help = "machine-readable output"
    parser.add_argument("--bootstrap-servers", default=k.bootstrap_servers, help=bootstrap_help)
    parser.add_argument("--timeout", type=float, default=15.0, help=timeout_help)
    parser.add_argument("--json", action="store_true", help=json_help)
    # The same flags after the subcommand; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bootstrap-servers", default=argparse.SUPPRESS, help=bootstrap_help)
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS, help=timeout_help)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=json_help)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help)

    create = add("create-topics", f"create {k.topic} and {k.dlq_topic} if missing")
    create.add_argument(
        "--partitions",
        type=int,
        default=k.topic_partitions,
        help=f"[env: KAFKA_TOPIC_PARTITIONS; now {k.topic_partitions}]",
    )
    create.add_argument(
        "--replication-factor",
        type=int,
        default=k.replication_factor,
        help=f"[env: KAFKA_REPLICATION_FACTOR; now {k.replication_factor}]",
    )
    lst = add("list", "topic names")
    lst.add_argument("--all", action="store_true", help="include internal topics (__consumer_offsets)")
    desc = add("describe", "partitions, leaders, replicas and offsets of a topic")
    desc.add_argument("topic", nargs="?", default=k.topic, help=f"[env: KAFKA_TOPIC; now {k.topic}]")
    delete = add("delete", "delete topics and their data (needs --yes)")
    delete.add_argument("topics", nargs="+")
    delete.add_argument("--yes", action="store_true", help="really delete")
    purge = add("purge", "delete every record of a topic, keep the topic (needs --yes)")
    purge.add_argument("topic")
    purge.add_argument("--yes", action="store_true", help="really purge")
    scale = add("add-partitions", "grow a topic to N partitions")
    scale.add_argument("topic")
    scale.add_argument("total", type=int, help="the new total number of partitions")
    lag = add("lag", "per group and partition: committed offset, end offset, lag")
    lag.add_argument("--group", default=None, help="one consumer group [default: every group]")
    return parser


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text)


def _run(args: argparse.Namespace, admin: KafkaAdminClient) -> int:
    cmd = args.command
    if cmd == "create-topics":
        settings = load_settings()
        outcome = ensure_topics(
            admin, settings.kafka, partitions=args.partitions, replication_factor=args.replication_factor
        )
        _emit(args, outcome, "\n".join(f"{t}: {what}" for t, what in outcome.items()))
    elif cmd == "list":
        names = list_topics(admin, include_internal=args.all)
        _emit(args, names, "\n".join(names) if names else "(no topics)")
    elif cmd == "describe":
        infos = describe_topic(admin, args.topic)
        cells = [(i.partition, i.leader, i.replicas, i.isr, i.earliest, i.latest, i.messages) for i in infos]
        text = _table(("PARTITION", "LEADER", "REPLICAS", "ISR", "EARLIEST", "LATEST", "MESSAGES"), cells)
        text += f"\n{args.topic}: {len(infos)} partitions, {sum(i.messages for i in infos)} messages"
        _emit(args, [dataclasses.asdict(i) for i in infos], text)
    elif cmd in ("delete", "purge"):
        if not args.yes:
            what = " ".join(args.topics) if cmd == "delete" else args.topic
            print(f"refusing to {cmd} {what} without --yes (this loses data)", file=sys.stderr)
            return 2
        if cmd == "delete":
            deleted = delete_topics(admin, args.topics)
            _emit(args, deleted, "\n".join(f"deleted {t}" for t in deleted))
        else:
            starts = purge_topic(admin, args.topic)
            _emit(args, starts, f"purged {args.topic}: every partition now starts at its old end offset")
    elif cmd == "add-partitions":
        before = add_partitions(admin, args.topic, args.total)
        _emit(args, {"topic": args.topic, "before": before, "after": args.total},
              f"{args.topic}: {before} -> {args.total} partitions")  # fmt: skip
    elif cmd == "lag":
        rows = group_lag(admin, args.group)
        table_rows: list[Sequence[object]] = [
            (r.group, r.topic, r.partition, r.committed, r.end_offset, r.lag) for r in rows
        ]
        groups = sorted({r.group for r in rows})
        for g in groups:
            table_rows.append((g, "(total)", "", "", "", total_lag(r for r in rows if r.group == g)))
        text = (
            _table(("GROUP", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG"), table_rows)
            if rows
            else f"no committed offsets{' for group ' + args.group if args.group else ''}"
        )
        data = {"partitions": [dataclasses.asdict(r) for r in rows], "total": total_lag(rows)}
        _emit(args, data, text)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings()
    except TxmonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.log_level.upper() != "DEBUG":
        # Every refused connection is logged at ERROR; the one error that matters is ours, below.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    args = _build_parser(settings).parse_args(argv)
    try:
        kafka = dataclasses.replace(settings.kafka, bootstrap_servers=args.bootstrap_servers)
        with contextlib.closing(admin_client(kafka, timeout_s=args.timeout)) as admin:
            return _run(args, admin)
    except TxmonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except kafka_errors.KafkaError as exc:
        print(
            f"error: Kafka said {type(exc).__name__}: {exc}\n(is the broker at {args.bootstrap_servers} up? "
            "`make stack-status`)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
