"""Metrics and retention against a real PostgreSQL and Kafka: snapshots never overwrite each
other, the delay metric measures the pipeline for simulated and live traffic alike, and
`python -m reports.retention` says what it deletes, deletes what expired and nothing else."""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from producer.generator import DEFAULT_START
from producer.transaction_producer import run_producer
from reports import retention
from reports.metrics import Metric, collect_metrics, evaluate_thresholds, record_metrics
from tests.support import consume, produce, query, scalar
from utils import schema
from utils.config import PostgresSettings, Settings, ValidationLimits, settings_to_env
from utils.database import Database


@pytest.fixture
def db(fresh_db: PostgresSettings) -> Iterator[Database]:
    database = Database(fresh_db, maxconn=2)
    yield database
    database.close()


def test_metric_snapshots_one_file_per_measurement_even_within_a_second(db: Database, tmp_path: Path) -> None:
    first = datetime(2026, 11, 25, 0, 5, 2, 100, tzinfo=UTC)
    second = first + timedelta(microseconds=500)  # same second: a manual run next to a scheduled one
    for at, lag in ((first, 0.0), (second, 200.0), (first, 7.0)):  # the last one reruns `first`
        record_metrics(
            db, [Metric("kafka_consumer_lag_total", lag, {"group": "g"})], data_dir=tmp_path, measured_at=at
        )
    files = sorted((tmp_path / "metrics" / "2026-11-25").glob("*Z.json"))
    assert [f.name for f in files] == ["000502.000100Z.json", "000502.000600Z.json"]
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT value FROM pipeline_metrics ORDER BY measured_at")
        assert cur.fetchall() == [(7.0,), (200.0,)]


