"""Producer -> real Kafka -> consumer -> real PostgreSQL, end to end."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer
from kafka.partitioner.default import murmur2

from tests.support import ConsumerProcess, consume, execute, generated, produce, query, scalar, wait_until
from utils.config import Settings
from utils.rule_quality import score_rules


def test_seeded_stream_is_stored_exactly_once_with_its_alerts(pipeline_settings: Settings) -> None:
    s = pipeline_settings
    n = 6000
    produce(s, n, seed=11)
    summary = consume(s)
    expected = generated(s, n, seed=11)

    assert summary.stored == n and summary.rejected == 0
    rows = query(
        s.postgres, "SELECT transaction_id, simulated_scenario, simulated_incident FROM transactions"
    )
    assert sorted(rows) == sorted(
        (t["transaction_id"], t["simulated_scenario"], t["simulated_incident"]) for t in expected
    )
    # The base amount is stored beside the amount as sent, converted with the default table.
    rates = s.rules.rate_table()
    stored = dict(query(s.postgres, "SELECT transaction_id, amount_base::float8 FROM transactions"))
    assert all(stored[t["transaction_id"]] == rates.to_base(t["amount"], t["currency"]) for t in expected)

    # Every scenario in the stream was caught, per incident, by the rule built for it.
    incidents = {
        t["simulated_incident"]: t["simulated_scenario"] for t in expected if t["simulated_incident"]
    }
    alerts = query(
        s.postgres,
        "SELECT a.alert_type, t.simulated_incident FROM alerts a JOIN transactions t USING (transaction_id)",
    )
    scores = score_rules(n, incidents, alerts)
    missing = [r.alert_type for r in scores if r.incidents and not r.caught]
    assert not missing, f"rules that caught none of their incidents: {missing}"
    # Every stored alert explains itself with numbers.
    for msg, details in query(s.postgres, "SELECT alert_message, details FROM alerts"):
        assert re.search(r"\d", msg) and details, msg
    # Kafka coordinates are stored and unique per message.
    assert scalar(s.postgres, "SELECT count(DISTINCT (kafka_partition, kafka_offset)) FROM transactions") == n


def test_replaying_the_topic_adds_nothing(pipeline_settings: Settings) -> None:
    s = pipeline_settings
    produce(s, 3000, seed=5)
    first = consume(s)
    alerts_before = scalar(s.postgres, "SELECT count(*) FROM alerts")
    # A new group reads the same topic from the start: every message is a replay.
    again = dataclasses.replace(
        s, kafka=dataclasses.replace(s.kafka, consumer_group=s.kafka.consumer_group + "-r")
    )
    second = consume(again)
    assert first.stored == 3000
    assert second.stored == 0 and second.already_stored == 3000, second.as_dict()
    # The first group started again finds nothing to redo ...
    assert consume(s).consumed == 0
    # ... unless an operator rewinds it to the beginning: every message is a replay.
    rewound = execute(
        s.postgres,
        "UPDATE consumer_offsets SET next_offset = 0 WHERE consumer_group = %s",
        (s.kafka.consumer_group,),
    )
    assert rewound == s.kafka.topic_partitions
    third = consume(s)
    assert third.stored == 0 and third.already_stored == 3000, third.as_dict()
    assert scalar(s.postgres, "SELECT count(*) FROM transactions") == 3000
    assert scalar(s.postgres, "SELECT count(*) FROM alerts") == alerts_before


def _send_raw(
    s: Settings, messages: list[tuple[bytes | None, bytes]], timestamp_ms: int | None = None
) -> None:
    """To partition 0; `timestamp_ms`: the records' Kafka timestamp (None: the producer's clock).
    A valid message must be of an account of partition 0 (`on_partition_0`), or it is refused as
    wrong_partition."""
    producer = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all")
    for key, value in messages:
        producer.send(s.kafka.topic, key=key, value=value, partition=0, timestamp_ms=timestamp_ms)
    producer.flush()
    producer.close()


def on_partition_0(s: Settings, txns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The transactions whose account Kafka's default partitioner puts in partition 0."""
    n = s.kafka.topic_partitions
    return [t for t in txns if (murmur2(t["account_id"].encode()) & 0x7FFFFFFF) % n == 0]


