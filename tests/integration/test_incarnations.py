"""Positions that repeat or come back, through the real broker, consumer and PostgreSQL.

* A topic deleted and recreated (README's recovery procedure for it, end to end): the new
  incarnation repeats (topic, partition, offset), and every one of its messages is stored or
  rejected once, dead-lettered, evaluated against its own incarnation's history only.
* Retention deleted stored rows, the group is rewound over them: nothing is stored again.
* A rewound group or a new group labels nothing already stored with the rule-set version
  running now: the backtest self-check still passes.
* A database from before migration 060, with data, converted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from consumer.rulesets import __main__ as rulesets_cli
from consumer.rulesets import store
from consumer.rulesets.model import RuleSet
from producer.generator import TransactionGenerator, encode
from producer.pool import AccountPool
from stack.orchestrator import LocalStack
from tests.integration.test_exactly_once import replay_from_the_start
from tests.model import expected, read_topic
from tests.support import consume, query, scalar
from utils import schema
from utils.config import PostgresSettings, Settings, settings_to_env
from utils.database import connect
from utils.kafka_cleanup import admin_client

NIL = uuid.UUID(int=0)


def stream(n: int, seed: int) -> list[dict[str, Any]]:
    """Dense traffic of 40 accounts (the same 40 for every seed): alerts everywhere."""
    gen = TransactionGenerator(seed, AccountPool.create(40, 0), 0.05, "simulated", account_interval_s=8.0)
    return gen.next_batch(n)


def send(s: Settings, values: Sequence[tuple[bytes | None, bytes]]) -> list[int]:
    """To partition 0, in order, each record stamped with its event time (fixed, not the clock)."""
    producer = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all")
    try:
        futures = []
        for key, value in values:
            try:
                ms = int(datetime.fromisoformat(orjson.loads(value)["timestamp"]).timestamp() * 1000) + 1000
            except (orjson.JSONDecodeError, KeyError, TypeError):
                ms = None
            futures.append(producer.send(s.kafka.topic, key=key, value=value, partition=0, timestamp_ms=ms))
        producer.flush(60)
        return [f.get(30).offset for f in futures]
    finally:
        producer.close(10)


def as_owner(pg: PostgresSettings, statement: str, params: tuple[Any, ...] = ()) -> None:
    with contextlib.closing(connect(pg, migration=True)) as conn, conn, conn.cursor() as cur:
        cur.execute(statement, params)


def recreate(s: Settings, partitions: int = 1) -> None:
    with contextlib.closing(admin_client(s.kafka.bootstrap_servers)) as admin:
        admin.delete_topics([s.kafka.topic])
        deadline = time.monotonic() + 60
        while True:
            try:
                admin.create_topics({s.kafka.topic: {"num_partitions": partitions, "replication_factor": 1}})
                break
            except Exception:  # still being deleted
                assert time.monotonic() < deadline, "the topic could not be created again"
                time.sleep(0.5)


# --------------------------------------------------------------------------------------------
# README: a recreated topic, recovered as the README says
# --------------------------------------------------------------------------------------------


def test_a_recreated_topic_recovered_as_the_readme_says_loses_nothing(
    settings_factory: Callable[..., Settings],
) -> None:
    s = settings_factory(partitions=1)
    old = [encode(t) for t in stream(60, seed=61)]
    old.insert(5, (b"acct", b"not json"))
    send(s, old)
    first = consume(s)
    assert (first.stored, first.rejected) == (60, 1), first.as_dict()
    old_ids = {orjson.loads(v)["transaction_id"] for _k, v in old if v != b"not json"}

    recreate(s)
    new = [encode(t) for t in stream(60, seed=62)]
    new.insert(5, (b"acct", b"[1, 2]"))  # rejected at the very position the old one was
    reused = orjson.loads(old[7][1])["transaction_id"]  # an id stored at this same position before
    new[7] = (new[7][0], orjson.dumps({**orjson.loads(new[7][1]), "transaction_id": reused}))
    positions = send(s, new)
    assert positions == list(range(61))
    records = read_topic(s, s.kafka.topic)

    # The README's recovery: as the owner, delete the group's rows (and the DLQ's progress).
    as_owner(
        s.postgres,
        "DELETE FROM consumer_offsets WHERE consumer_group = %s AND kafka_topic = %s",
        (s.kafka.consumer_group, s.kafka.topic),
    )
    as_owner(s.postgres, "DELETE FROM dlq_progress WHERE kafka_topic = %s", (s.kafka.topic,))
    second = consume(s)
    assert (second.stored, second.rejected) == (59, 2), second.as_dict()

    ids = dict(query(s.postgres, "SELECT transaction_id, kafka_topic_id FROM transactions"))
    by_incarnation: dict[str, set[str]] = {}
    for tid, inc in ids.items():
        by_incarnation.setdefault(str(inc), set()).add(tid)
    assert len(by_incarnation) == 2 and NIL not in {uuid.UUID(k) for k in by_incarnation}
    new_id = next(k for k, v in by_incarnation.items() if v.isdisjoint(old_ids))
    old_id = next(k for k in by_incarnation if k != new_id)
    assert by_incarnation[old_id] == old_ids

    # Every position of the new incarnation: stored or rejected, once.
    stored = {
        o
        for (o,) in query(
            s.postgres, "SELECT kafka_offset FROM transactions WHERE kafka_topic_id = %s", (new_id,)
        )
    }
    rejected = dict(
        query(
            s.postgres,
            "SELECT kafka_offset, reason FROM rejected_transactions WHERE kafka_topic_id = %s",
            (new_id,),
        )
    )
    assert rejected == {5: "not_an_object", 7: "duplicate_transaction_id"}
    assert stored | set(rejected) == set(range(61)) and not stored & set(rejected)
    assert scalar(s.postgres, "SELECT count(*) FROM rejected_transactions WHERE kafka_offset = 5") == 2
    # Both rejections at offset 5 reached the dead-letter topic.
    dead = [dict(r.headers) for r in read_topic(s, s.kafka.dlq_topic)]
    assert sorted(h["dlq.reason"] for h in dead if h["dlq.source.offset"] == b"5") == [
        b"invalid_json",
        b"not_an_object",
    ]

    # The new incarnation's alerts are those of its own stream: no history from the old one.
    exp = expected(s, records)
    got = set(
        query(
            s.postgres,
            "SELECT a.transaction_id, a.alert_type FROM alerts a JOIN transactions t USING (transaction_id) "
            "WHERE t.kafka_topic_id = %s",
            (new_id,),
        )
    )
    assert got == {a for a in exp.alerts if a[0] != reused}
    assert got, "the stream raises alerts"


# --------------------------------------------------------------------------------------------
# Retention, then a replay
# --------------------------------------------------------------------------------------------


def test_rows_deleted_by_retention_are_not_stored_again_by_a_replay(
    settings_factory: Callable[..., Settings],
) -> None:
    s = settings_factory(partitions=1)
    send(s, [encode(t) for t in stream(200, seed=63)])
    assert consume(s).stored == 200
    alerts_before = set(query(s.postgres, "SELECT transaction_id, alert_type FROM alerts"))
    # What the retention cleanup does to old rows: their alerts and their registry entries go
    # with them (since migration 090 by dropping their day partitions).
    as_owner(
        s.postgres,
        "DELETE FROM alerts WHERE transaction_id IN (SELECT transaction_id FROM transactions WHERE kafka_offset < 100)",
    )
    as_owner(s.postgres, "DELETE FROM transaction_ids WHERE kafka_offset < 100")
    as_owner(s.postgres, "DELETE FROM transactions WHERE kafka_offset < 100")
    kept = set(query(s.postgres, "SELECT transaction_id, alert_type FROM alerts"))
    assert kept < alerts_before

    replay_from_the_start(s)  # an operator's rewind over what retention deleted
    again = consume(s)
    assert again.stored == 0, again.as_dict()
    assert scalar(s.postgres, "SELECT count(*) FROM transactions") == 100
    assert set(query(s.postgres, "SELECT transaction_id, alert_type FROM alerts")) == kept


# --------------------------------------------------------------------------------------------
# rule_set_applied after a rewind or a new group
# --------------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Settings], None]]:
    def use(s: Settings) -> None:
        for key, value in {**settings_to_env(s), "TXMON_ENV_FILE": os.devnull}.items():
            monkeypatch.setenv(key, value)

    yield use


def self_check(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    code = rulesets_cli.main(["backtest", "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_a_rewound_or_new_group_labels_nothing_stored_with_the_version_running_now(
    rules_admins: dict[str, str],
    settings_factory: Callable[..., Settings],
    cli_env: Callable[[Settings], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = settings_factory(partitions=1)
    send(s, [encode(t) for t in stream(1500, seed=64)])
    assert consume(s).stored == 1500  # the environment's settings: no version published
    assert scalar(s.postgres, "SELECT count(*) FROM alerts WHERE alert_type = 'velocity'") > 0
    name, password = next(iter(rules_admins.items()))  # a named person publishes (migration 071)
    person = dataclasses.replace(s.postgres, user=name, password=password)
    with contextlib.closing(connect(person)) as conn, conn, conn.cursor() as cur:
        environment = RuleSet.from_thresholds(s.rules)
        data = environment.document()
        data["rules"]["velocity"]["enabled"] = False
        store.publish(
            cur,
            RuleSet.from_document(data, s.rules),
            reason="no velocity",
            environment=environment,
        )
    other = dataclasses.replace(
        s, kafka=dataclasses.replace(s.kafka, consumer_group=f"{s.kafka.consumer_group}-2")
    )
    assert consume(other).stored == 0  # a new group reads it all again
    replay_from_the_start(s)
    assert consume(s).stored == 0  # the operator rewinds the first group
    assert query(s.postgres, "SELECT count(*) FROM rule_set_applied") == [(0,)]
    for group in (s, other):
        cli_env(group)
        code, result, err = self_check(capsys)
        assert code == 0 and result["identical"], err


# --------------------------------------------------------------------------------------------
# Migration 060 on a database with data
# --------------------------------------------------------------------------------------------


def test_migration_060_converts_a_database_with_data(test_stack: LocalStack, tmp_path: Path) -> None:
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(schema.MIGRATIONS_DIR.glob("*.sql")):
        if int(path.name[:3]) < 60:
            shutil.copy(path, before / path.name)
    pg = test_stack.create_database(f"txmon_test_{uuid.uuid4().hex[:10]}")
    try:
        schema.migrate(pg, before)
        known, other = uuid.uuid4(), uuid.uuid4()
        with contextlib.closing(connect(pg, migration=True)) as conn, conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO consumer_offsets (consumer_group, kafka_topic, kafka_partition, next_offset, topic_id) "
                "VALUES ('g', 'tx', 0, 3, %s), ('g2', 'tx', 0, 2, %s), ('g', 'unknown', 0, 1, NULL), "
                "('g', 'split', 0, 1, %s), ('g2', 'split', 0, 1, %s)",
                (str(known), str(known), str(known), str(other)),
            )
            for topic, offset in (("tx", 0), ("tx", 1), ("tx", 2), ("unknown", 0), ("split", 0)):
                cur.execute(
                    """INSERT INTO transactions (transaction_id, account_id, transaction_type, amount, currency,
                       "timestamp", channel, country, schema_version, kafka_topic, kafka_partition, kafka_offset)
                       VALUES (%s, 'A', 'purchase', 1, 'EUR', '2026-06-01T12:00Z', 'pos', 'DE', 1, %s, 0, %s)""",
                    (f"{topic}-{offset}", topic, offset),
                )
            cur.execute(
                "INSERT INTO rejected_transactions (kafka_topic, kafka_partition, kafka_offset, reason, detail, raw_payload) "
                "VALUES ('tx', 0, 3, 'invalid_json', 'x', 'x')"
            )
            cur.execute(
                "INSERT INTO rule_set_applied (consumer_group, kafka_topic, kafka_partition, first_offset, version, applied_at) "
                "VALUES ('g', 'tx', 0, 0, NULL, '2026-06-01'), ('g2', 'tx', 0, 0, NULL, '2026-06-02')"
            )
            cur.execute(
                "INSERT INTO dlq_progress (dlq_topic, kafka_topic, kafka_partition, published_offset) "
                "VALUES ('dlq', 'tx', 0, 3)"
            )
        # 060 first, then every later migration over the same data
        applied = schema.migrate(pg)
        assert applied[0] == "060_topic_incarnations" and applied == sorted(applied)
        rows = dict(query(pg, "SELECT transaction_id, kafka_topic_id::text FROM transactions"))
        assert rows == {
            "tx-0": str(known), "tx-1": str(known), "tx-2": str(known),
            "unknown-0": str(NIL),  # the broker gave no topic id
            "split-0": str(NIL),  # groups on two incarnations: which one stored it is unknown
        }  # fmt: skip
        assert query(pg, "SELECT kafka_topic_id::text FROM rejected_transactions") == [(str(known),)]
        assert query(pg, "SELECT consumer_group, kafka_topic_id::text FROM rule_set_applied") == [
            ("g", str(known))
        ]
        assert query(pg, "SELECT kafka_topic_id::text FROM dlq_progress") == [(str(known),)]
        assert sorted(
            query(
                pg,
                "SELECT kafka_topic, kafka_topic_id::text, kafka_partition, next_offset FROM stored_positions",
            )
        ) == sorted(
            [
                ("tx", str(known), 0, 3),
                ("unknown", str(NIL), 0, 1),
                ("split", str(known), 0, 1),
                ("split", str(other), 0, 1),
            ]
        )
        # The same position in another incarnation is another message.
        with contextlib.closing(connect(pg, migration=True)) as conn, conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO rejected_transactions (kafka_topic, kafka_topic_id, kafka_partition, kafka_offset, reason, "
                "detail, raw_payload) VALUES ('tx', %s, 0, 3, 'invalid_json', 'y', 'y') ON CONFLICT DO NOTHING",
                (str(other),),
            )
        assert scalar(pg, "SELECT count(*) FROM rejected_transactions") == 2
    finally:
        test_stack.drop_database(pg.db)
