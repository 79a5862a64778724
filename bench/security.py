"""What TLS + SCRAM costs: the pipeline's throughput on a SASL_SSL broker against a plaintext one,
measured in the same run, alternating (ABBA) so drift on a shared machine hits both alike.

    python -m bench.security [--count N] [--rounds R]

Each measurement: produce N seeded transactions into a fresh topic (the producer's rate), then
the real consumer (in this process) stores them into a fresh database; its rate is N over the span
of `processed_at`. The plaintext broker is the bench stack's (bench/harness.open_services); the
secured one is a second ZooKeeper + broker (TXMON_KAFKA_SECURITY=sasl_ssl) on the next ports,
used as its `admin` user (topic ACLs are literal on the pipeline's own names; the cost measured is
TLS and SCRAM, which every user pays alike). Prints JSON with both medians and the ratios.
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
from utils.kafka_cleanup import admin_client, delete_topics

log = logging.getLogger("bench")

SECURED_PORT_SHIFT = 50  # the secured broker's ports: the bench stack's + this


def _measure(label: str, kafka: KafkaSettings, ws: harness.Workspace, n: int, seed: int) -> dict[str, Any]:
    topic = f"bench-sec-{label}-{uuid.uuid4().hex[:6]}"
    with contextlib.closing(admin_client(kafka)) as admin:
        admin.create_topics(
            {
                topic: {"num_partitions": 6, "replication_factor": 1},
                f"{topic}.dlq": {"num_partitions": 1, "replication_factor": 1},
            }
        )
    pg = ws.database(f"sec_{label}_{uuid.uuid4().hex[:4]}")
    k = dataclasses.replace(kafka, topic=topic, dlq_topic=f"{topic}.dlq", consumer_group=f"g-{topic}")
    base = Settings()
    settings = dataclasses.replace(
        base,
        kafka=k,
        postgres=pg,
        consumer=dataclasses.replace(base.consumer, max_idle_seconds=2.0),
    )
    try:
        prod = produce(settings, n, seed)
        summary = TransactionProcessor(settings).run()
        st = harness.stored_stats(pg)
        span = (st["last"] - st["first"]) if st["first"] else 0.0
        return {
            "mode": label,
            "produce_rate": round(prod.rate),
            "stored": summary.stored,
            "consume_rate": round(st["count"] / span) if span > 0 else None,
        }
    finally:
        ws.drop_database(pg)
        with contextlib.closing(admin_client(kafka)) as admin:
            delete_topics(admin, [topic, f"{topic}.dlq"])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.security", description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=20_000, help="transactions per measurement [20000]")
    p.add_argument("--rounds", type=int, default=2, help="ABBA rounds [2]")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    # Beside other benchmark or test sessions on the machine: their offset, their ports.
    offset = int(os.environ.get("TXMON_TEST_PORT_OFFSET", "0"))
    ports = {k: v + offset for k, v in harness.BENCH_PORTS.items()}
    services = harness.open_services(cache_dir() / f"bench-stack-{offset}", ports)
    secured = LocalStack(
        cache_dir() / f"bench-stack-secured-{offset}",
        environ={**os.environ, "TXMON_KAFKA_SECURITY": "sasl_ssl", "TXMON_KAFKA_IMPL": "apache"},
        zk_port=ports["zk_port"] + SECURED_PORT_SHIFT,
        kafka_port=ports["kafka_port"] + SECURED_PORT_SHIFT,
        pg_port=ports["pg_port"] + SECURED_PORT_SHIFT,
    )
    secured.start_component("kafka")
    ws = harness.Workspace(services, uuid.uuid4().hex[:6])
    plain = services.env.kafka_settings()
    tls = secured.kafka_user("admin")
    runs: list[dict[str, Any]] = []
    try:
        for r in range(args.rounds):
            order = [("plaintext", plain), ("sasl_ssl", tls)]
            for label, kafka in order if r % 2 == 0 else reversed(order):
                result = _measure(label, kafka, ws, args.count, args.seed + r)
                log.info("%s", result)
                runs.append(result)
    finally:
        ws.close()
        secured.down()
        harness.close_services(services, keep=False)

    def median(mode: str, key: str) -> float:
        return statistics.median(float(x[key]) for x in runs if x["mode"] == mode and x[key])

    def paired(key: str) -> float:
        """Median over rounds of secured / plaintext within the round: drift between rounds cancels."""
        ratios = []
        for r in range(args.rounds):
            pair = {x["mode"]: x for x in runs[2 * r : 2 * r + 2]}
            if pair["plaintext"][key] and pair["sasl_ssl"][key]:
                ratios.append(pair["sasl_ssl"][key] / pair["plaintext"][key])
        return round(statistics.median(ratios), 3)

    out = {
        "count": args.count,
        "paired_produce_ratio": paired("produce_rate"),
        "paired_consume_ratio": paired("consume_rate"),
        "rounds": args.rounds,
        "runs": runs,
        "produce_ratio": round(median("sasl_ssl", "produce_rate") / median("plaintext", "produce_rate"), 3),
        "consume_ratio": round(median("sasl_ssl", "consume_rate") / median("plaintext", "consume_rate"), 3),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
