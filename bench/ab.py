"""A/B: the consumer of a base revision against the working tree, interleaved on the same topic.

    python -m bench.ab [--base HEAD] [--count 100000] [--rounds 3] [--state-dir D --zk-port ..]
                       [--a-producer-env PRODUCER_COMPRESSION=none]

One seeded topic is produced once; then A (`git archive BASE`, unpacked in a temp dir) and B
(this checkout) each consume it in turn with a fresh group and a fresh database, ABAB..., so
both see the same box at nearly the same moment. Reports each side's steady tx/s and CPU µs per
row, and the median of the per-round ratios B/A: what a change bought, on a noisy machine.
Uses the bench's stack (see bench/run.py) and its ports; both sides get the working tree's
settings (as environment variables), so compare code, not defaults. With `--a-producer-env`,
side A reads a second topic, produced (same seed and count) with those settings changed:
what a producer-side change (record-batch compression) does to the consumer. Consumer logs go to
bench/results/ab<id>-logs/.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import secrets
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness, stats
from bench.context import CONSUMER_IDLE_S, consume_timeout, produce
from bench.harness import Child, Sampler, Workspace
from utils.config import Settings, load_settings, settings_to_env
from utils.logs import configure_logging

log = logging.getLogger("bench.ab")


def unpack(rev: str, into: Path) -> Path:
    """The tree of `rev` as plain files (no worktree: nothing in .git changes)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev], cwd=harness.REPO, capture_output=True, check=True
    ).stdout
    tar_path = into / "base.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


def env_pairs(pairs: list[str]) -> dict[str, str]:
    """KEY=VALUE arguments as a dict (a missing `=` is an error)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"expected KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def consume_once(settings: Settings, tree: Path, log_path: Path, count: int) -> dict[str, Any]:
    child = Child(
        [
            sys.executable,
            str(tree / "consumer" / "transaction_processor.py"),
            "--max-idle-seconds",
            CONSUMER_IDLE_S,
        ],
        settings,
        log_path,
    )
    with Sampler([child.pid], 0.25) as sampler:
        rc = child.wait(consume_timeout(count))
    st = harness.stored_stats(settings.postgres)
    window = stats.steady_window(st["groups"])
    return {
        "exit_code": rc,
        "stored": st["count"],
        "rate": stats.steady_rate(st["groups"]),
        "cpu_us_per_row": stats.cpu_us_per_row([sampler.cpu[child.pid]], window),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    p.add_argument("--base", default="HEAD", help="git revision for side A (default HEAD)")
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--keep-stack", action="store_true", help="leave the bench stack running")
    # As bench.run's: a bench beside another session's on the same machine needs its own stack.
    p.add_argument(
        "--latency-rate",
        type=float,
        default=0.0,
        help="compare end-to-end latency at this offered rate instead of throughput (e.g. 3000): "
        "per round both sides and the Kafka floor, each on its own topic",
    )
    p.add_argument(
        "--latency-seconds", type=float, default=10.0, help="length of each latency run (default 10)"
    )
    p.add_argument(
        "--state-dir", type=Path, help="bench stack state dir (default ~/.cache/txmon/bench-stack)"
    )
    p.add_argument(
        "--a-producer-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="side A reads a topic of its own, produced with this setting changed (repeatable; e.g. "
        "PRODUCER_COMPRESSION=none, the base's producer): for producer-side changes, which a shared "
        "topic hides",
    )
    p.add_argument("--zk-port", type=int, default=harness.BENCH_PORTS["zk_port"])
    p.add_argument("--kafka-port", type=int, default=harness.BENCH_PORTS["kafka_port"])
    p.add_argument("--pg-port", type=int, default=harness.BENCH_PORTS["pg_port"])
    args = p.parse_args(argv)
    configure_logging("INFO", "text")

    services = harness.open_services(
        args.state_dir, {"zk_port": args.zk_port, "kafka_port": args.kafka_port, "pg_port": args.pg_port}
    )
    if args.latency_rate > 0:
        from bench.latency_ab import latency_ab

        try:
            return latency_ab(args, services)
        finally:
            harness.close_services(services, args.keep_stack)
    run_id = f"ab{secrets.token_hex(3)}"
    ws = Workspace(services, run_id)
    results: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    try:
        with tempfile.TemporaryDirectory(prefix="txmon-ab-") as tmp:
            trees = {"A": unpack(args.base, Path(tmp)), "B": harness.REPO}
            base = ws.settings("src")
            log.info("producing %d transactions once", args.count)
            produce(base, args.count, args.seed)
            topics = {"A": base.kafka.topic, "B": base.kafka.topic}
            if args.a_producer_env:
                changed = load_settings(environ={**settings_to_env(base), **env_pairs(args.a_producer_env)})
                a_topic = ws.topic("src-a", base.kafka.topic_partitions)
                a_settings = dataclasses.replace(
                    changed, kafka=dataclasses.replace(base.kafka, topic=a_topic)
                )
                log.info("producing side A's own topic with %s", ", ".join(args.a_producer_env))
                produce(a_settings, args.count, args.seed)
                topics["A"] = a_settings.kafka.topic
            logs = harness.REPO / "bench" / "results" / f"{run_id}-logs"  # kept: a failed round is read there
            for r in range(args.rounds):
                for side in ("A", "B") if r % 2 == 0 else ("B", "A"):
                    settings = dataclasses.replace(
                        base,
                        # Each side's own schema: a base from before a migration cannot read a newer one.
                        postgres=ws.database(f"{side}{r}", trees[side] / "utils" / "migrations"),
                        kafka=dataclasses.replace(
                            base.kafka, topic=topics[side], consumer_group=f"g-{run_id}-{side}{r}"
                        ),
                    )
                    res = consume_once(settings, trees[side], logs / f"{side}{r}.log", args.count)
                    results[side].append(res)
                    log.info("round %d %s: %s", r, side, res)
                    ws.drop_database(settings.postgres)
    finally:
        ws.close()
        harness.close_services(services, args.keep_stack)
    ratios = [
        b["rate"] / a["rate"]
        for a, b in zip(results["A"], results["B"], strict=True)
        if a["rate"] and b["rate"]
    ]
    cpu = [
        b["cpu_us_per_row"] / a["cpu_us_per_row"]
        for a, b in zip(results["A"], results["B"], strict=True)
        if a["cpu_us_per_row"] and b["cpu_us_per_row"]
    ]
    for side in ("A", "B"):
        rates = [r["rate"] for r in results[side] if r["rate"]]
        cpus = [r["cpu_us_per_row"] for r in results[side] if r["cpu_us_per_row"]]
        print(
            f"{side} ({args.base if side == 'A' else 'working tree'}): "
            f"median {statistics.median(rates):,.0f} tx/s, {statistics.median(cpus):.1f} µs CPU/row "
            f"(rates {', '.join(f'{x:,.0f}' for x in rates)})"
        )
    if ratios:
        print(f"B/A throughput: median {statistics.median(ratios):.3f}x over {len(ratios)} rounds")
    if cpu:
        print(f"B/A CPU per row: median {statistics.median(cpu):.3f}x")
    return (
        0
        if all(r["exit_code"] == 0 and r["stored"] == args.count for s in results.values() for r in s)
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
