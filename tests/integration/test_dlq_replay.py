"""Replaying a rejected message, from the console (admin) and from the shell, on real Kafka and
PostgreSQL: the corrected copy lands on its topic with the original key and a header naming the
rejected offset; an id already stored is refused; an analyst may not replay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaConsumer

from tests.console_support import csrf_of, serve, signed_in
from utils.config import Settings, settings_to_env
from utils.database import connect

REPO = Path(__file__).resolve().parents[2]


def _reject(settings: Settings, offset: int, payload: bytes) -> int:
    conn = connect(settings.postgres, migration=True)
    with conn, conn.cursor() as cur:
        cur.execute(
            """INSERT INTO rejected_transactions (kafka_topic, kafka_partition, kafka_offset, reason, detail,
                   transaction_id, message_key, raw_payload)
               VALUES (%s, 1, %s, 'invalid_amount', 'amount: must be greater than 0', NULL, 'ACC-7', %s)
               RETURNING rejected_id""",
            (settings.kafka.topic, offset, payload),
        )
        rejected_id = int(cur.fetchone()[0])
    conn.close()
    return rejected_id


def _read_all(settings: Settings, expected: int) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
    consumer = KafkaConsumer(
        settings.kafka.topic,
        bootstrap_servers=settings.kafka.bootstrap_servers.split(","),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=15000,
    )
    out = []
    try:
        for record in consumer:
            out.append((record.key, record.value, dict(record.headers)))
            if len(out) >= expected:
                break
    finally:
        consumer.close()
    return out


def test_replay_from_the_console_and_the_shell(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(partitions=2)
    corrected = {"transaction_id": "tx-fixed-1", "amount": 5}
    first = _reject(settings, 41, json.dumps({**corrected, "amount": -5}).encode())
    second = _reject(settings, 42, b'{"transaction_id": "tx-fixed-2", "amount": 7}')
    with serve(settings) as base:
        analyst = signed_in(base, "ana")
        refused = analyst.post(f"/dlq/{first}/replay", data={"payload": "{}", "csrf_token": csrf_of(analyst)})
        assert refused.status_code == 403
        admin = signed_in(base, "adm")
        token = csrf_of(admin)
        r = admin.post(f"/dlq/{first}/replay", data={"payload": json.dumps(corrected), "csrf_token": token})
        assert r.status_code == 303 and "replayed" in r.headers["location"], r.headers
        bad = admin.post(f"/dlq/{first}/replay", data={"payload": "not json", "csrf_token": token})
        assert "refused" in bad.headers["location"]

    # The shell: the original payload of the second message, as it was.
    env = {**os.environ, **settings_to_env(settings), "TXMON_ENV_FILE": "/nonexistent"}
    done = subprocess.run(
        [sys.executable, "-m", "consumer.dlq", "replay", str(second)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "replayed rejected message" in done.stdout

    # Already stored: refused, nothing sent.
    conn = connect(settings.postgres, migration=True)
    with conn, conn.cursor() as cur:
        cur.execute(
            """INSERT INTO transactions (transaction_id, account_id, transaction_type, amount, currency, "timestamp",
                   channel, country, schema_version, kafka_topic, kafka_partition, kafka_offset)
               VALUES ('tx-fixed-2', 'ACC-7', 'purchase', 7, 'USD', now(), 'online', 'FR', 1, %s, 0, 0)""",
            (settings.kafka.topic,),
        )
    conn.close()
    again = subprocess.run(
        [sys.executable, "-m", "consumer.dlq", "replay", str(second)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 1 and "already stored" in again.stderr

    # One key, one partition: in the order they were replayed, with the rejected offsets named.
    records = _read_all(settings, 2)
    assert [(k, json.loads(v)["transaction_id"], h["txmon-replay-of"]) for k, v, h in records] == [
        (b"ACC-7", "tx-fixed-1", f"{settings.kafka.topic}/1/41".encode()),
        (b"ACC-7", "tx-fixed-2", f"{settings.kafka.topic}/1/42".encode()),
    ]
    assert records[0][2]["txmon-replayed-by"] == b"adm"
