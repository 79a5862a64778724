"""Health checks of the pipeline's services for the monitoring DAG: Kafka (topics, partitions,
leaders, consumer-group lag, and ZooKeeper when ZOOKEEPER_HOST is set) and PostgreSQL (sizes,
connections, long-running queries, vacuum). Each returns a `CheckResult`."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import kafka.errors as kafka_errors

from reports.metrics import CheckResult, Metric
from reports.zookeeper import check_zookeeper
from utils.config import MonitorSettings, Settings
from utils.database import Database
from utils.kafka_cleanup import KafkaAdminError, admin_client, describe_topic, group_lag, list_topics

log = logging.getLogger(__name__)

KAFKA_TIMEOUT_S = 10.0


def zookeeper_address(monitor: MonitorSettings) -> tuple[str, int] | None:
    """(host, port) of the ZooKeeper to check, or None: it is only checked when configured."""
    host = monitor.zookeeper_host.strip()
    return (host, monitor.zookeeper_port) if host else None


def check_kafka(settings: Settings) -> CheckResult:
    """Broker reachable; the topic and dead-letter topic exist, the topic with at least the
    configured partitions, each with a leader; consumer-group lag per partition; ZooKeeper's
    `ruok`/`srvr` when ZOOKEEPER_HOST is set.

    Lag for a partition the group never committed on counts every record still in the log:
    the pipeline's consumer starts from the earliest offset.
    """
    k = settings.kafka
    result = CheckResult("kafka")
    try:
        with contextlib.closing(admin_client(k, timeout_s=KAFKA_TIMEOUT_S)) as admin:
            _check_topics_and_lag(admin, settings, result)
    except KafkaAdminError as exc:
        result.problems.append(f"kafka: {exc}")
    except kafka_errors.KafkaError as exc:
        result.problems.append(f"kafka at {k.bootstrap_servers}: {type(exc).__name__}: {exc}")
    zookeeper = zookeeper_address(settings.monitor)
    if zookeeper is not None:
        zk = check_zookeeper(*zookeeper)
        result.metrics.extend(zk.metrics)
        result.problems.extend(zk.problems)
        result.details["zookeeper"] = zk.details
    return result


def _check_topics_and_lag(admin: Any, settings: Settings, result: CheckResult) -> None:
    k = settings.kafka
    existing = set(list_topics(admin))
    result.details["topics"] = sorted(existing)
    for topic in (k.topic, k.dlq_topic):
        if topic not in existing:
            result.problems.append(
                f"kafka topic {topic!r} is missing (create it: python -m utils.kafka_cleanup create-topics)"
            )
    if k.topic not in existing:
        return
    infos = describe_topic(admin, k.topic)
    topic_labels = {"topic": k.topic}
    result.metrics.append(Metric("kafka_topic_partitions", float(len(infos)), topic_labels))
    result.metrics.append(
        Metric("kafka_topic_messages", float(sum(max(i.messages, 0) for i in infos)), topic_labels)
    )
    if len(infos) < k.topic_partitions:
        result.problems.append(
            f"kafka topic {k.topic!r} has {len(infos)} partitions, expected at least {k.topic_partitions} "
            "(KAFKA_TOPIC_PARTITIONS; `python -m utils.kafka_cleanup add-partitions`)"
        )
    leaderless = [i.partition for i in infos if i.leader < 0]
    if leaderless:
        result.problems.append(f"kafka topic {k.topic!r} partitions {leaderless} have no leader")

    committed = {r.partition: r for r in group_lag(admin, k.consumer_group) if r.topic == k.topic}
    partitions = []
    total = 0
    for info in infos:
        row = committed.get(info.partition)
        # Never committed: everything still in the log is waiting (auto_offset_reset=earliest).
        lag = row.lag if row is not None else max(info.latest - info.earliest, 0)
        total += lag
        labels = {"topic": k.topic, "group": k.consumer_group, "partition": str(info.partition)}
        result.metrics.append(Metric("kafka_consumer_lag", float(lag), labels))
        partitions.append(
            {
                "partition": info.partition,
                "leader": info.leader,
                "committed": None if row is None else row.committed,
                "end_offset": info.latest,
                "lag": lag,
            }
        )
    result.metrics.append(
        Metric("kafka_consumer_lag_total", float(total), {"topic": k.topic, "group": k.consumer_group})
    )
    result.details.update(group=k.consumer_group, partitions=partitions, total_lag=total)


_TABLES = ("transactions", "alerts", "rejected_transactions", "daily_summary", "pipeline_metrics")


def check_postgres(db: Database, monitor: MonitorSettings) -> CheckResult:
    """Connection, database and table sizes, connection count, long-running queries, dead tuples
    and the last (auto)vacuum per table, from pg_stat_* views the app role may read.
    Raises DatabaseUnavailable when no connection can be made."""
    result = CheckResult("postgres")
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT current_database(), pg_database_size(current_database()), version()")
        name, size, version = cur.fetchone()
        db_labels = {"database": name}
        result.metrics.append(Metric("postgres_database_bytes", float(size), db_labels))
        cur.execute(
            "SELECT count(*), count(*) FILTER (WHERE state = 'active') FROM pg_stat_activity WHERE datname = %s",
            (name,),
        )
        connections, active = cur.fetchone()
        result.metrics.append(Metric("postgres_connections", float(connections), db_labels))
        result.metrics.append(Metric("postgres_active_connections", float(active), db_labels))
        # "idle in transaction" counts too: an open transaction holds back vacuum like a slow query.
        cur.execute(
            """
            SELECT pid, usename, state, extract(epoch FROM now() - coalesce(xact_start, query_start))::float8,
                   left(query, 200)
            FROM pg_stat_activity
            WHERE datname = %s AND pid <> pg_backend_pid() AND state IS NOT NULL AND state <> 'idle'
              AND now() - coalesce(xact_start, query_start) > make_interval(secs => %s)
            ORDER BY 4 DESC
            """,
            (name, monitor.long_query_s),
        )
        long_running = [
            {"pid": pid, "user": user, "state": state, "seconds": round(secs, 1), "query": query}
            for pid, user, state, secs, query in cur.fetchall()
        ]
        result.metrics.append(Metric("postgres_long_running_queries", float(len(long_running)), db_labels))
        cur.execute(
            """
            SELECT t.relname, sum(pg_total_relation_size(s.relid))::bigint, sum(s.n_live_tup)::bigint,
                   sum(s.n_dead_tup)::bigint,
                   extract(epoch FROM now() - max(greatest(s.last_autovacuum, s.last_vacuum)))::float8,
                   max(greatest(s.last_autovacuum, s.last_vacuum)), max(greatest(s.last_autoanalyze, s.last_analyze))
            FROM unnest(%s::text[]) AS t(relname)
            -- A table partitioned by day (migration 090) holds nothing itself: its partitions
            -- (pg_partition_tree; a plain table is its own only member) add up to it.
            CROSS JOIN LATERAL pg_partition_tree(to_regclass('public.' || quote_ident(t.relname))) AS p
            JOIN pg_stat_user_tables s ON s.relid = p.relid
            GROUP BY t.relname
            ORDER BY t.relname
            """,
            (list(_TABLES),),
        )
        tables = []
        for rel, total_bytes, live, dead, since_vacuum, vacuumed, analyzed in cur.fetchall():
            labels = {"table": rel}
            result.metrics.append(Metric("postgres_table_bytes", float(total_bytes), labels))
            result.metrics.append(Metric("postgres_dead_tuples", float(dead), labels))
            if since_vacuum is not None:
                result.metrics.append(Metric("postgres_seconds_since_vacuum", since_vacuum, labels))
            tables.append(
                {
                    "table": rel,
                    "bytes": total_bytes,
                    "live_tuples": live,
                    "dead_tuples": dead,
                    "last_vacuum": None if vacuumed is None else vacuumed.isoformat(),
                    "last_analyze": None if analyzed is None else analyzed.isoformat(),
                }
            )
    result.details = {
        "database": name,
        "version": version,
        "size_bytes": size,
        "connections": connections,
        "long_running": long_running,
        "tables": tables,
    }
    if long_running:
        log.warning("postgres: %d queries running longer than %gs", len(long_running), monitor.long_query_s)
    return result
