"""What replication costs: the pipeline's throughput on three brokers (replication factor 3,
min.insync.replicas 2, acks=all) against one broker, measured in the same run, alternating (ABBA)
so drift on a shared machine hits both alike.

    python -m bench.brokers [--count N] [--rounds R]

Each measurement: produce N seeded transactions into a fresh topic (the real producer: acks=all,
idempotent; its rate), then the real consumer (in this process) stores them into a fresh database;
its rate is N over the span of `processed_at`. The one broker is the bench stack's
(bench/harness.open_services, forced to one broker); the cluster is a second ZooKeeper and three
brokers (TXMON_KAFKA_BROKERS=3) on the bench ports + CLUSTER_PORT_SHIFT. Both write into the bench
stack's PostgreSQL. Prints JSON with both medians and the ratios (cluster / one broker).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import statistics
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from bench import harness
from bench.context import produce
from consumer.processor import TransactionProcessor
from stack.common import cache_dir
from stack.orchestrator import LocalStack
from utils.config import KafkaSettings, Settings
from utils.kafka_cleanup import admin_client, delete_topics, new_topic_configs

log = logging.getLogger("bench")

CLUSTER_PORT_SHIFT = 60  # the cluster's ports: the bench stack's + this (brokers on +0, +1, +2)
MODES = ("1_broker", "3_brokers")


def _measure(label: str, kafka: KafkaSettings, ws: harness.Workspace, n: int, seed: int) -> dict[str, Any]:
    topic = f"bench-brokers-{label}-{uuid.uuid4().hex[:6]}".replace("_", "-")
    rf = kafka.replication_factor
    with contextlib.closing(admin_client(kafka)) as admin:
        spec = {"replication_factor": rf, "configs": new_topic_configs(rf)}
        admin.create_topics(
            {topic: {"num_partitions": 6, **spec}, f"{topic}.dlq": {"num_partitions": 1, **spec}}
        )
        admin.wait_for_topics([topic, f"{topic}.dlq"], timeout_ms=30_000)
    pg = ws.database(f"brk_{label}_{uuid.uuid4().hex[:4]}")
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


def paired_ratio(runs: list[dict[str, Any]], rounds: int, key: str) -> float | None:
    """Median over rounds of cluster / one broker within the round: drift between rounds cancels."""
    ratios = []
    for r in range(rounds):
        pair = {x["mode"]: x for x in runs[2 * r : 2 * r + 2]}
        one, three = pair[MODES[0]].get(key), pair[MODES[1]].get(key)
        if one and three:
            ratios.append(three / one)
    return round(statistics.median(ratios), 3) if ratios else None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.brokers", description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=30_000, help="transactions per measurement [30000]")
    p.add_argument("--rounds", type=int, default=2, help="ABBA rounds [2]")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    # Beside other benchmark or test sessions on the machine: their offset, their ports.
    offset = int(os.environ.get("TXMON_TEST_PORT_OFFSET", "0"))
    ports = {k: v + offset for k, v in harness.BENCH_PORTS.items()}
    services = harness.open_services(cache_dir() / f"bench-stack-{offset}", ports, kafka_brokers=1)
    cluster = LocalStack(
        cache_dir() / f"bench-stack-cluster-{offset}",
        environ={**os.environ, "TXMON_KAFKA_IMPL": "apache"},
        kafka_brokers=3,
        zk_port=ports["zk_port"] + CLUSTER_PORT_SHIFT,
        kafka_port=ports["kafka_port"] + CLUSTER_PORT_SHIFT,
        pg_port=ports["pg_port"] + CLUSTER_PORT_SHIFT,  # not started: the bench stack's PostgreSQL
    )
    cluster.start_component("kafka")
    ws = harness.Workspace(services, uuid.uuid4().hex[:6])
    kafkas = {
        MODES[0]: dataclasses.replace(services.env.kafka_settings(), replication_factor=1),
        MODES[1]: dataclasses.replace(cluster.env().kafka_settings(), replication_factor=3),
    }
    runs: list[dict[str, Any]] = []
    try:
        for r in range(args.rounds):
            order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
            for label in order:
                result = _measure(label, kafkas[label], ws, args.count, args.seed + r)
                log.info("%s", result)
                runs.append(result)
    finally:
        ws.close()
        cluster.down()
        harness.close_services(services, keep=False)

    def median(mode: str, key: str) -> float:
        return statistics.median(float(x[key]) for x in runs if x["mode"] == mode and x[key])

    out = {
        "command": "python -m bench.brokers " + " ".join(argv if argv is not None else sys.argv[1:]),
        "count": args.count,
        "rounds": args.rounds,
        "paired_produce_ratio": paired_ratio(runs, args.rounds, "produce_rate"),
        "paired_consume_ratio": paired_ratio(runs, args.rounds, "consume_rate"),
        "median_produce_rate": {m: median(m, "produce_rate") for m in MODES},
        "median_consume_rate": {m: median(m, "consume_rate") for m in MODES},
        "runs": runs,
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
