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
import dataclasses
import json
import logging
import math
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
from bench.harness import Child, Sampler, Services, Workspace
from producer.generator import Clock
from producer.transaction_producer import ProducerSummary, run_producer
from utils.config import Settings
from utils.logs import configure_logging

log = logging.getLogger("bench")

SECTION_NAMES = ("throughput", "latency", "scaling")
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
SCALING = ((1, 6), (2, 6), (4, 6), (1, 3), (1, 1))  # (consumers, partitions)
CONSUMER_IDLE_S = "2"
SCALING_SESSION_TIMEOUT_MS = 60_000


@dataclasses.dataclass
class Context:
    args: argparse.Namespace
    services: Services
    ws: Workspace
    logs: Path
    rss_series: dict[str, list[list[float]]] = dataclasses.field(default_factory=dict)
    scale_round: int = 0  # the scaling repeat running now (log file names)
    memory: dict[str, Any] = dataclasses.field(default_factory=dict)

    def profile_path(self, name: str) -> Path | None:
        """Where a profiled consumer writes its pyinstrument report (None without --profile)."""
        return self.logs / f"{name}.pyinstrument.txt" if self.args.profile else None

    def series(self, name: str, samples: list[tuple[float, int]]) -> None:
        """Keep an RSS time series (seconds from the child's first sample, MB) for the chart and JSON."""
        if samples:
            t_first = samples[0][0]
            self.rss_series[name] = [[round(t - t_first, 2), round(r / 2**20, 1)] for t, r in samples]


# ------------------------------------------------------------------------------------ helpers


def _produce(
    settings: Settings, count: int, seed: int, *, rate: float = 0.0, clock: Clock = "simulated"
) -> ProducerSummary:
    summary = run_producer(settings, count=count, rate=rate, seed=seed, clock=clock, progress_seconds=3600)
    if summary.acked != count:
        raise RuntimeError(
            f"producer acked {summary.acked} of {count} (failed {summary.failed}, first error {summary.first_error})"
        )
    return summary


def _consume_timeout(count: int) -> float:
    return 120.0 + count / 1000.0  # generous: 1,000 tx/s would be a dramatic regression


def _consumer_figures(
    pg_stats: dict[str, Any], output: str, sampler: Sampler, pids: list[int], expected: int
) -> dict[str, Any]:
    """The figures of one consumer run, from the database (the summary line is a cross-check)."""
    summary = stats.parse_consumer_summary(output)
    count, groups = pg_stats["count"], pg_stats["groups"]
    window = stats.steady_window(groups)
    cpu_total = sum(sampler.cpu_total_s(p) for p in pids)
    out = {
        "stored": count,
        "expected": expected,
        "rate": stats.steady_rate(groups),
        "span_rate": stats.steady_rate(groups, 0.0, 1.0),
        "db_transactions": len(groups),
        "alerts": pg_stats["alerts"],
        "rejected": pg_stats["rejected"],
        "cpu_s_total": round(cpu_total, 2),
        "cpu_us_per_row": stats.cpu_us_per_row([sampler.cpu[p] for p in pids], window),
        # Rate in each tenth of the rows: does the consumer slow down as tables and state grow?
        "rate_by_tenth": [None if r is None else round(r) for r in stats.rate_profile(groups)],
        "summary": summary,
        # (seconds since the first commit, rows) per database transaction, for re-analysis.
        "commits": [[round(t - groups[0][0], 3), n] for t, n in groups] if len(groups) <= 5000 else None,
    }
    if count != expected:
        out["warning"] = f"stored {count} of {expected}"
    if summary is not None and summary["stored"] != count:
        out["summary_mismatch"] = f"summary says stored={summary['stored']}, database has {count}"
    return out


# ------------------------------------------------------------------------------------ sections


