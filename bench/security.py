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

import json
import logging
import os
import sys
import uuid
from collections.abc import Sequence

from bench import harness, kafka_ab
from stack.common import cache_dir
from stack.orchestrator import LocalStack

log = logging.getLogger("bench")

SECURED_PORT_SHIFT = 50  # the secured broker's ports: the bench stack's + this


def main(argv: Sequence[str] | None = None) -> int:
    args = kafka_ab.parser("python -m bench.security", __doc__, 20_000).parse_args(argv)
    offset, ports = kafka_ab.bench_ports()
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
    sides = [("plaintext", services.env.kafka_settings()), ("sasl_ssl", secured.kafka_user("admin"))]
    try:
        runs = kafka_ab.abba(sides, ws, args.rounds, args.count, args.seed)
    finally:
        ws.close()
        secured.down()
        harness.close_services(services, keep=False)

    def ratio(key: str) -> float:
        return round(kafka_ab.median(runs, "sasl_ssl", key) / kafka_ab.median(runs, "plaintext", key), 3)

    out = {
        "count": args.count,
        "paired_produce_ratio": kafka_ab.paired_ratio(
            runs, args.rounds, "produce_rate", "plaintext", "sasl_ssl"
        ),
        "paired_consume_ratio": kafka_ab.paired_ratio(
            runs, args.rounds, "consume_rate", "plaintext", "sasl_ssl"
        ),
        "rounds": args.rounds,
        "runs": runs,
        "produce_ratio": ratio("produce_rate"),
        "consume_ratio": ratio("consume_rate"),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
