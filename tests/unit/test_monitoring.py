"""The pure parts of the monitoring and retention code (reports/metrics.py, health.py, zookeeper.py,
retention.py): thresholds, configuration, ZooKeeper parsing, which directories expire."""

from __future__ import annotations

import os
import socket
from datetime import date
from pathlib import Path

import pytest

from reports.errors import HealthCheckFailed
from reports.health import zookeeper_address
from reports.metrics import (
    CheckResult,
    Metric,
    _dedupe,
    evaluate_thresholds,
    raise_for_problems,
    results_to_metrics,
)
from reports.retention import expired_day_dirs
from reports.zookeeper import check_zookeeper, parse_srvr, zookeeper_metrics
from utils.config import MonitorSettings, load_settings
from utils.errors import ConfigError, TxmonError

LIMITS = MonitorSettings(max_lag=100, max_delay_p95_s=30.0, max_dlq_rate=0.05, max_disk_used_pct=90.0)


def test_metrics_within_limits_cross_nothing() -> None:
    metrics = [
        Metric("kafka_consumer_lag_total", 100, {"topic": "t"}),  # at the limit is not above it
        Metric("e2e_delay_p95_seconds", 29.9),
        Metric("dlq_rate", 0.0),
        Metric("disk_used_pct", 42.0, {"path": "/data"}),
        Metric("postgres_database_bytes", 1e12),  # no limit on this one
    ]
    assert evaluate_thresholds(metrics, LIMITS) == []
    assert evaluate_thresholds([], LIMITS) == []  # nothing measured (no traffic): nothing crossed


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        (
            Metric("kafka_consumer_lag_total", 101, {"topic": "tx", "group": "g"}),
            "kafka_consumer_lag_total{group=g, topic=tx} = 101 is above the limit 100 (MONITOR_MAX_LAG)",
        ),
        (
            Metric("e2e_delay_p95_seconds", 31.5),
            "e2e_delay_p95_seconds = 31.5 is above the limit 30 (MONITOR_MAX_DELAY_P95_SECONDS)",
        ),
        (Metric("dlq_rate", 0.25), "dlq_rate = 0.25 is above the limit 0.05 (MONITOR_MAX_DLQ_RATE)"),
        (
            Metric("disk_used_pct", 97.0, {"path": "/data"}),
            "disk_used_pct{path=/data} = 97 is above the limit 90 (MONITOR_MAX_DISK_USED_PCT)",
        ),
    ],
)
def test_each_crossed_limit_is_named_with_value_limit_and_variable(metric: Metric, expected: str) -> None:
    assert evaluate_thresholds([metric], LIMITS) == [expected]


def test_health_check_failed_lists_every_problem() -> None:
    raise_for_problems([])  # nothing wrong: no exception
    with pytest.raises(HealthCheckFailed, match=r"2 problem\(s\): lag is high; disk is full") as info:
        raise_for_problems(["lag is high", "disk is full"])
    assert isinstance(info.value, TxmonError)


def test_limits_come_from_the_settings_object() -> None:
    assert load_settings({}).monitor == MonitorSettings()
    got = load_settings(
        {"MONITOR_MAX_LAG": "5", "MONITOR_MAX_DLQ_RATE": "0.5", "MONITOR_MAX_DISK_USED_PCT": ""}
    ).monitor
    assert got == MonitorSettings(max_lag=5, max_dlq_rate=0.5)
    assert evaluate_thresholds([Metric("kafka_consumer_lag_total", 6)], got) == [
        "kafka_consumer_lag_total = 6 is above the limit 5 (MONITOR_MAX_LAG)"
    ]
    with pytest.raises(ConfigError, match="MONITOR_MAX_LAG='lots'"):
        load_settings({"MONITOR_MAX_LAG": "lots"})
    with pytest.raises(ConfigError, match="negative"):
        load_settings({"MONITOR_MAX_DELAY_P95_SECONDS": "-1"})


