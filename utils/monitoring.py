"""What the monitoring DAGs run: Kafka, ZooKeeper and PostgreSQL health, pipeline metrics,
thresholds, and retention. Plain functions, tested without Airflow.

Each check returns metrics (name, value, labels) plus the problems it found; the DAG records the
metrics (table `pipeline_metrics` and a JSON file per run under `<AIRFLOW_DATA_DIR>/metrics/`)
and raises `HealthCheckFailed` naming every problem, so the task goes red with the reason.

Thresholds and options are `settings.monitor` (MONITOR_* and ZOOKEEPER_* in .env.example).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import kafka.errors as kafka_errors
import psycopg2.extras

from reports.zookeeper import zk_command
from utils.config import MonitorSettings, Settings, load_settings
from utils.database import Database, purge_older_than
from utils.errors import TxmonError
from utils.kafka_cleanup import KafkaAdminError, admin_client, describe_topic, group_lag, list_topics

log = logging.getLogger(__name__)


class HealthCheckFailed(TxmonError):
    """A component is unhealthy or a metric crossed its limit; the message names each one."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Limits that turn the monitoring run red. Each names the variable that sets it."""

    max_lag: int = 10_000
    max_delay_p95_s: float = 300.0
    max_dlq_rate: float = 0.05
    max_disk_used_pct: float = 90.0

    @classmethod
    def from_settings(cls, m: MonitorSettings) -> Thresholds:
        return cls(m.max_lag, m.max_delay_p95_s, m.max_dlq_rate, m.max_disk_used_pct)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Thresholds:
        """From the settings object (environment over `.env`, or `environ` when given)."""
        return cls.from_settings(load_settings(environ).monitor)


@dataclass(frozen=True, slots=True)
class MonitorOptions:
    window_minutes: float = 15.0
    long_query_s: float = 300.0
    zookeeper_host: str = ""
    zookeeper_port: int = 2181
    kafka_timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, m: MonitorSettings) -> MonitorOptions:
        return cls(m.window_minutes, m.long_query_s, m.zookeeper_host.strip(), m.zookeeper_port)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MonitorOptions:
        """From the settings object (environment over `.env`, or `environ` when given)."""
        return cls.from_settings(load_settings(environ).monitor)


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "labels": dict(self.labels)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Metric:
        return cls(
            str(data["name"]), float(data["value"]), {str(k): str(v) for k, v in data["labels"].items()}
        )


@dataclass(slots=True)
class CheckResult:
    """What one check found. Plain dicts in `details` so Airflow can pass it on as an XCom."""

    component: str
    metrics: list[Metric] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "metrics": [m.to_dict() for m in self.metrics],
            "problems": list(self.problems),
            "details": self.details,
        }


def raise_for_problems(problems: Sequence[str]) -> None:
    if problems:
        raise HealthCheckFailed(f"{len(problems)} problem(s): " + "; ".join(problems))


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}" if labels else ""


def evaluate_thresholds(metrics: Iterable[Metric], thresholds: Thresholds) -> list[str]:
    """One message per metric above its limit, naming metric, labels, value, limit and variable.
    A metric that was not measured (no traffic in the window) crosses nothing."""
    limits = {
        "kafka_consumer_lag_total": (thresholds.max_lag, "MONITOR_MAX_LAG"),
        "e2e_delay_p95_seconds": (thresholds.max_delay_p95_s, "MONITOR_MAX_DELAY_P95_SECONDS"),
        "dlq_rate": (thresholds.max_dlq_rate, "MONITOR_MAX_DLQ_RATE"),
        "disk_used_pct": (thresholds.max_disk_used_pct, "MONITOR_MAX_DISK_USED_PCT"),
    }
    out = []
    for m in metrics:
        if m.name in limits:
            limit, variable = limits[m.name]
            if m.value > limit:
                out.append(
                    f"{m.name}{_labels(m.labels)} = {m.value:g} is above the limit {limit:g} ({variable})"
                )
    return out


# --------------------------------------------------------------------------- Kafka and ZooKeeper


_SRVR_LINE = re.compile(r"^([A-Za-z][A-Za-z /]*):\s*(.*)$")


def parse_srvr(text: str) -> dict[str, str]:
    """ZooKeeper's `srvr` answer as {field: value}, e.g. 'Mode': 'standalone', 'Node count': '42'."""
    out = {}
    for line in text.splitlines():
        m = _SRVR_LINE.match(line.strip())
        if m:
            out[m.group(1).strip()] = m.group(2).strip()
    return out


def zookeeper_metrics(srvr: Mapping[str, str], labels: Mapping[str, str]) -> list[Metric]:
    metrics = []
    latency = srvr.get("Latency min/avg/max", "")
    parts = latency.split("/")
    if len(parts) == 3:
        with contextlib.suppress(ValueError):
            metrics.append(Metric("zookeeper_latency_avg_ms", float(parts[1]), labels))
            metrics.append(Metric("zookeeper_latency_max_ms", float(parts[2]), labels))
    for key, name in (
        ("Connections", "zookeeper_connections"),
        ("Outstanding", "zookeeper_outstanding_requests"),
        ("Node count", "zookeeper_node_count"),
    ):
        with contextlib.suppress(KeyError, ValueError):
            metrics.append(Metric(name, float(srvr[key]), labels))
    return metrics


