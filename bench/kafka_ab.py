"""Two Kafka set-ups against each other in the same run, alternating (ABBA) so drift on a shared
machine hits both alike: what bench/brokers.py (three brokers against one) and bench/security.py
(SASL_SSL against plaintext) share.

Each measurement produces N seeded transactions into a fresh topic (the real producer: acks=all,
idempotent; its rate), then the real consumer (in this process) stores them into a fresh database
of the bench stack's PostgreSQL; its rate is N over the span of `processed_at`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import statistics
import uuid
from collections.abc import Sequence
from typing import Any

from bench import harness
from bench.context import produce
from consumer.processor import TransactionProcessor
from utils.config import KafkaSettings, Settings
from utils.kafka_cleanup import admin_client, delete_topics, new_topic_configs

log = logging.getLogger("bench")


def parser(prog: str, doc: str, count: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    p.add_argument("--count", type=int, default=count, help=f"transactions per measurement [{count}]")
    p.add_argument("--rounds", type=int, default=2, help="ABBA rounds [2]")
    p.add_argument("--seed", type=int, default=7)
    return p


def bench_ports() -> tuple[int, dict[str, int]]:
    """TXMON_TEST_PORT_OFFSET and the bench stack's ports shifted by it, so a bench runs beside
    other benchmark or test sessions on the machine."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    offset = int(os.environ.get("TXMON_TEST_PORT_OFFSET", "0"))
    return offset, {k: v + offset for k, v in harness.BENCH_PORTS.items()}


def measure(label: str, kafka: KafkaSettings, ws: harness.Workspace, n: int, seed: int) -> dict[str, Any]:
    """One measurement on `kafka`: its own topics (the settings' replication factor and the
    project's topic configs), its own database, both removed afterwards."""
    tag = uuid.uuid4().hex[:6]
    topic = f"bench-{label}-{tag}".replace("_", "-")
    rf = kafka.replication_factor
    spec = {"replication_factor": rf, "configs": new_topic_configs(rf)}
    with contextlib.closing(admin_client(kafka)) as admin:
        admin.create_topics(
            {topic: {"num_partitions": 6, **spec}, f"{topic}.dlq": {"num_partitions": 1, **spec}}
        )
        admin.wait_for_topics([topic, f"{topic}.dlq"], timeout_ms=30_000)
    pg = ws.database(f"ab_{label}_{tag[:4]}")
    k = dataclasses.replace(kafka, topic=topic, dlq_topic=f"{topic}.dlq", consumer_group=f"g-{topic}")
    base = Settings()
    settings = dataclasses.replace(
        base, kafka=k, postgres=pg, consumer=dataclasses.replace(base.consumer, max_idle_seconds=2.0)
    )
    try:
        prod = produce(settings, n, seed)
        summary = TransactionProcessor(settings).run()
        st = harness.stored_stats(pg)
        span = (st["last"] - st["first"]) if st["first"] else 0.0
        return {
            "mode": label,
            "replication_factor": rf,
            "produce_rate": round(prod.rate),
            "stored": summary.stored,
            "consume_rate": round(st["count"] / span) if span > 0 else None,
        }
    finally:
        ws.drop_database(pg)
        with contextlib.closing(admin_client(kafka)) as admin:
            delete_topics(admin, [topic, f"{topic}.dlq"])


def abba(
    sides: Sequence[tuple[str, KafkaSettings]], ws: harness.Workspace, rounds: int, count: int, seed: int
) -> list[dict[str, Any]]:
    """Both sides each round, A then B, then B then A: runs[2r:2r+2] is round r's pair."""
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        for label, kafka in sides if r % 2 == 0 else reversed(sides):
            result = measure(label, kafka, ws, count, seed + r)
            log.info("%s", result)
            runs.append(result)
    return runs


def paired_ratio(runs: list[dict[str, Any]], rounds: int, key: str, a: str, b: str) -> float | None:
    """Median over rounds of b / a within the round: drift between rounds cancels. A round
    without both figures does not count."""
    ratios = []
    for r in range(rounds):
        pair = {x["mode"]: x for x in runs[2 * r : 2 * r + 2]}
        one, other = pair[a].get(key), pair[b].get(key)
        if one and other:
            ratios.append(other / one)
    return round(statistics.median(ratios), 3) if ratios else None


def median(runs: list[dict[str, Any]], mode: str, key: str) -> float:
    return statistics.median(float(x[key]) for x in runs if x["mode"] == mode and x[key])