def throughput_once(ctx: Context, r: int) -> dict[str, Any]:
    """(a) produce, (b) the real consumer, (c) the naive consumer, (d) the stage ceilings: one topic."""
    a, ws, n = ctx.args, ctx.ws, ctx.args.count
    settings = ws.settings(f"tp{r}")
    out: dict[str, Any] = {"topic": settings.kafka.topic}
    try:
        log.info("[throughput %d] producing %d transactions (acks=all, simulated clock)", r, n)
        prod = _produce(settings, n, a.seed)
        out["produce"] = {"acked": prod.acked, "seconds": round(prod.elapsed_s, 2), "rate": prod.rate}

        log.info("[throughput %d] real consumer (child process, --max-idle-seconds %s)", r, CONSUMER_IDLE_S)
        child = Child.consumer(
            settings,
            ctx.logs / f"consumer-tp{r}.log",
            "--max-idle-seconds",
            CONSUMER_IDLE_S,
            profile=ctx.profile_path(f"consumer-tp{r}"),
        )
        with Sampler([child.pid], 0.5) as sampler:
            rc = child.wait(_consume_timeout(n))
        st = harness.stored_stats(settings.postgres)
        out["consumer"] = {"exit_code": rc, **_consumer_figures(st, child.output(), sampler, [child.pid], n)}
        samples = sampler.samples[child.pid]
        out["consumer"]["rss"] = stats.rss_summary(
            samples, (st["first"], st["last"]) if st["first"] else None
        )
        if r == 0:
            ctx.series("throughput, full speed", samples)
            ctx.memory["throughput, full speed"] = out["consumer"]["rss"]
        ws.drop_database(settings.postgres)

        log.info("[throughput %d] naive consumer (row + commit, at most %.0fs)", r, a.naive_seconds)
        naive_settings = dataclasses.replace(
            settings,
            postgres=ws.database(f"tp{r}-naive"),
            kafka=dataclasses.replace(
                settings.kafka, consumer_group=settings.kafka.consumer_group + "-naive"
            ),
        )
        child = Child.naive(
            naive_settings,
            ctx.logs / f"naive-tp{r}.log",
            "--max-messages", str(n), "--max-seconds", str(a.naive_seconds), "--max-idle-seconds", CONSUMER_IDLE_S,
        )  # fmt: skip
        rc = child.wait(a.naive_seconds + 120)
        st = harness.stored_stats(naive_settings.postgres)
        out["naive"] = {
            "exit_code": rc,
            "stored": st["count"],
            "rate": stats.steady_rate(st["groups"]),
            "span_rate": stats.span_rate(st["count"], st["first"] or 0, st["last"] or 0),
        }
        ws.drop_database(naive_settings.postgres)

        log.info("[throughput %d] Kafka read ceiling (kafka-python + orjson decode)", r)
        from bench import ceilings

        read = ceilings.kafka_read(settings, n)
        out["kafka_ceiling"] = {
            "messages": read.messages,
            "seconds": round(read.seconds, 3),
            "rate": read.rate,
        }
        txns = ceilings.parse_rows(settings, read.records)
        read.records.clear()
        log.info("[throughput %d] COPY ceiling (write_batch, %d rows, no Kafka)", r, len(txns))
        copy_settings = dataclasses.replace(settings, postgres=ws.database(f"tp{r}-copy"))
        out["copy_ceiling"] = ceilings.copy_ceiling(copy_settings, txns)
        ws.drop_database(copy_settings.postgres)
        log.info("[throughput %d] staging COPY ceiling (write_batch's idempotent fallback)", r)
        copy_settings = dataclasses.replace(settings, postgres=ws.database(f"tp{r}-stage"))
        out["staging_ceiling"] = ceilings.copy_ceiling(copy_settings, txns, direct=False)
        ws.drop_database(copy_settings.postgres)
    finally:
        ws.delete_topics([settings.kafka.topic, settings.kafka.dlq_topic])
    out["figures"] = {
        "produce": out.get("produce", {}).get("rate"),
        "consumer": out.get("consumer", {}).get("rate"),
        "consumer_span": out.get("consumer", {}).get("span_rate"),
        "consumer_summary": (out.get("consumer", {}).get("summary") or {}).get("rate"),
        "consumer_cpu_us_per_row": out.get("consumer", {}).get("cpu_us_per_row"),
        "consumer_first_tenth": (out.get("consumer", {}).get("rate_by_tenth") or [None])[0],
        "consumer_last_tenth": (out.get("consumer", {}).get("rate_by_tenth") or [None])[-1],
        "naive": out.get("naive", {}).get("rate"),
        "copy_ceiling": out.get("copy_ceiling", {}).get("rate"),
        "staging_ceiling": out.get("staging_ceiling", {}).get("rate"),
        "kafka_ceiling": out.get("kafka_ceiling", {}).get("rate"),
    }
    return out


