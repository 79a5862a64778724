"""The pure parts of the monitoring and retention code (reports/metrics.py, health.py, zookeeper.py,
retention.py, units.py, runs.py): thresholds and their lines in human units, a red run's note,
configuration (retention against validation), ZooKeeper parsing, which directories expire."""

from __future__ import annotations

import os
import socket
from datetime import date
from pathlib import Path

import pytest

from reports.health import zookeeper_address
from reports.metrics import (
    CheckResult,
    Metric,
    _dedupe,
    evaluate_thresholds,
    results_to_metrics,
)
from reports.retention import expired_day_dirs
from reports.runs import clip, red_note, report_note
from reports.units import count, duration, percent
from reports.zookeeper import check_zookeeper, parse_srvr, zookeeper_metrics
from utils.config import MonitorSettings, load_settings
from utils.errors import ConfigError

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
            "kafka_consumer_lag_total{group=g, topic=tx} is 101 messages, above the limit of 100 messages "
            "(MONITOR_MAX_LAG=100)",
        ),
        (
            Metric("e2e_delay_p95_seconds", 2.86321e07, {"window_minutes": "15"}),
            "e2e_delay_p95_seconds{window_minutes=15} is 331 days 9 h, above the limit of 30 s "
            "(MONITOR_MAX_DELAY_P95_SECONDS=30)",
        ),
        (
            Metric("dlq_rate", 0.25),
            "dlq_rate is 25.0%, above the limit of 5.0% (MONITOR_MAX_DLQ_RATE=0.05)",
        ),
        (
            Metric("disk_used_pct", 97.0, {"path": "/data"}),
            "disk_used_pct{path=/data} is 97.0%, above the limit of 90.0% (MONITOR_MAX_DISK_USED_PCT=90)",
        ),
    ],
)
def test_each_crossed_limit_is_one_plain_line_in_human_units(metric: Metric, expected: str) -> None:
    assert evaluate_thresholds([metric], LIMITS) == [expected]


def test_a_value_equal_to_its_limit_passes_strictly_above_fails() -> None:
    at = [Metric("e2e_delay_p95_seconds", 30.0), Metric("dlq_rate", 0.05)]
    assert evaluate_thresholds(at, LIMITS) == []
    above = [Metric("e2e_delay_p95_seconds", 30.001), Metric("dlq_rate", 0.0501)]
    assert len(evaluate_thresholds(above, LIMITS)) == 2


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0421, "0.042 s"),
        (0, "0 s"),
        (2.5, "2.5 s"),
        (42.4, "42 s"),
        (362, "6 min 2 s"),
        (300, "5 min"),
        (3 * 3600 + 12 * 60 + 5, "3 h 12 min"),
        (2.86321e07, "331 days 9 h"),
        (86400, "1 day"),
        (-5, "-5.0 s"),
    ],
)
def test_durations_read_as_a_person_says_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_counts_and_percentages() -> None:
    assert count(340000, "alerts") == "340,000 alerts"
    assert count(0.5) == "0.5"
    assert percent(0.073) == "7.3%" and percent(93.14, ratio=False) == "93.1%" and percent(0) == "0.0%"


def test_a_red_run_note_lists_each_problem_on_its_own_line() -> None:
    lines = evaluate_thresholds(
        [Metric("e2e_delay_p95_seconds", 362.0), Metric("kafka_consumer_lag_total", 200)], LIMITS
    )
    note = red_note(lines)
    assert note.splitlines() == [
        "- e2e_delay_p95_seconds is 6 min 2 s, above the limit of 30 s (MONITOR_MAX_DELAY_P95_SECONDS=30)",
        "- kafka_consumer_lag_total is 200 messages, above the limit of 100 messages (MONITOR_MAX_LAG=100)",
    ]


def test_notes_fit_airflows_1000_characters_and_say_when_cut() -> None:
    note = red_note([f"problem number {i} with a long explanation of what went wrong" for i in range(40)])
    assert len(note) <= 1000 and note.endswith("- … (more in the task's log)")
    assert clip("short") == "short"


def test_a_report_note_names_the_day_and_links_its_report() -> None:
    note = report_note(date(2026, 11, 27), transactions=60000, alerts=1234, complete=True, day_over=True)
    assert note == (
        "**Report for 2026-11-27** (complete): 60,000 transactions, 1,234 alerts. "
        "[Open the report](/txmon/reports/2026-11-27/report.html)"
    )
    partial = report_note(date(2026, 11, 28), transactions=5, alerts=0, complete=False, day_over=False)
    assert "(day not over)" in partial


def test_limits_come_from_the_settings_object() -> None:
    assert load_settings({}).monitor == MonitorSettings()
    got = load_settings(
        {"MONITOR_MAX_LAG": "5", "MONITOR_MAX_DLQ_RATE": "0.5", "MONITOR_MAX_DISK_USED_PCT": ""}
    ).monitor
    assert got == MonitorSettings(max_lag=5, max_dlq_rate=0.5)
    assert evaluate_thresholds([Metric("kafka_consumer_lag_total", 6)], got) == [
        "kafka_consumer_lag_total is 6 messages, above the limit of 5 messages (MONITOR_MAX_LAG=5)"
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


def test_retention_must_keep_what_validation_accepts() -> None:
    assert load_settings({}).retention_days >= load_settings({}).validation.max_age_days
    ok = load_settings({"RETENTION_DAYS": "90", "VALIDATION_MAX_AGE_DAYS": "30"})
    assert (ok.retention_days, ok.validation.max_age_days) == (90, 30)
    with pytest.raises(ConfigError) as info:
        load_settings({"RETENTION_DAYS": "90"})  # validation still accepts 3650 days
    message = str(info.value)
    assert "RETENTION_DAYS=90 is shorter than VALIDATION_MAX_AGE_DAYS=3650" in message
    assert "Set RETENTION_DAYS to at least 3650, or VALIDATION_MAX_AGE_DAYS to at most 90" in message
    with pytest.raises(ConfigError, match="RETENTION_DAYS=0 must be at least 1"):
        load_settings({"RETENTION_DAYS": "0", "VALIDATION_MAX_AGE_DAYS": "0"})


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