def test_the_retention_command_deletes_what_expired(
    db: Database,
    fresh_db: PostgresSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=40), now - timedelta(days=2)
    for at in (old, recent):
        record_metrics(db, [Metric("rows_stored", 1.0)], data_dir=tmp_path, measured_at=at)
    (tmp_path / "reports" / old.date().isoformat()).mkdir(parents=True)
    (tmp_path / "reports" / "notes").mkdir()  # not a day: never ours to delete

    settings = dataclasses.replace(
        Settings(validation=ValidationLimits(max_age_days=30)),
        postgres=fresh_db,
        data_dir=str(tmp_path),
        retention_days=90,
    )
    for key, value in settings_to_env(settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TXMON_ENV_FILE", os.devnull)
    assert retention.main(["--days", "20"]) == 2  # shorter than VALIDATION_MAX_AGE_DAYS: refused
    assert "Set RETENTION_DAYS to at least 30" in capsys.readouterr().err
    # What may be deleted is the owner's policy, which the retention role cannot change: a
    # cleanup asking for another period stops, naming the fix, before deleting anything.
    assert retention.main(["--days", "30"]) == 2
    assert "the database keeps 3650 days" in capsys.readouterr().err
    schema.set_retention_days(fresh_db, 30)
    assert retention.main(["--days", "30"]) == 0  # the flag wins over RETENTION_DAYS

    out = capsys.readouterr().out.split()
    assert out == [
        "transactions=0",
        "rejected_transactions=0",
        "pipeline_metrics=1",
        "reports_dirs=1",
        "metrics_dirs=1",
    ]
    assert query(fresh_db, "SELECT measured_at FROM pipeline_metrics") == [(recent,)]
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["notes"]
    assert [p.name for p in (tmp_path / "metrics").iterdir()] == [recent.date().isoformat()]


def _delays(pg: PostgresSettings) -> list[float]:
    """processed_at - the Kafka record's timestamp, per stored transaction, in seconds."""
    return [
        float(d)
        for (d,) in query(
            pg, "SELECT extract(epoch FROM processed_at) - kafka_timestamp_ms / 1000.0 FROM transactions"
        )
    ]


def test_the_delay_of_simulated_traffic_is_the_pipelines_not_the_event_dates(
    pipeline_settings: Settings, tmp_path: Path
) -> None:
    """Simulated events are dated 2026-01-01 (hundreds of days ago): the delay must still be the
    seconds the pipeline took, here the 2 s the consumer was late plus its own work."""
    s = dataclasses.replace(pipeline_settings, data_dir=str(tmp_path))
    sent_from = time.time()
    produce(s, 500, seed=7, start=DEFAULT_START)
    sent_until = time.time()
    time.sleep(2.0)  # the consumer starts late: that wait is pipeline delay, and must show
    assert consume(s).stored == 500

    stamps = [ms for (ms,) in query(s.postgres, "SELECT kafka_timestamp_ms FROM transactions")]
    assert all(sent_from * 1000 - 1000 <= ms <= sent_until * 1000 + 1000 for ms in stamps)  # the send time
    event_age = scalar(
        s.postgres, 'SELECT min(extract(epoch FROM processed_at - "timestamp")) FROM transactions'
    )
    assert event_age > 300 * 86400  # what the old metric measured: the simulated dates' age

    db = Database(s.postgres)
    try:
        got = {m.name: m.value for m in collect_metrics(db, s)}
    finally:
        db.close()
    assert 2.0 <= got["e2e_delay_p50_seconds"] <= got["e2e_delay_p95_seconds"] < 120
    assert got["e2e_delay_p50_seconds"] == pytest.approx(statistics.median(_delays(s.postgres)))
    assert (
        evaluate_thresholds([Metric("e2e_delay_p95_seconds", got["e2e_delay_p95_seconds"])], s.monitor) == []
    )  # the first monitoring run is green on a healthy pipeline


def test_the_delay_of_live_traffic(pipeline_settings: Settings, tmp_path: Path) -> None:
    s = dataclasses.replace(pipeline_settings, data_dir=str(tmp_path))
    summary = run_producer(s, count=500, seed=8, clock="wall", progress_seconds=60)
    assert summary.acked == 500
    assert consume(s).stored == 500
    db = Database(s.postgres)
    try:
        got = {m.name: m.value for m in collect_metrics(db, s)}
    finally:
        db.close()
    delays = _delays(s.postgres)
    assert min(delays) >= -1.0  # clocks of one machine: never meaningfully negative
    assert 0 <= got["e2e_delay_p50_seconds"] <= got["e2e_delay_p95_seconds"] < 60
    assert got["e2e_delay_p50_seconds"] == pytest.approx(statistics.median(delays))
    # Live events are stamped at send time too, so here the event's own age agrees.
    event_age = scalar(
        s.postgres,
        'SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM processed_at - "timestamp")) '
        "FROM transactions WHERE simulated_scenario IS NULL",
    )
    assert abs(event_age - got["e2e_delay_p50_seconds"]) < 5


def test_cleanup_says_first_what_it_deletes_and_keeps_what_was_processed_recently(
    db: Database, fresh_db: PostgresSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Old event times alone are not enough: a simulated or replayed day processed this week
    stays (its processing day's reconciliation must keep every offset)."""
    now = datetime.now(UTC)
    with db.connection() as conn, conn.cursor() as cur:
        for i, (event, processed) in enumerate(
            [
                (now - timedelta(days=400), now - timedelta(days=1)),
                (now - timedelta(days=400), now - timedelta(days=200)),
            ]
        ):
            cur.execute(
                """INSERT INTO transactions (transaction_id, account_id, transaction_type, amount, currency,
                       "timestamp", channel, country, schema_version, kafka_topic, kafka_partition,
                       kafka_offset, processed_at)
                   VALUES (%s, 'ACC1', 'purchase', 1, 'EUR', %s, 'pos', 'DE', 1, 't', 0, %s, %s)""",
                (f"t{i}", event, i, processed),
            )
    settings = dataclasses.replace(
        Settings(validation=ValidationLimits(max_age_days=90)),
        postgres=fresh_db,
        data_dir=str(tmp_path),
        retention_days=90,
    )
    schema.set_retention_days(fresh_db, 90)  # as the owner: the policy purge_expired() keeps to
    purger = Database(fresh_db.as_retention())  # the app role may not delete (utils/roles.py)
    try:
        with caplog.at_level(logging.INFO, logger="reports.retention"):
            counts = retention.cleanup(purger, settings)
    finally:
        purger.close()
    first = next(r for r in caplog.records if r.name == "reports.retention").getMessage()
    assert first.startswith("retention (RETENTION_DAYS=90): will delete what is older than ")
    assert "1 transactions, 0 rejected_transactions, 0 pipeline_metrics" in first
    assert counts["transactions"] == 1
    assert query(fresh_db, "SELECT transaction_id FROM transactions") == [("t0",)]