def test_bad_messages_go_to_the_dlq_and_the_table_with_reasons(pipeline_settings: Settings) -> None:
    s = pipeline_settings
    good = on_partition_0(s, generated(s, 60, seed=3))[:3]
    bad_amount = {**good[1], "transaction_id": "neg-1", "amount": -5}
    missing = {k: v for k, v in good[2].items() if k != "currency"} | {"transaction_id": "miss-1"}
    messages: list[tuple[bytes | None, bytes]] = [
        (b"k1", b'{"transaction_id": "trunc'),
        (good[1]["account_id"].encode(), orjson.dumps(bad_amount)),
        (good[2]["account_id"].encode(), orjson.dumps(missing)),
        (b"k4", b"\xff\xfe not utf-8"),
        (good[0]["account_id"].encode(), orjson.dumps(good[0])),
    ]
    _send_raw(s, messages)
    summary = consume(s)
    assert summary.stored == 1 and summary.rejected == 4

    rows = query(
        s.postgres,
        "SELECT kafka_offset, reason, raw_payload FROM rejected_transactions ORDER BY kafka_offset",
    )
    assert [(o, bytes(raw)) for o, _, raw in rows] == [(i, messages[i][1]) for i in range(4)]
    reasons = [r for _, r, _ in rows]
    assert reasons[1] == "amount_not_positive" and reasons[2] == "missing_field"
    assert reasons[0] == "invalid_json" and reasons[3] in ("invalid_utf8", "invalid_json")

    dlq = KafkaConsumer(
        s.kafka.dlq_topic,
        bootstrap_servers=s.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    dead = list(dlq)
    dlq.close()
    assert [m.value for m in dead] == [m[1] for m in messages[:4]]
    headers = dict(dead[1].headers)
    assert headers["dlq.reason"] == b"amount_not_positive"
    assert headers["dlq.source.offset"] == b"1" and headers["dlq.source.partition"] == b"0"


def test_rules_see_history_from_before_a_restart(pipeline_settings: Settings) -> None:
    """Two tiny charges, a restart, two more: card testing only fires if the history was loaded back."""
    s = pipeline_settings
    base = on_partition_0(s, generated(s, 30, seed=9))[0]
    t0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()  # fixed, and so is each record's time
    sent_ms = int((t0 + 600) * 1000)

    def tiny(i: int) -> tuple[bytes, bytes]:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t0 + 30 * i))
        txn = {
            **base,
            "transaction_id": f"tiny-{i}",
            "amount": 1.0 + i / 10,
            "channel": "online",
            "timestamp": ts,
            "simulated_scenario": None,
            "merchant": f"shop-{i}",
        }
        return base["account_id"].encode(), orjson.dumps(txn)

    _send_raw(s, [tiny(0), tiny(1)], sent_ms)
    assert consume(s).stored == 2
    _send_raw(s, [tiny(2), tiny(3)], sent_ms)
    assert consume(s).stored == 2
    fired = query(s.postgres, "SELECT transaction_id, details FROM alerts WHERE alert_type = 'card_testing'")
    assert [tid for tid, _ in fired] == ["tiny-3"]
    assert fired[0][1]["count"] == s.rules.card_testing_count


