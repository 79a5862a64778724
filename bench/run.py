"""Throughput and latency of the pipeline, with the baselines that make the figures comparable.

    python -m bench.run [--quick] [--long] [--count N] [--out bench/results]

Starts the bench's own native stack (ZooKeeper + Kafka + PostgreSQL on 42181/49092/45432, state
in ~/.cache/txmon/bench-stack), or uses KAFKA_BOOTSTRAP_SERVERS / POSTGRES_* when they are set
in the environment and answer; every measurement gets a fresh database and fresh topics.
Writes bench/results/<timestamp>.json (+ latest.json) and <timestamp>.png, prints a table.
See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness, stats
from bench.context import CONSUMER_IDLE_S, SCALING_SESSION_TIMEOUT_MS, Context
from bench.harness import Workspace
from bench.profile import format_profile, section_profile
from bench.sections import merge_repeats, section_latency, section_long, section_scaling, section_throughput
from utils.config import Settings
from utils.logs import configure_logging

log = logging.getLogger("bench")

SECTION_NAMES = ("throughput", "latency", "scaling", "profile")
DEFAULT_SECTIONS = ("throughput", "latency", "scaling")  # profile: on request (bench/profile.py)
# What --quick and the default mode set for every flag left unset.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "count": 100_000,
        "repeat": 1,
        "naive_seconds": 10.0,
        "latency_seconds": 10.0,
        "latency_full_count": 30_000,
        "latency_floor_seconds": 5.0,
        "scale_count": 100_000,
        "scale_repeat": 1,
    },
    "default": {
        "count": 300_000,
        "repeat": 3,
        "naive_seconds": 20.0,
        "latency_seconds": 20.0,
        "latency_full_count": 100_000,
        "latency_floor_seconds": 10.0,
        "scale_count": 200_000,
        "scale_repeat": 2,
    },
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark the pipeline: produce rate, consumer throughput against a naive consumer and "
        "the raw stage ceilings, latency at a fixed offered rate, memory, and scaling.",
    )
    p.add_argument("--quick", action="store_true", help="smaller counts and shorter runs (~3-4 minutes)")
    p.add_argument(
        "--long", action="store_true", help="add a memory-flatness run over --long-count transactions"
    )
    p.add_argument(
        "--count", type=int, help="transactions for produce/consumer/baselines (quick 100k, default 300k)"
    )
    p.add_argument(
        "--repeat", type=int, help="repeats of the throughput section; medians reported (quick 1, default 3)"
    )
    p.add_argument(
        "--naive-seconds", type=float, help="cap on the naive consumer's run (quick 10, default 20)"
    )
    p.add_argument(
        "--latency-rate", type=float, default=3000.0, help="offered rate of the latency run (default 3000)"
    )
    p.add_argument(
        "--latency-seconds", type=float, help="duration of the fixed-rate latency run (quick 10, default 20)"
    )
    p.add_argument(
        "--latency-full-count", type=int, help="transactions of the full-speed latency run, 0 to skip"
    )
    p.add_argument(
        "--latency-floor-seconds",
        type=float,
        help="duration of the Kafka-only latency floor run at --latency-rate, 0 to skip (quick 5, default 10)",
    )
    p.add_argument("--scale-count", type=int, help="transactions per scaling run (quick 100k, default 200k)")
    p.add_argument("--scale-repeat", type=int, help="repeats of the scaling section (quick 1, default 2)")
    p.add_argument(
        "--long-count",
        type=int,
        default=10_000_000,
        # The size: the rate over the last million against the first shows whether the
        # tables' growth slows the consumer, and a leak would have to show in the long second
        # half. The producer's pool is sized to it (bench.context.accounts_for).
        help="transactions of the --long run (default 10,000,000)",
    )
    p.add_argument(
        "--long-warmup",
        type=int,
        default=2_000_000,
        # A consumer that has run for a day meets full account windows. From empty ones its first
        # million costs the rules far less than any later one, so a first/last ratio over the
        # whole run mixes that warm-up into the tables' growth. The run produces and consumes
        # these first; both ratios are reported.
        help="transactions the --long run stores before its --long-count, so that its first/last "
        "million ratio starts from full account windows (default 2,000,000; 0: from empty)",
    )
    p.add_argument(
        "--sections",
        default=",".join(DEFAULT_SECTIONS),
        help=f"which to run, of {','.join(SECTION_NAMES)} (default {','.join(DEFAULT_SECTIONS)})",
    )
    p.add_argument(
        "--profile-count",
        type=int,
        default=100_000,
        help="transactions of the profile section (where one consumer's CPU goes; default 100,000)",
    )
    p.add_argument(
        "--warm",
        type=int,
        default=0,
        metavar="N",
        help="profile section: also break the rules stage down over warm account windows, after N "
        "messages of the --long run's account pool (2000000 fills them as in its later tenths; "
        "~6 minutes, no Kafka, no SQL), beside the same stream's first messages from empty windows "
        "(default 0: off)",
    )
    p.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    p.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results", help="results folder"
    )
    p.add_argument(
        "--state-dir", type=Path, help="bench stack state dir (default ~/.cache/txmon/bench-stack)"
    )
    p.add_argument("--zk-port", type=int, default=harness.BENCH_PORTS["zk_port"])
    p.add_argument("--kafka-port", type=int, default=harness.BENCH_PORTS["kafka_port"])
    p.add_argument("--pg-port", type=int, default=harness.BENCH_PORTS["pg_port"])
    p.add_argument(
        "--keep-stack", action="store_true", help="leave a stack this run started running (faster reruns)"
    )
    p.add_argument(
        "--keep-data", action="store_true", help="keep the run's databases and topics for inspection"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="run the throughput and latency consumers under pyinstrument (reports in the logs folder; "
        "their figures come out lower)",
    )
    return p


def resolve_params(args: argparse.Namespace) -> dict[str, Any]:
    """Fill unset flags from the mode's preset; returns the parameters recorded in the result."""
    mode = "quick" if args.quick else "default"
    for key, value in PRESETS[mode].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTION_NAMES)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTION_NAMES)}")
    args.sections = sections
    return {
        "mode": mode,
        "long": args.long,
        "sections": sections,
        **{k: getattr(args, k) for k in PRESETS[mode]},
        "latency_rate": args.latency_rate,
        "long_count": args.long_count if args.long else None,
        "long_warmup": args.long_warmup if args.long else None,
        "profile_count": args.profile_count if "profile" in sections else None,
        "warm": args.warm if "profile" in sections else None,
        "seed": args.seed,
        "profile": args.profile,
        "consumer_max_idle_seconds": float(CONSUMER_IDLE_S),
        "consumer_max_poll_records": Settings().consumer.max_poll_records,
        "scaling_session_timeout_ms": SCALING_SESSION_TIMEOUT_MS,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    params = resolve_params(args)
    configure_logging("INFO", "text")
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    run_id = f"{stamp.lower()[2:15]}{secrets.token_hex(2)}"
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / f"{stamp}-logs"
    t0 = time.time()

    services = harness.open_services(
        args.state_dir, {"zk_port": args.zk_port, "kafka_port": args.kafka_port, "pg_port": args.pg_port}
    )
    sections: dict[str, Any] = {}
    errors: list[str] = []
    try:
        machine = harness.machine_info(services)
        ws = Workspace(services, run_id, keep=args.keep_data)
        ctx = Context(args, services, ws, logs)
        steps: list[tuple[str, Callable[[Context], dict[str, Any]]]] = [
            ("throughput", section_throughput),
            ("latency", section_latency),
            ("scaling", section_scaling),
            ("profile", section_profile),
        ]
        try:
            for name, fn in steps:
                if name not in args.sections:
                    continue
                t = time.monotonic()
                try:
                    sections[name] = fn(ctx)
                except Exception as exc:
                    log.exception("section %s failed", name)
                    sections[name] = {"error": repr(exc)}
                if "error" in sections[name]:
                    errors.append(f"{name}: {sections[name]['error']}")
                sections[name]["seconds"] = round(time.monotonic() - t, 1)
                log.info("section %s done in %.0fs", name, time.monotonic() - t)
            memory: dict[str, Any] = {"runs": ctx.memory}
            if args.long:
                try:
                    memory["long"] = section_long(ctx)
                except Exception as exc:
                    log.exception("long run failed")
                    memory["error"] = repr(exc)
                    errors.append(f"memory: {exc!r}")
            memory["series"] = ctx.rss_series
            sections["memory"] = memory
        finally:
            ws.close()
    finally:
        harness.close_services(services, keep=args.keep_stack)

    machine["loadavg_end"] = round(os.getloadavg()[0], 2)
    per_repeat = merge_repeats(
        sections.get("throughput", {}).get("per_repeat", []),
        sections.get("scaling", {}).get("per_repeat", []),
    )
    doc = stats.build_document(
        started_at=started.isoformat(timespec="seconds"),
        mode=params["mode"],
        elapsed_s=time.time() - t0,
        params=params,
        machine=machine,
        sections=sections,
        ratios=stats.median_ratio_table(per_repeat),
        errors=errors,
        warnings=stats.collect_warnings(sections),
    )
    png_path = args.out / f"{stamp}.png"
    chart = f", {png_path}"
    try:
        from bench.plot import write_chart

        write_chart(doc, png_path)
    except Exception as exc:  # a chart must not cost the figures
        log.exception("chart failed")
        chart = ""
        doc["errors"].append(f"chart: {exc!r}")
    json_path = args.out / f"{stamp}.json"
    text = json.dumps(doc, indent=2, default=str)
    json_path.write_text(text)
    (args.out / "latest.json").write_text(text)
    print(stats.format_table(doc))
    if "stages" in sections.get("profile", {}):
        print(format_profile(sections["profile"]))
    print(f"results: {json_path}{chart}; logs: {logs}")
    return 1 if doc["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
