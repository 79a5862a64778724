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

import dataclasses
import json
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from bench import harness, kafka_ab
from stack.common import cache_dir
from stack.orchestrator import LocalStack

log = logging.getLogger("bench")

CLUSTER_PORT_SHIFT = 60  # the cluster's ports: the bench stack's + this (brokers on +0, +1, +2)
MODES = ("1_broker", "3_brokers")


def paired_ratio(runs: list[dict[str, Any]], rounds: int, key: str) -> float | None:
    """Median over rounds of cluster / one broker within the round: drift between rounds cancels."""
    return kafka_ab.paired_ratio(runs, rounds, key, *MODES)


def main(argv: Sequence[str] | None = None) -> int:
    args = kafka_ab.parser("python -m bench.brokers", __doc__, 30_000).parse_args(argv)
    offset, ports = kafka_ab.bench_ports()
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
    sides = [
        (MODES[0], dataclasses.replace(services.env.kafka_settings(), replication_factor=1)),
        (MODES[1], dataclasses.replace(cluster.env().kafka_settings(), replication_factor=3)),
    ]
    try:
        runs = kafka_ab.abba(sides, ws, args.rounds, args.count, args.seed)
    finally:
        ws.close()
        cluster.down()
        harness.close_services(services, keep=False)

    out = {
        "command": "python -m bench.brokers " + " ".join(argv if argv is not None else sys.argv[1:]),
        "count": args.count,
        "rounds": args.rounds,
        "paired_produce_ratio": paired_ratio(runs, args.rounds, "produce_rate"),
        "paired_consume_ratio": paired_ratio(runs, args.rounds, "consume_rate"),
        "median_produce_rate": {m: kafka_ab.median(runs, m, "produce_rate") for m in MODES},
        "median_consume_rate": {m: kafka_ab.median(runs, m, "consume_rate") for m in MODES},
        "runs": runs,
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