def test_killed_consumer_restarts_without_gap_or_duplicate(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    s = settings_factory(max_poll_records=500)
    n = 20_000
    produce(s, n, seed=21)
    for kill_at in (3000, 9000):
        proc = ConsumerProcess(s, tmp_path / "consumer.log")
        wait_until(
            lambda at=kill_at: scalar(s.postgres, "SELECT count(*) FROM transactions") >= at,
            timeout=120,
            what=f"{kill_at} rows",
        )
        proc.kill()  # SIGKILL: no chance to finish the batch or commit
    final = ConsumerProcess(s, tmp_path / "consumer.log", "--max-idle-seconds", "3")
    assert final.wait(180) == 0, final.output()[-3000:]
    assert scalar(s.postgres, "SELECT count(*) FROM transactions") == n
    ids = {r[0] for r in query(s.postgres, "SELECT transaction_id FROM transactions")}
    assert ids == {t["transaction_id"] for t in generated(s, n, seed=21)}
    # No offset was skipped in any partition.
    gaps = query(
        s.postgres,
        "SELECT kafka_partition, count(*), max(kafka_offset) - min(kafka_offset) + 1 FROM transactions "
        "GROUP BY kafka_partition",
    )
    assert all(count == span for _, count, span in gaps), gaps


def test_two_consumers_share_the_partitions(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    s = settings_factory(max_poll_records=500)
    a = ConsumerProcess(s, tmp_path / "a.log", "--max-idle-seconds", "6")
    b = ConsumerProcess(s, tmp_path / "b.log", "--max-idle-seconds", "6")
    time.sleep(4)  # both join before data arrives, so the group splits the partitions
    produce(s, 10_000, seed=33)
    assert a.wait(120) == 0 and b.wait(120) == 0
    assert scalar(s.postgres, "SELECT count(*) FROM transactions") == 10_000

    def stored_by(out: str) -> int:
        m = re.search(r"consumer summary: consumed=\d+ stored=(\d+)", out)
        assert m, out[-2000:]
        return int(m.group(1))

    counts = [stored_by(a.output()), stored_by(b.output())]
    assert sum(counts) == 10_000 and min(counts) > 0, counts


def test_sigterm_finishes_the_batch_and_exits_zero(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    s = settings_factory(max_poll_records=200)
    produce(s, 8000, seed=44)
    proc = ConsumerProcess(s, tmp_path / "c.log")
    wait_until(
        lambda: scalar(s.postgres, "SELECT count(*) FROM transactions") > 0, timeout=60, what="first rows"
    )
    proc.signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    out = proc.output()
    assert "consumer summary" in out
    stored = scalar(s.postgres, "SELECT count(*) FROM transactions")
    # Committed offsets cover exactly the stored rows: a restart picks up from there.
    after = consume(s)
    assert stored + after.stored == 8000 and after.already_stored == 0, (stored, after)
    assert json.dumps(after.as_dict())


def test_sigusr1_logs_what_the_member_owns_beside_what_kafka_python_fetches(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """The operator's view of a consumer that reads nothing (docs/operations.md): one `state:` line
    whose two sides agree on a healthy member that has read everything."""
    s = settings_factory(max_poll_records=500)
    n = 2_000
    produce(s, n, seed=41)
    proc = ConsumerProcess(s, tmp_path / "consumer.log")
    wait_until(
        lambda: scalar(s.postgres, "SELECT count(*) FROM transactions") >= n, timeout=120, what=f"{n} rows"
    )
    proc.signal(signal.SIGUSR1)
    wait_until(lambda: "state: " in proc.output(), timeout=30, what="the state line")
    line = next(x for x in proc.output().splitlines() if "state: " in x)
    state = json.loads(line.split("state: ", 1)[1])
    proc.signal(signal.SIGTERM)
    assert proc.wait(60) == 0, proc.output()[-3000:]

    ends = dict(
        query(s.postgres, "SELECT kafka_partition, max(kafka_offset) + 1 FROM transactions GROUP BY 1")
    )
    machine, client = state["machine"], state["kafka"]
    assert sorted(int(p) for p in machine["owned"]) == sorted(int(p) for p in client) == sorted(ends)
    for p, owned in machine["owned"].items():
        fetch = client[p]
        # `committed` may still trail by the batch whose commit the main loop has not seen yet.
        assert owned["position"] == owned["expected"] == fetch["position"] == ends[int(p)], (p, owned, fetch)
        assert owned["committed"] <= owned["expected"]
        assert not fetch["paused"] and not fetch["awaiting_validation"] and not fetch["pending_revocation"]
    assert machine["phase"] == {p: "owned" for p in machine["owned"]} and machine["dropping"] == []
    # Nothing parked while paused (a fetch response may be queued at any moment: not asserted).
    assert state["buffered"]["paused_completed"] == state["buffered"]["paused_records"] == []
