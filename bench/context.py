"""What every benchmark section shares: the run's context, producing a seeded stream, and the
figures of one consumer run (read from the database, not from the consumer's own log)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any

from bench import stats
from bench.harness import Sampler, Services, Workspace, stack_processes
from producer.generator import MAX_LEAD, Clock, TransactionGenerator
from producer.pool import AccountPool
from producer.transaction_producer import ProducerSummary, run_producer
from utils.config import Settings

log = logging.getLogger("bench")

CONSUMER_IDLE_S = "2"
SCALING_SESSION_TIMEOUT_MS = 60_000
# Room left between the simulated clock and the present at the end of a run: the pool's rate is
# an average over the day's waking hours, and incidents add messages on top of it.
SIMULATED_HEADROOM = 1.3


@dataclasses.dataclass
class Context:
    args: argparse.Namespace
    services: Services
    ws: Workspace
    logs: Path
    rss_series: dict[str, list[list[float]]] = dataclasses.field(default_factory=dict)
    scale_round: int = 0  # the scaling repeat running now (log file names)
    memory: dict[str, Any] = dataclasses.field(default_factory=dict)

    def sampler(self, pids: list[int], interval: float) -> Sampler:
        """RSS and CPU of `pids`, and the CPU of the stack's servers and of the machine (the budget)."""
        return Sampler(pids, interval, groups=stack_processes(self.services))

    def profile_path(self, name: str) -> Path | None:
        """Where a profiled consumer writes its pyinstrument report (None without --profile)."""
        return self.logs / f"{name}.pyinstrument.txt" if self.args.profile else None

    def series(self, name: str, samples: list[tuple[float, int]]) -> None:
        """Keep an RSS time series (seconds from the child's first sample, MB) for the chart and JSON."""
        if samples:
            t_first = samples[0][0]
            self.rss_series[name] = [[round(t - t_first, 2), round(r / 2**20, 1)] for t, r in samples]


def accounts_for(count: int, settings: Settings) -> int:
    """Accounts a simulated run of `count` messages needs on a fresh topic so that its clock, which
    starts PRODUCER_DAYS_BACK ago, stays behind the present: each account makes its own natural
    rate of events, so a pool too small for the count reaches the present and would then send at
    real pace (1,000 accounts over 7 days: about 610,000 messages). Never fewer than the
    settings' pool, so the usual counts keep the usual workload."""
    ps = settings.producer
    pool = AccountPool.create(ps.accounts, ps.account_seed)
    per_account = TransactionGenerator(0, pool, ps.fraud_rate).natural_rate / ps.accounts  # events/s
    span_s = ps.days_back * 86400.0 - MAX_LEAD.total_seconds()
    if span_s <= 0:
        return ps.accounts
    return max(ps.accounts, math.ceil(count * SIMULATED_HEADROOM / (per_account * span_s)))


def produce(
    settings: Settings, count: int, seed: int, *, rate: float = 0.0, clock: Clock = "simulated"
) -> ProducerSummary:
    """Produce `count` seeded messages. Simulated clock: the pool is sized to the count
    (`accounts_for`), and a producer that would still have to wait for the present raises
    CaughtUpWithPresent rather than go on at real pace."""
    if clock == "simulated":
        accounts = accounts_for(count, settings)
        if accounts != settings.producer.accounts:
            log.info("%d messages on the simulated clock: %d accounts (from %d)", count, accounts,
                     settings.producer.accounts)  # fmt: skip
            settings = dataclasses.replace(
                settings, producer=dataclasses.replace(settings.producer, accounts=accounts)
            )
    summary = run_producer(
        settings, count=count, rate=rate, seed=seed, clock=clock, progress_seconds=3600, pace=False
    )
    if summary.acked != count:
        raise RuntimeError(
            f"producer acked {summary.acked} of {count} (failed {summary.failed}, first error {summary.first_error})"
        )
    return summary


def consume_timeout(count: int) -> float:
    return 120.0 + count / 1000.0  # generous: 1,000 tx/s would be a dramatic regression


def consumer_figures(
    pg_stats: dict[str, Any], output: str, sampler: Sampler, pids: list[int], expected: int
) -> dict[str, Any]:
    """The figures of one consumer run, from the database (the summary line is a cross-check)."""
    summary = stats.parse_consumer_summary(output)
    count, groups = pg_stats["count"], pg_stats["groups"]
    window = stats.steady_window(groups)
    cpu_total = sum(sampler.cpu_total_s(p) for p in pids)
    # Every process the rows pass through, for the CPU budget: each consumer and the stack's servers.
    pipeline = {
        ("consumer" if len(pids) == 1 else f"consumer-{i + 1}"): sampler.cpu[p] for i, p in enumerate(pids)
    }
    pipeline.update({k: v for k, v in sampler.group_cpu.items() if k != "machine"})
    machine = sampler.group_cpu.get("machine")
    cores = os.cpu_count() or 1
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
        # Per row, each process's CPU over the steady window, and the rate it bounds on this box.
        "cpu_budget": stats.cpu_budget(pipeline, machine, window, cores),
        "cpu_budget_by_tenth": stats.cpu_budget_by_part(groups, pipeline, machine, cores),
        "summary": summary,
        # (seconds since the first commit, rows) per database transaction, for re-analysis.
        "commits": [[round(t - groups[0][0], 3), n] for t, n in groups] if len(groups) <= 5000 else None,
    }
    if count != expected:
        out["warning"] = f"stored {count} of {expected}"
    if summary is not None and summary["stored"] != count:
        out["summary_mismatch"] = f"summary says stored={summary['stored']}, database has {count}"
    return out