def section_throughput(ctx: Context) -> dict[str, Any]:
    runs = []
    errors = []
    for r in range(ctx.args.repeat):
        try:
            runs.append(throughput_once(ctx, r))
        except Exception as exc:
            log.exception("throughput repeat %d failed", r)
            errors.append(f"repeat {r}: {exc!r}")
    keys = runs[0]["figures"].keys() if runs else ()
    figures = {k: stats.median_or_none(run["figures"][k] for run in runs) for k in keys}
    out: dict[str, Any] = {
        "repeats": len(runs),
        "figures": figures,
        "per_repeat": [run["figures"] for run in runs],
        "runs": runs,
        "slowest_stage": stats.bottleneck(
            {
                "Kafka read": figures.get("kafka_ceiling"),
                "COPY (write_batch)": figures.get("copy_ceiling"),
            }
        ),
    }
    if errors:
        out["error"] = "; ".join(errors)
    return out


def latency_once(ctx: Context, label: str, rate: float, count: int, accounts: int) -> dict[str, Any]:
    ws = ctx.ws
    settings = ws.settings(f"lat-{label}", accounts=accounts)
    out: dict[str, Any] = {
        "label": f"consumer @ {rate:,.0f}/s" if rate else "consumer @ full speed",
        "offered_rate": rate or None,
        "count": count,
        "accounts": accounts,
    }
    try:
        # The consumer runs first and waits; it is stopped (SIGTERM) once every row is stored.
        child = Child.consumer(
            settings,
            ctx.logs / f"consumer-lat-{label}.log",
            "--max-idle-seconds",
            "120",
            profile=ctx.profile_path(f"consumer-lat-{label}"),
        )
        with Sampler([child.pid], 0.5) as sampler:
            if not harness.wait_for_group(ws.admin, settings.kafka.consumer_group, 1, timeout=90):
                child.stop()
                child.wait(30)
                raise RuntimeError(f"the consumer did not join its group within 90 s (log: {child.log_path})")
            log.info("[latency %s] consumer joined; producing %d at %s (wall clock)", label, count,
                     f"{rate:,.0f}/s" if rate else "full speed")  # fmt: skip
            prod = _produce(settings, count, ctx.args.seed, rate=rate, clock="wall")
            stored = harness.wait_for_rows(
                settings.postgres, prod.acked, _consume_timeout(count), children=[child]
            )
            child.stop()
            rc = child.wait(60)
        values, excluded = harness.latencies(settings.postgres)
        st = harness.stored_stats(settings.postgres)
        out.update(
            {
                "exit_code": rc,
                "produce_rate": prod.rate,
                "stored": stored,
                "excluded_scenario_rows": excluded,
                "latency": stats.latency_summary(values),
                "consumer": _consumer_figures(st, child.output(), sampler, [child.pid], count),
            }
        )
        samples = sampler.samples[child.pid]
        out["rss"] = stats.rss_summary(samples, (st["first"], st["last"]) if st["first"] else None)
        name = f"latency, {rate:,.0f}/s" if rate else "latency, full speed"
        ctx.memory[name] = out["rss"]
        ctx.series(name, samples)
    finally:
        ws.release(settings)
    return out


def latency_floor_once(ctx: Context, rate: float, count: int, accounts: int) -> dict[str, Any]:
    """The same offered load read by bare kafka-python (bench/latency_floor.py): no DB, no rules."""
    ws = ctx.ws
    settings = ws.settings("lat-floor", accounts=accounts)
    out: dict[str, Any] = {
        "label": f"Kafka floor @ {rate:,.0f}/s",
        "offered_rate": rate,
        "count": count,
        "accounts": accounts,
    }
    try:
        child = Child.latency_floor(settings, ctx.logs / "latency-floor.log", "--count", str(count))
        if not child.wait_for_output("ready", 60):
            child.stop()
            child.wait(10)
            raise RuntimeError(f"the latency probe did not start (log: {child.log_path})")
        prod = _produce(settings, count, ctx.args.seed, rate=rate, clock="wall")
        rc = child.wait(_consume_timeout(count))
        line = [x for x in child.output().splitlines() if x.startswith("latency floor: ")]
        if not line:
            raise RuntimeError(f"the latency probe printed no result (exit {rc}, log: {child.log_path})")
        result = json.loads(line[-1].split(": ", 1)[1])
        out.update(
            {
                "exit_code": rc,
                "produce_rate": prod.rate,
                "stored": result.pop("messages"),
                "latency": result,
            }
        )
    finally:
        ws.release(settings)
    return out