def test_zookeeper_is_checked_only_when_configured() -> None:
    monitor = load_settings(
        {"ZOOKEEPER_HOST": " zk ", "ZOOKEEPER_PORT": "2182", "MONITOR_WINDOW_MINUTES": "5"}
    ).monitor
    assert zookeeper_address(monitor) == ("zk", 2182)
    assert monitor.window_minutes == 5.0
    assert zookeeper_address(load_settings({}).monitor) is None
    assert zookeeper_address(load_settings({"ZOOKEEPER_HOST": "  "}).monitor) is None
    with pytest.raises(ConfigError, match="MONITOR_WINDOW_MINUTES must be greater than 0"):
        load_settings({"MONITOR_WINDOW_MINUTES": "0"})


SRVR = """Zookeeper version: 3.8.4-9316c2a7a97e1666d8f4593f34dd6fc36ecc436c, built on 2024-02-12 22:16 UTC
Latency min/avg/max: 0/0.5432/17
Received: 1234
Sent: 1240
Connections: 3
Outstanding: 0
Zxid: 0x2c
Mode: standalone
Node count: 151
"""


def test_parse_srvr_and_its_metrics() -> None:
    fields = parse_srvr(SRVR)
    assert fields["Mode"] == "standalone" and fields["Node count"] == "151"
    assert fields["Zookeeper version"].startswith("3.8.4")
    got = {m.name: m.value for m in zookeeper_metrics(fields, {"server": "zk:2181"})}
    assert got == {
        "zookeeper_latency_avg_ms": 0.5432,
        "zookeeper_latency_max_ms": 17.0,
        "zookeeper_connections": 3.0,
        "zookeeper_outstanding_requests": 0.0,
        "zookeeper_node_count": 151.0,
    }
    assert zookeeper_metrics(parse_srvr("garbage"), {}) == []


def test_zookeeper_that_does_not_answer_is_a_problem() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = check_zookeeper("127.0.0.1", port)
    assert result.problems == [
        f"zookeeper at 127.0.0.1:{port} does not answer to ruok (is it running? is `ruok` whitelisted?)"
    ]
    assert result.metrics == []


def test_check_results_survive_the_trip_through_xcom() -> None:
    result = CheckResult("kafka", [Metric("kafka_consumer_lag", 3.0, {"partition": "0"})], ["a problem"])
    metrics, problems = results_to_metrics([result.to_dict(), CheckResult("pipeline").to_dict()])
    assert metrics == [Metric("kafka_consumer_lag", 3.0, {"partition": "0"})]
    assert problems == ["a problem"]


def test_duplicate_metrics_keep_the_last_value() -> None:
    rows = _dedupe([Metric("a", 1, {"x": "1"}), Metric("a", 2, {"x": "1"}), Metric("a", 3, {"x": "2"})])
    assert rows == [Metric("a", 2, {"x": "1"}), Metric("a", 3, {"x": "2"})]


def test_only_expired_day_directories_are_selected(tmp_path: Path) -> None:
    root = tmp_path / "reports"
    for name in ("2026-01-01", "2026-02-28", "2026-03-01", "2026-03-02", "notes", "2026-13-01"):
        (root / name).mkdir(parents=True)
    (root / "2025-12-31").write_text("a file with a day's name is not ours")
    os.symlink(root / "2026-01-01", root / "2025-01-01")  # a link is never followed into
    expired = expired_day_dirs(root, cutoff=date(2026, 3, 1))
    assert [p.name for p in expired] == ["2026-01-01", "2026-02-28"]
    assert expired_day_dirs(tmp_path / "missing", date(2026, 3, 1)) == []


def test_thresholds_can_live_in_dotenv_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("MONITOR_MAX_LAG=7\nMONITOR_MAX_DLQ_RATE=0.2\n")
    monkeypatch.setenv("TXMON_ENV_FILE", str(env_file))
    monkeypatch.delenv("MONITOR_MAX_LAG", raising=False)
    monkeypatch.setenv("MONITOR_MAX_DLQ_RATE", "0.3")
    got = load_settings().monitor
    assert (got.max_lag, got.max_dlq_rate) == (7, 0.3)