def check_zookeeper(host: str, port: int) -> CheckResult:
    result = CheckResult("zookeeper")
    where = f"{host}:{port}"
    labels = {"server": where}
    answer = zk_command(port, "ruok", host=host).strip()
    if answer != "imok":
        reason = f"answered {answer!r}" if answer else "does not answer"
        result.problems.append(
            f"zookeeper at {where} {reason} to ruok (is it running? is `ruok` whitelisted?)"
        )
        return result
    srvr = parse_srvr(zk_command(port, "srvr", host=host))
    result.details = {"address": where, "mode": srvr.get("Mode", "?"), "srvr": srvr}
    result.metrics = zookeeper_metrics(srvr, labels)
    return result


def check_kafka(settings: Settings, options: MonitorOptions | None = None) -> CheckResult:
    """Broker reachable; the topic and dead-letter topic exist, the topic with at least the
    configured partitions, each with a leader; consumer-group lag per partition; ZooKeeper's
    `ruok`/`srvr` when ZOOKEEPER_HOST is set.

    Lag for a partition the group never committed on counts every record still in the log:
    the pipeline's consumer starts from the earliest offset.
    """
    options = options or MonitorOptions.from_env()
    k = settings.kafka
    result = CheckResult("kafka")
    try:
        with contextlib.closing(
            admin_client(k.bootstrap_servers, timeout_s=options.kafka_timeout_s)
        ) as admin:
            _check_topics_and_lag(admin, settings, result)
    except KafkaAdminError as exc:
        result.problems.append(f"kafka: {exc}")
    except kafka_errors.KafkaError as exc:
        result.problems.append(f"kafka at {k.bootstrap_servers}: {type(exc).__name__}: {exc}")
    if options.zookeeper_host:
        zk = check_zookeeper(options.zookeeper_host, options.zookeeper_port)
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


# --------------------------------------------------------------------------- PostgreSQL


_TABLES = ("transactions", "alerts", "rejected_transactions", "daily_summary", "pipeline_metrics")