def section_latency(ctx: Context) -> dict[str, Any]:
    a = ctx.args
    # Enough accounts that wall-clock traffic stays near 2 txns per account per minute, as the
    # producer advises: otherwise the velocity rule fires on nearly every row and the latency
    # measured is that of writing alerts.
    accounts = max(1000, math.ceil(60 * a.latency_rate / 2))
    runs = []
    errors = []
    plan: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    fixed = int(a.latency_rate * a.latency_seconds)
    if fixed > 0:
        plan.append(
            (f"{a.latency_rate:.0f}/s", lambda: latency_once(ctx, "fixed", a.latency_rate, fixed, accounts))
        )
    if a.latency_full_count > 0:
        plan.append(("full speed", lambda: latency_once(ctx, "full", 0.0, a.latency_full_count, accounts)))
    floor = int(a.latency_rate * a.latency_floor_seconds)
    if floor > 0:
        plan.append(("Kafka floor", lambda: latency_floor_once(ctx, a.latency_rate, floor, accounts)))
    for label, fn in plan:
        try:
            runs.append(fn())
        except Exception as exc:
            log.exception("latency run %s failed", label)
            errors.append(f"{label}: {exc!r}")
            runs.append({"label": label, "error": repr(exc)})
    out: dict[str, Any] = {"runs": runs, "accounts": accounts}
    if errors:
        out["error"] = "; ".join(errors)
    return out


def section_long(ctx: Context) -> dict[str, Any]:
    """--long: one consumer over `--long-count` transactions, RSS every second."""
    ws, n = ctx.ws, ctx.args.long_count
    settings = ws.settings("long")
    try:
        log.info("[long] producing %d transactions", n)
        prod = _produce(settings, n, ctx.args.seed)
        log.info("[long] consuming them (RSS sampled every second)")
        child = Child.consumer(
            settings, ctx.logs / "consumer-long.log", "--max-idle-seconds", CONSUMER_IDLE_S
        )
        with Sampler([child.pid], 1.0) as sampler:
            rc = child.wait(_consume_timeout(n) + 600)
        st = harness.stored_stats(settings.postgres)
        samples = sampler.samples[child.pid]
        rss = stats.rss_summary(samples, (st["first"], st["last"]) if st["first"] else None)
        ctx.memory[f"long ({n:,})"] = rss
        ctx.series(f"long ({n:,})", samples)
        return {
            "count": n,
            "produce_rate": prod.rate,
            "exit_code": rc,
            "consumer": _consumer_figures(st, child.output(), sampler, [child.pid], n),
            "rss": rss,
        }
    finally:
        ws.release(settings)


def scaling_once(ctx: Context, consumers: int, partitions: int) -> dict[str, Any]:
    """K consumers in one group on a P-partition topic.

    Started one after another on a 2-core box, the first consumer would drain a pre-produced
    topic before the last one has even joined. So the consumers start on the empty topic, and
    once the group is stable with every member holding partitions they are frozen (SIGSTOP),
    the N transactions are produced, and they are thawed (SIGCONT) all at once; SIGTERM stops
    them once every row is stored. The session timeout is raised to 60 s so that the frozen
    members stay in the group.
    """
    ws, n = ctx.ws, ctx.args.scale_count
    settings = ws.settings(f"sc-c{consumers}p{partitions}", partitions=partitions)
    settings = dataclasses.replace(
        settings,
        consumer=dataclasses.replace(settings.consumer, session_timeout_ms=SCALING_SESSION_TIMEOUT_MS),
    )
    out: dict[str, Any] = {"consumers": consumers, "partitions": partitions, "count": n}
    children: list[Child] = []
    try:
        log.info("[scaling] %d consumer(s) on %d partitions, %d transactions", consumers, partitions, n)
        children = [
            Child.consumer(
                settings,
                ctx.logs / f"consumer-sc-r{ctx.scale_round}-c{consumers}p{partitions}-{i}.log",
                "--max-idle-seconds",
                "300",
            )
            for i in range(consumers)
        ]
        with Sampler([c.pid for c in children], 0.25) as sampler:
            group = settings.kafka.consumer_group
            if not harness.wait_for_group(ws.admin, group, min(consumers, partitions), timeout=120):
                raise RuntimeError(f"{consumers} consumers did not form a stable group within 120 s")
            for c in children:
                c.pause()
            _produce(settings, n, ctx.args.seed)
            for c in children:
                c.resume()
            stored = harness.wait_for_rows(
                settings.postgres, n, _consume_timeout(n), children=children, interval=1.0
            )
            for c in children:
                c.stop()
            codes = [c.wait(60) for c in children]
        st = harness.stored_stats(settings.postgres)
        figures = _consumer_figures(st, "", sampler, [c.pid for c in children], n)
        per_child = [stats.parse_consumer_summary(c.output()) for c in children]
        out.update(
            {
                "exit_codes": codes,
                **{
                    k: figures[k]
                    for k in ("stored", "rate", "span_rate", "db_transactions", "cpu_us_per_row")
                },
                "peak_rss_mb": sampler.peak_mb(),
                "per_consumer_stored": [s["stored"] if s else None for s in per_child],
            }
        )
        if stored != n:
            out["warning"] = f"stored {stored} of {n}"
    finally:
        for c in children:  # never leave a frozen child behind
            c.resume()
            c.stop()
            c.wait(30)
        ws.release(settings)
    return out


