"""Pipeline metrics and their limits: what the monitoring DAG measures from the database, how it
records a measurement (table `pipeline_metrics` and a JSON file per run under
`<AIRFLOW_DATA_DIR>/metrics/`), and which values turn the run red.

Every check returns a `CheckResult` (metrics plus the problems it found); the DAG passes them on
as plain dicts, records every metric, and raises `HealthCheckFailed` naming each problem, so the
task goes red with the reason. The limits are `settings.monitor` (MONITOR_* in .env.example).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg2.extras

from reports.errors import HealthCheckFailed
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


def raise_for_problems(problems: Sequence[str]) -> None:
    if problems:
        raise HealthCheckFailed(f"{len(problems)} problem(s): " + "; ".join(problems))


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}" if labels else ""


def evaluate_thresholds(metrics: Iterable[Metric], limits: MonitorSettings) -> list[str]:
    """One message per metric above its limit, naming metric, labels, value, limit and variable.
    A metric that was not measured (no traffic in the window) crosses nothing."""
    by_metric = {
        "kafka_consumer_lag_total": (limits.max_lag, "MONITOR_MAX_LAG"),
        "e2e_delay_p95_seconds": (limits.max_delay_p95_s, "MONITOR_MAX_DELAY_P95_SECONDS"),
        "dlq_rate": (limits.max_dlq_rate, "MONITOR_MAX_DLQ_RATE"),
        "disk_used_pct": (limits.max_disk_used_pct, "MONITOR_MAX_DISK_USED_PCT"),
    }
    out = []
    for m in metrics:
        if m.name in by_metric:
            limit, variable = by_metric[m.name]
            if m.value > limit:
                out.append(
                    f"{m.name}{_labels(m.labels)} = {m.value:g} is above the limit {limit:g} ({variable})"
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

    Delay is `processed_at - timestamp` over *unlabelled* transactions only: the producer
    back-dates the legs of fraud scenarios (by up to a day), which says nothing about the
    pipeline. A replay of old events does show as a large delay, which is true.
    """
    window_minutes = settings.monitor.window_minutes
    window = {"window_minutes": f"{window_minutes:g}"}
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