def check_postgres(db: Database, options: MonitorOptions | None = None) -> CheckResult:
    """Connection, database and table sizes, connection count, long-running queries, dead tuples
    and the last (auto)vacuum per table, from pg_stat_* views the app role may read.
    Raises DatabaseUnavailable when no connection can be made."""
    options = options or MonitorOptions.from_env()
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
            (name, options.long_query_s),
        )
        long_running = [
            {"pid": pid, "user": user, "state": state, "seconds": round(secs, 1), "query": query}
            for pid, user, state, secs, query in cur.fetchall()
        ]
        result.metrics.append(Metric("postgres_long_running_queries", float(len(long_running)), db_labels))
        cur.execute(
            """
            SELECT relname, pg_total_relation_size(relid), n_live_tup, n_dead_tup,
                   extract(epoch FROM now() - greatest(last_autovacuum, last_vacuum))::float8,
                   greatest(last_autovacuum, last_vacuum), greatest(last_autoanalyze, last_analyze)
            FROM pg_stat_user_tables
            WHERE schemaname = 'public' AND relname = ANY(%s)
            ORDER BY relname
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
        log.warning("postgres: %d queries running longer than %gs", len(long_running), options.long_query_s)
    return result


# --------------------------------------------------------------------------- pipeline metrics


def _existing_parent(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def collect_metrics(db: Database, settings: Settings, options: MonitorOptions | None = None) -> list[Metric]:
    """Throughput (stored rows per minute), end-to-end delay p50/p95 and DLQ rate over the last
    MONITOR_WINDOW_MINUTES by the consumer's clock, plus disk use where reports are written.

    Delay is `processed_at - timestamp` over *unlabelled* transactions only: the producer
    back-dates the legs of fraud scenarios (by up to a day), which says nothing about the
    pipeline. A replay of old events does show as a large delay, which is true.
    """
    options = options or MonitorOptions.from_env()
    window = {"window_minutes": f"{options.window_minutes:g}"}
    metrics: list[Metric] = []
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(
            """
            SELECT count(*),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM processed_at - "timestamp"))
                       FILTER (WHERE simulated_scenario IS NULL),
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM processed_at - "timestamp"))
                       FILTER (WHERE simulated_scenario IS NULL)
            FROM transactions WHERE processed_at >= now() - make_interval(secs => %(secs)s)
            """,
            {"secs": options.window_minutes * 60},
        )
        stored, p50, p95 = cur.fetchone()
        cur.execute(
            "SELECT count(*) FROM rejected_transactions WHERE rejected_at >= now() - make_interval(secs => %s)",
            (options.window_minutes * 60,),
        )
        rejected = cur.fetchone()[0]
    metrics.append(Metric("rows_stored", float(stored), window))
    metrics.append(Metric("rows_rejected", float(rejected), window))
    metrics.append(Metric("throughput_rows_per_minute", stored / options.window_minutes, window))
    if p50 is not None:
        metrics.append(Metric("e2e_delay_p50_seconds", float(p50), window))
        metrics.append(Metric("e2e_delay_p95_seconds", float(p95), window))
    if stored + rejected:
        metrics.append(Metric("dlq_rate", rejected / (stored + rejected), window))
    where = _existing_parent(Path(settings.data_dir))
    usage = shutil.disk_usage(where)
    metrics.append(Metric("disk_used_pct", 100.0 * usage.used / usage.total, {"path": str(where)}))
    return metrics


def _dedupe(metrics: Iterable[Metric]) -> list[Metric]:
    # One row per (metric, labels) in a statement: ON CONFLICT cannot touch a row twice.
    out: dict[tuple[str, str], Metric] = {}
    for m in metrics:
        out[(m.name, json.dumps(dict(m.labels), sort_keys=True))] = m
    return list(out.values())


def metrics_dir(data_dir: str | Path, day: date) -> Path:
    return Path(data_dir) / "metrics" / day.isoformat()


def record_metrics(
    db: Database, metrics: Iterable[Metric], *, data_dir: str | Path, measured_at: datetime | None = None
) -> Path:
    """Store one measurement into `pipeline_metrics` (a rerun with the same `measured_at`
    replaces it) and as `<data_dir>/metrics/<day>/<HHMMSS.ffffff>Z.json`; returns the file.
    Microseconds in the name: two runs within one second (a manual trigger next to the
    scheduled one) are two measurements, and neither file may overwrite the other."""
    measured_at = (measured_at or datetime.now(UTC)).astimezone(UTC)
    rows = _dedupe(metrics)
    with db.connection() as conn, conn.cursor() as cur:
        if rows:
            psycopg2.extras.execute_values(
                cur,
                "INSERT INTO pipeline_metrics (measured_at, metric, value, labels) VALUES %s "
                "ON CONFLICT (metric, measured_at, labels) DO UPDATE SET value = EXCLUDED.value",
                [(measured_at, m.name, m.value, psycopg2.extras.Json(dict(m.labels))) for m in rows],
            )
    out_dir = metrics_dir(data_dir, measured_at.date())
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{measured_at:%H%M%S.%f}Z.json"
    payload = {"measured_at": measured_at.isoformat(), "metrics": [m.to_dict() for m in rows]}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- retention

_DAY_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def expired_day_dirs(root: Path, cutoff: date) -> list[Path]:
    """`YYYY-MM-DD` directories under `root` for days before `cutoff`. Anything else is left
    alone: we only ever delete what our own writers named."""
    if not root.is_dir():
        return []
    out = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.is_symlink() and _DAY_DIR.match(child.name):
            try:
                day = date.fromisoformat(child.name)
            except ValueError:
                continue
            if day < cutoff:
                out.append(child)
    return out


def cleanup(db: Database, settings: Settings, *, today: date | None = None) -> dict[str, int]:
    """Retention for everything older than RETENTION_DAYS: transactions (with their alerts) and
    rejected messages via `purge_older_than`, old `pipeline_metrics` rows, and the report and
    metrics directories of expired days. The daily aggregates (daily_summary, rule_quality,
    reconciliation) are kept: they are small and are what remains of a purged day."""
    days = settings.retention_days
    counts = dict(purge_older_than(db, days))
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM pipeline_metrics WHERE measured_at < now() - make_interval(days => %s)", (days,)
        )
        counts["pipeline_metrics"] = cur.rowcount
    cutoff = (today or datetime.now(UTC).date()) - timedelta(days=days)
    for kind in ("reports", "metrics"):
        expired = expired_day_dirs(Path(settings.data_dir) / kind, cutoff)
        for path in expired:
            shutil.rmtree(path)
        counts[f"{kind}_dirs"] = len(expired)
    log.info("cleanup (retention %d days): %s", days, counts)
    return counts


def results_to_metrics(results: Iterable[Mapping[str, Any]]) -> tuple[list[Metric], list[str]]:
    """Metrics and problems from `CheckResult.to_dict()` payloads (what the DAG's tasks pass on)."""
    metrics: list[Metric] = []
    problems: list[str] = []
    for r in results:
        metrics.extend(Metric.from_dict(m) for m in r.get("metrics", []))
        problems.extend(r.get("problems", []))
    return metrics, problems


__all__ = [
    "CheckResult",
    "HealthCheckFailed",
    "Metric",
    "MonitorOptions",
    "Thresholds",
    "check_kafka",
    "check_postgres",
    "check_zookeeper",
    "cleanup",
    "collect_metrics",
    "evaluate_thresholds",
    "parse_srvr",
    "raise_for_problems",
    "record_metrics",
    "results_to_metrics",
]
