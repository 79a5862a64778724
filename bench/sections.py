"""The benchmark's measurements: throughput (with the naive consumer and the stage ceilings as
baselines), latency at a fixed offered rate against a Kafka-only floor, memory over a long run,
and scaling with consumers and partitions. bench/run.py runs them and writes the results."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import harness, stats
from bench.context import (
    CONSUMER_IDLE_S,
    SCALING_SESSION_TIMEOUT_MS,
    Context,
    accounts_for,
    consume_timeout,
    consumer_figures,
    produce,
)
from bench.harness import Child

log = logging.getLogger("bench")

SCALING = ((1, 6), (2, 6), (4, 6), (1, 3), (1, 1))  # (consumers, partitions)


def throughput_once(ctx: Context, r: int) -> dict[str, Any]:
    """(a) produce, (b) the real consumer, (c) the naive consumer, (d) the stage ceilings: one topic."""
    a, ws, n = ctx.args, ctx.ws, ctx.args.count
    settings = ws.settings(f"tp{r}")
    out: dict[str, Any] = {"topic": settings.kafka.topic}
    try:
        log.info("[throughput %d] producing %d transactions (acks=all, simulated clock)", r, n)
        prod = produce(settings, n, a.seed)
        out["produce"] = {"acked": prod.acked, "seconds": round(prod.elapsed_s, 2), "rate": prod.rate}

        log.info("[throughput %d] real consumer (child process, --max-idle-seconds %s)", r, CONSUMER_IDLE_S)
        child = Child.consumer(
            settings,
            ctx.logs / f"consumer-tp{r}.log",
            "--max-idle-seconds",
            CONSUMER_IDLE_S,
            profile=ctx.profile_path(f"consumer-tp{r}"),
        )
        with ctx.sampler([child.pid], 0.5) as sampler:
            rc = child.wait(consume_timeout(n))
        st = harness.stored_stats(settings.postgres)
        out["consumer"] = {"exit_code": rc, **consumer_figures(st, child.output(), sampler, [child.pid], n)}
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
        log.info("[throughput %d] psql COPY ceiling (\\copy of the same rows from a file)", r)
        copy_settings = dataclasses.replace(settings, postgres=ws.database(f"tp{r}-psql"))
        out["psql_copy_ceiling"] = ceilings.psql_copy_ceiling(copy_settings, txns)
        ws.drop_database(copy_settings.postgres)
    finally:
        ws.delete_topics([settings.kafka.topic, settings.kafka.dlq_topic])
    out["figures"] = {
        "produce": out.get("produce", {}).get("rate"),
        "consumer": out.get("consumer", {}).get("rate"),
        "consumer_span": out.get("consumer", {}).get("span_rate"),
        "consumer_summary": (out.get("consumer", {}).get("summary") or {}).get("rate"),
        "consumer_cpu_us_per_row": out.get("consumer", {}).get("cpu_us_per_row"),
        # the rate the pipeline's CPU per row (consumer + broker + ZooKeeper + PostgreSQL) bounds
        "consumer_cpu_ceiling": (out.get("consumer", {}).get("cpu_budget") or {}).get("ceiling"),
        "consumer_first_tenth": (out.get("consumer", {}).get("rate_by_tenth") or [None])[0],
        "consumer_last_tenth": (out.get("consumer", {}).get("rate_by_tenth") or [None])[-1],
        "naive": out.get("naive", {}).get("rate"),
        "copy_ceiling": out.get("copy_ceiling", {}).get("rate"),
        "staging_ceiling": out.get("staging_ceiling", {}).get("rate"),
        "psql_copy_ceiling": out.get("psql_copy_ceiling", {}).get("rate"),
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


def latency_once(
    ctx: Context,
    label: str,
    rate: float,
    count: int,
    accounts: int,
    tree: Path = harness.REPO,
    *,
    probe: bool = True,
) -> dict[str, Any]:
    """The consumer of `tree` (bench.ab --latency-rate: another revision's) at an offered rate.

    `probe`: bench/latency_floor.py reads the same topic at the same time, without a group (the
    "same-run floor"): it sees the producer and the broker as busy as the consumer sees them,
    which the floor measured in a run of its own (latency_floor_once) does not. Its per-message
    receive times are joined with the consumer's rows (`beside_probe`): what the consumer adds
    to each message over a bare reader of it."""
    ws = ctx.ws
    pg = ws.database(f"lat-{label}", tree / "utils" / "migrations")
    # LogAppendTime: the probe can tell the time before the broker had a message from the time
    # after (stats.probe_split). The consumer checks event times against either kind of stamp.
    settings = ws.settings(f"lat-{label}", accounts=accounts, pg=pg, append_time=True)
    out: dict[str, Any] = {
        "label": f"consumer @ {rate:,.0f}/s" if rate else "consumer @ full speed",
        "offered_rate": rate or None,
        "count": count,
        "accounts": accounts,
    }
    try:
        # The consumer runs first and waits; it is stopped (SIGTERM) once every row is stored.
        # It records where each batch's time goes (consumer/timings.py) and writes it at exit.
        timings_path = ctx.logs / f"consumer-lat-{label}.timings.json"
        script = (tree / "consumer" / "transaction_processor.py").read_text()
        timed = ("--timings-json", str(timings_path)) if "--timings-json" in script else ()
        child = Child.consumer(
            settings,
            ctx.logs / f"consumer-lat-{label}.log",
            "--max-idle-seconds",
            "120",
            *timed,
            profile=ctx.profile_path(f"consumer-lat-{label}"),
            tree=tree,
        )
        with ctx.sampler([child.pid], 0.5) as sampler:
            if not harness.wait_for_group(ws.admin, settings.kafka.consumer_group, 1, timeout=90):
                child.stop()
                child.wait(30)
                raise RuntimeError(f"the consumer did not join its group within 90 s (log: {child.log_path})")
            prober = None
            dump = ctx.logs / f"latency-probe-{label}.txt"
            if probe:
                prober = Child.latency_floor(
                    settings,
                    ctx.logs / f"latency-probe-{label}.log",
                    "--count",
                    str(count),
                    "--dump",
                    str(dump),
                )
                if not prober.wait_for_output("ready", 60):
                    log.warning(
                        "[latency %s] the same-run probe did not start (log: %s)", label, prober.log_path
                    )
                    prober.stop()
                    prober.wait(10)
                    prober = None
            log.info("[latency %s] consumer joined; producing %d at %s (wall clock)", label, count,
                     f"{rate:,.0f}/s" if rate else "full speed")  # fmt: skip
            prod = produce(settings, count, ctx.args.seed, rate=rate, clock="wall")
            stored = harness.wait_for_rows(
                settings.postgres, prod.acked, consume_timeout(count), children=[child]
            )
            child.stop()
            rc = child.wait(60)
            if prober is not None:
                prober.wait(30)
        values, excluded = harness.latencies(settings.postgres)
        committed = harness.latencies(settings.postgres, at="commit")[0]
        st = harness.stored_stats(settings.postgres)
        rows = harness.row_times(settings.postgres)
        out["by_slice"] = stats.latency_by_slice(
            [(r[2], (r[4] if r[4] is not None else r[3]) - r[2]) for r in rows]
        )
        if prober is not None and dump.exists():
            probed = stats.parse_probe_dump(dump.read_text())
            out["probe_split"] = stats.probe_split(probed)
            out["same_run_floor"] = stats.beside_probe(
                [(r[0], r[1], r[2], r[4] if r[4] is not None else r[3]) for r in rows], probed
            )
        out.update(
            {
                "exit_code": rc,
                "produce_rate": prod.rate,
                "stored": stored,
                "excluded_scenario_rows": excluded,
                "latency": stats.latency_summary(values),
                # The same rows at their transaction's COMMIT (when a reader can see them), where
                # the server tracks commit timestamps; processed_at is stamped during the COPY.
                "latency_at_commit": stats.latency_summary(committed) if committed else None,
                "timings": json.loads(timings_path.read_text()) if timings_path.exists() else None,
                "consumer": consumer_figures(st, child.output(), sampler, [child.pid], count),
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


def latency_floor_once(
    ctx: Context, rate: float, count: int, accounts: int, log_name: str = "latency-floor"
) -> dict[str, Any]:
    """The same offered load read by bare kafka-python (bench/latency_floor.py): no DB, no rules."""
    ws = ctx.ws
    settings = ws.settings("lat-floor", accounts=accounts, append_time=True)
    out: dict[str, Any] = {
        "label": f"Kafka floor @ {rate:,.0f}/s (separate run)",
        "offered_rate": rate,
        "count": count,
        "accounts": accounts,
    }
    try:
        dump = ctx.logs / f"{log_name}.txt"
        child = Child.latency_floor(
            settings, ctx.logs / f"{log_name}.log", "--count", str(count), "--dump", str(dump)
        )
        if not child.wait_for_output("ready", 60):
            child.stop()
            child.wait(10)
            raise RuntimeError(f"the latency probe did not start (log: {child.log_path})")
        prod = produce(settings, count, ctx.args.seed, rate=rate, clock="wall")
        rc = child.wait(consume_timeout(count))
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
        if dump.exists():
            out["probe_split"] = stats.probe_split(stats.parse_probe_dump(dump.read_text()))
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
    """--long: one consumer over `--long-warmup` then `--long-count` transactions of one stream,
    RSS every second. The rates, tenths and CPU are those of the `--long-count` after the warm-up
    (full account windows, as in a deployment that has run for a day); the first/last million of
    the whole run, from empty windows, is reported beside them."""
    ws, n, warmup = ctx.ws, ctx.args.long_count, max(0, ctx.args.long_warmup)
    total = warmup + n
    settings = ws.settings("long")
    try:
        log.info("[long] producing %d transactions (%d of warm-up, then the %d measured)", total, warmup, n)
        prod = produce(settings, total, ctx.args.seed)
        log.info("[long] consuming them (RSS sampled every second)")
        child = Child.consumer(
            settings, ctx.logs / "consumer-long.log", "--max-idle-seconds", CONSUMER_IDLE_S
        )
        with ctx.sampler([child.pid], 1.0) as sampler:
            rc = child.wait(consume_timeout(total) + 600)
        st = harness.stored_stats(settings.postgres)
        samples = sampler.samples[child.pid]
        rss = stats.rss_summary(samples, (st["first"], st["last"]) if st["first"] else None)
        ctx.memory[f"long ({n:,})"] = rss
        ctx.series(f"long ({n:,})", samples)
        measured = stats.after_rows(st["groups"], warmup)
        edges = stats.edge_rates(st["groups"], after=warmup)
        from_empty = stats.edge_rates(st["groups"])
        log.info("[long] after %d rows of warm-up: first %d rows %s tx/s, last %s tx/s: %s "
                 "(from empty windows: %s)", warmup, edges["rows"], stats.fmt_rate(edges["first"]),
                 stats.fmt_rate(edges["last"]), stats.fmt_ratio(edges["last_over_first"]),
                 stats.fmt_ratio(from_empty["last_over_first"]))  # fmt: skip
        return {
            "count": n,
            "warmup": warmup,
            "accounts": accounts_for(total, settings),
            "produce_rate": prod.rate,
            "produce_seconds": round(prod.elapsed_s, 1),
            "exit_code": rc,
            "consumer": consumer_figures(
                {**st, "groups": measured}, child.output(), sampler, [child.pid], total
            ),
            "first_last_million": edges,
            "first_last_million_from_empty": from_empty,
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
        with ctx.sampler([c.pid for c in children], 0.25) as sampler:
            group = settings.kafka.consumer_group
            if not harness.wait_for_group(
                ws.admin, group, min(consumers, partitions), timeout=120, partitions=partitions
            ):
                raise RuntimeError(f"{consumers} consumers did not form a stable group within 120 s")
            for c in children:
                c.pause()
            produce(settings, n, ctx.args.seed)
            for c in children:
                c.resume()
            stored = harness.wait_for_rows(
                settings.postgres, n, consume_timeout(n), children=children, interval=1.0
            )
            for c in children:
                c.stop()
            codes = [c.wait(60) for c in children]
        st = harness.stored_stats(settings.postgres)
        figures = consumer_figures(st, "", sampler, [c.pid for c in children], n)
        per_child = [stats.parse_consumer_summary(c.output()) for c in children]
        out.update(
            {
                "exit_codes": codes,
                **{
                    k: figures[k]
                    for k in (
                        "stored",
                        "rate",
                        "span_rate",
                        "db_transactions",
                        "cpu_us_per_row",
                        "cpu_budget",
                    )
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
                # the CPU budget of the run with the median rate (the last one if there are two)
                "cpu_budget": _median_run(mine).get("cpu_budget"),
                "per_consumer_stored": _median_run(mine).get("per_consumer_stored"),
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


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rated = sorted((x for x in runs if x.get("rate") is not None), key=lambda x: x["rate"])
    return rated[len(rated) // 2] if rated else {}


def scaling_figures(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    by = {(r["consumers"], r["partitions"]): r.get("rate") for r in runs}
    c2 = next((r for r in runs if (r["consumers"], r["partitions"]) == (2, 6)), {})
    return {
        "scale_c2_ceiling": (c2.get("cpu_budget") or {}).get("ceiling"),
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
