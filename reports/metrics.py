"""Pipeline metrics and their limits: what the monitoring DAG measures from the database, how it
records a measurement (table `pipeline_metrics` and a JSON file per run under
`<AIRFLOW_DATA_DIR>/metrics/`), and which values turn the run red.

Every check returns a `CheckResult` (metrics plus the problems it found); the DAG passes them on
as plain dicts, records every metric, and fails with one plain line per problem (in its log and
in the run's note), so the task goes red with the reason. The limits are `settings.monitor`
(MONITOR_* in .env.example); a value strictly above its limit crosses it, one equal to it does not.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg2.extras

from reports import units
from utils.config import MonitorSettings, Settings
from utils.database import Database


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


def results_to_metrics(results: Iterable[Mapping[str, Any]]) -> tuple[list[Metric], list[str]]:
    """Metrics and problems from `CheckResult.to_dict()` payloads (what the DAG's tasks pass on)."""
    metrics: list[Metric] = []
    problems: list[str] = []
    for r in results:
        metrics.extend(Metric.from_dict(m) for m in r.get("metrics", []))
        problems.extend(r.get("problems", []))
    return metrics, problems


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}" if labels else ""


@dataclass(frozen=True, slots=True)
class Limit:
    """A metric that turns the monitoring run red when it is strictly above its limit."""

    setting: str  # the environment variable that sets it
    limit: Callable[[MonitorSettings], float]
    show: Callable[[float], str]  # the value in human units


LIMITS: dict[str, Limit] = {
    "kafka_consumer_lag_total": Limit(
        "MONITOR_MAX_LAG", lambda m: m.max_lag, lambda v: units.count(v, "messages")
    ),
    "e2e_delay_p95_seconds": Limit(
        "MONITOR_MAX_DELAY_P95_SECONDS", lambda m: m.max_delay_p95_s, units.duration
    ),
    "dlq_rate": Limit("MONITOR_MAX_DLQ_RATE", lambda m: m.max_dlq_rate, units.percent),
    "disk_used_pct": Limit(
        "MONITOR_MAX_DISK_USED_PCT", lambda m: m.max_disk_used_pct, lambda v: units.percent(v, ratio=False)
    ),
}


def evaluate_thresholds(metrics: Iterable[Metric], limits: MonitorSettings) -> list[str]:
    """One plain line per metric strictly above its limit (a value equal to the limit passes):
    metric and labels, the value and the limit in human units, the setting that sets the limit.
    A metric that was not measured (no traffic in the window) crosses nothing."""
    out = []
    for m in metrics:
        rule = LIMITS.get(m.name)
        if rule is None:
            continue
        limit = rule.limit(limits)
        if m.value > limit:
            out.append(
                f"{m.name}{_labels(m.labels)} is {rule.show(m.value)}, above the limit of "
                f"{rule.show(limit)} ({rule.setting}={limit:g})"
            )
    return out


def _existing_parent(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def collect_metrics(db: Database, settings: Settings) -> list[Metric]:
    """Throughput (stored rows per minute), end-to-end delay p50/p95 and DLQ rate over the last
    MONITOR_WINDOW_MINUTES by the consumer's clock, plus disk use where reports are written.

    Delay is `processed_at` minus the Kafka record's timestamp (`kafka_timestamp_ms`, CreateTime:
    when the producer sent the message): the time the pipeline itself took, lag included. The
    event's own `timestamp` says nothing about the pipeline: the simulator's clock starts on
    2026-01-01, fraud scenarios are back-dated, a replay carries old dates. Rows stored before
    migration 020 have no record timestamp and are left out.
    """
    window_minutes = settings.monitor.window_minutes
    window = {"window_minutes": f"{window_minutes:g}"}
    metrics: list[Metric] = []
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(
            """
            WITH w AS (
                SELECT extract(epoch FROM processed_at) - kafka_timestamp_ms / 1000.0 AS delay
                FROM transactions WHERE processed_at >= now() - make_interval(secs => %(secs)s)
            )
            SELECT count(*),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY delay) FILTER (WHERE delay IS NOT NULL),
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY delay) FILTER (WHERE delay IS NOT NULL)
            FROM w
            """,
            {"secs": window_minutes * 60},
        )
        stored, p50, p95 = cur.fetchone()
        cur.execute(
            "SELECT count(*) FROM rejected_transactions WHERE rejected_at >= now() - make_interval(secs => %s)",
            (window_minutes * 60,),
        )
        rejected = cur.fetchone()[0]
    metrics.append(Metric("rows_stored", float(stored), window))
    metrics.append(Metric("rows_rejected", float(rejected), window))
    metrics.append(Metric("throughput_rows_per_minute", stored / window_minutes, window))
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
