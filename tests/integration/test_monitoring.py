"""Recording metrics and retention against a real PostgreSQL: snapshots never overwrite each
other, and `python -m reports.retention` deletes what expired and nothing else."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reports import retention
from reports.metrics import Metric, record_metrics
from tests.support import query
from utils.config import PostgresSettings, Settings, settings_to_env
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

    settings = dataclasses.replace(Settings(), postgres=fresh_db, data_dir=str(tmp_path), retention_days=90)
    for key, value in settings_to_env(settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TXMON_ENV_FILE", os.devnull)
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