def section_scaling(ctx: Context) -> dict[str, Any]:
    """Every configuration once per repeat, interleaved, so a noisy minute hits all of them."""
    runs = []
    errors = []
    for r in range(ctx.args.scale_repeat):
        ctx.scale_round = r
        for consumers, partitions in SCALING:
            try:
                run = scaling_once(ctx, consumers, partitions)
            except Exception as exc:
                log.exception("scaling run %dc/%dp failed", consumers, partitions)
                errors.append(f"{consumers}c/{partitions}p: {exc!r}")
                run = {"consumers": consumers, "partitions": partitions, "rate": None, "error": repr(exc)}
            runs.append({"repeat": r, **run})
    summary = []
    for consumers, partitions in SCALING:
        mine = [x for x in runs if (x["consumers"], x["partitions"]) == (consumers, partitions)]
        summary.append(
            {
                "consumers": consumers,
                "partitions": partitions,
                "rate": stats.median_or_none(x.get("rate") for x in mine),
                "rates": [x.get("rate") for x in mine],
                "cpu_us_per_row": stats.median_or_none(x.get("cpu_us_per_row") for x in mine),
                "peak_rss_mb": max((x.get("peak_rss_mb") or 0 for x in mine), default=None),
            }
        )
    per_repeat = [
        scaling_figures([x for x in runs if x["repeat"] == r]) for r in range(ctx.args.scale_repeat)
    ]
    out: dict[str, Any] = {
        "repeats": ctx.args.scale_repeat,
        "summary": summary,
        "per_repeat": per_repeat,
        "runs": runs,
    }
    if errors:
        out["error"] = "; ".join(errors)
    return out


def scaling_figures(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    by = {(r["consumers"], r["partitions"]): r.get("rate") for r in runs}
    return {
        "scale_c1": by.get((1, 6)),
        "scale_c2": by.get((2, 6)),
        "scale_c4": by.get((4, 6)),
        "scale_p3": by.get((1, 3)),
        "scale_p1": by.get((1, 1)),
    }


def merge_repeats(*families: list[dict[str, float | None]]) -> list[dict[str, float | None]]:
    """Repeat i of every family in one dict (ratios are taken within a repeat, then the median)."""
    n = max((len(f) for f in families), default=0)
    merged = []
    for i in range(n):
        d: dict[str, float | None] = {}
        for f in families:
            if i < len(f):
                d.update(f[i])
        merged.append(d)
    return merged or [{}]


# ------------------------------------------------------------------------------------ main


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
        default=3_000_000,
        # At ~40k tx/s a million rows is 25 s, most of it the allocator's climb to its plateau;
        # three million leave a long second half in which a leak would have to show.
        help="transactions of the --long run (default 3,000,000)",
    )
    p.add_argument(
        "--sections",
        default=",".join(SECTION_NAMES),
        help=f"which to run (default {','.join(SECTION_NAMES)})",
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
    print(f"results: {json_path}{chart}; logs: {logs}")
    return 1 if doc["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
