"""The consumer's pure per-message path over warm account windows, stage by stage and rule by rule,
with no Kafka and no PostgreSQL (no stack needed: ~3-5 minutes at the defaults).

    python -m bench.warm [--warm 2000000] [--count 50000] [--rounds 3] [--json out.json]

The producer's stream with the `--long` run's account pool (`bench.context.accounts_for`: 21,653
accounts for 10,000,000) is made in this process as Kafka-like records (`bench.profile.generated`).
The first `--count` messages are kept (cold), `--warm` messages go through validation, the rules
and the account windows untimed, so that the windows are at their bound as in a long run's later
tenths, and the next `--count` messages are kept (warm). Then, for cold (fresh windows) and warm
(a copy of the warm windows each pass, `bench.profile.clone_states`), best of `--rounds` passes
with the collector off:

* the whole pure path per polled batch, each stage timed with the thread's CPU clock: JSON
  decoding (msgspec, what validation starts with), validation (without the decoding), the rules
  and the windows (`evaluate_batch` + `trim`), building the COPY data (`storage.copy_rows`);
* the rules stage with no rule (the windows' upkeep, the dispatch and the loop), with every rule,
  and with each rule alone, called once per message: a rule's cost is (that - no rule), its
  first touch of the window's objects included (bench/profile.py's `rule_breakdown` calls a rule
  five times a message instead, which shows its arithmetic but spreads its cache misses).

Where it comes from: issue 23's long run (docs/performance-investigations.md, "Why 0.63x, tenth by tenth": the
consumer's CPU per row rises from ~28 to ~41-45 µs as the windows fill).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka import TopicPartition

from bench.context import accounts_for
from bench.profile import clone_states, generated_records, window_fill
from consumer import storage
from consumer.account_state import AccountStates
from consumer.batch import Batch, evaluate_batch, validate_records
from consumer.positions import NIL
from consumer.rules import RULES
from consumer.rulesets.active import ActiveRules
from consumer.validation import decode_wire
from utils.config import Settings

log = logging.getLogger("bench")

Polled = dict[TopicPartition, list[Any]]
STAGES = ("decode", "validate", "rules", "copy")


def fresh_states(settings: Settings) -> AccountStates:
    cs = settings.consumer
    return AccountStates(
        cs.state_max_events_per_account, cs.state_history_hours * 3600.0, cs.state_max_accounts
    )


def _no_collector(fn: Any) -> Any:
    """Run `fn` with the collector off: which pass a collection lands in is luck, and a copy's
    evicted events are not freed as the consumer's are (they are shared with the original)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return fn()
    finally:
        if enabled:
            gc.enable()


def pure_path(settings: Settings, polls: list[Polled], initial: AccountStates | None) -> dict[str, float]:
    """CPU µs per message of each stage of the consumer's pure path over `polls`, from a copy of
    `initial` (None: fresh windows)."""
    rates = settings.rules.rate_table()
    rules = ActiveRules.environment(settings.rules)
    states = fresh_states(settings) if initial is None else clone_states(initial)
    cpu = dict.fromkeys(STAGES, 0.0)
    clock = time.thread_time
    loads = decode_wire
    messages = 0

    def run() -> None:
        nonlocal messages
        for records in polls:
            c0 = clock()
            for recs in records.values():
                for rec in recs:
                    loads(rec.value)
            c1 = clock()
            # No partition counts: the records are keyed by a CRC, not by Kafka's partitioner
            # (`generated_records`), and the placement check would reject most of them.
            batch = validate_records(records, settings.validation, rates, None, incarnation=NIL)
            c2 = clock()
            missing = states.missing({t.account_id for t in batch.txns})
            if missing:
                states.load(missing, [])  # a fresh stream: no account has stored rows
            evaluate_batch(batch, states, rules)
            states.trim()
            c3 = clock()
            storage.copy_rows(batch.txns, NIL)
            c4 = clock()
            # validate_records decodes too: count the decoding once, under "decode"
            cpu["decode"] += c1 - c0
            cpu["validate"] += max(0.0, (c2 - c1) - (c1 - c0))
            cpu["rules"] += c3 - c2
            cpu["copy"] += c4 - c3
            messages += len(batch.txns)

    _no_collector(run)
    return {k: v / messages * 1e6 for k, v in cpu.items()}


def rules_alone(
    settings: Settings, batches: list[list[Any]], initial: AccountStates | None, functions: tuple[Any, ...]
) -> float:
    """CPU µs per message of `evaluate_batch` + `trim` with `functions` as the rule set."""
    rules = dataclasses.replace(ActiveRules.environment(settings.rules), functions=functions)
    states = fresh_states(settings) if initial is None else clone_states(initial)
    messages = sum(len(b) for b in batches)

    def run() -> float:
        c0 = time.thread_time()
        for txns in batches:
            missing = states.missing({t.account_id for t in txns})
            if missing:
                states.load(missing, [])
            evaluate_batch(Batch(txns=list(txns)), states, rules)
            states.trim()
        return time.thread_time() - c0

    return float(_no_collector(run)) / messages * 1e6


def measure(
    settings: Settings, polls: list[Polled], initial: AccountStates | None, rounds: int
) -> dict[str, Any]:
    """`pure_path` and the rule-by-rule passes, best of `rounds` each (rounds interleaved)."""
    rates = settings.rules.rate_table()
    batches = [list(validate_records(p, settings.validation, rates).txns) for p in polls]
    env = ActiveRules.environment(settings.rules)
    kinds: list[tuple[str, tuple[Any, ...]]] = [("(none)", ()), ("(all)", env.functions)]
    kinds += [(name, (fn,)) for name, fn in RULES]
    paths: list[dict[str, float]] = []
    best: dict[str, float] = {}
    for _ in range(rounds):
        paths.append(pure_path(settings, polls, initial))
        for name, functions in kinds:
            us = rules_alone(settings, batches, initial, functions)
            best[name] = min(best.get(name, us), us)
    stages = {s: round(min(p[s] for p in paths), 3) for s in STAGES}
    totals = [sum(p.values()) for p in paths]
    windows = best.pop("(none)")
    every = best.pop("(all)")
    return {
        "records": sum(len(v) for p in polls for v in p.values()),
        "messages": sum(len(b) for b in batches),
        "stages_us_per_msg": stages,
        "pure_path_us_per_msg": round(min(totals), 3),
        "pure_path_passes": [round(t, 3) for t in totals],
        "windows_us_per_msg": round(windows, 3),
        "all_rules_us_per_msg": round(every, 3),
        "rules": {
            name: round(us - windows, 3)
            for name, us in sorted(best.items(), key=lambda kv: kv[1] - windows, reverse=True)
        },
    }


def take(stream: Iterator[Polled], n: int) -> tuple[list[Polled], int]:
    """Whole polled batches from `stream` up to at least `n` messages; (them, their count)."""
    out, got = [], 0
    while got < n:
        p = next(stream)
        out.append(p)
        got += sum(len(v) for v in p.values())
    return out, got


def warm_bench(
    settings: Settings, seed: int, warm: int, count: int, accounts: int, rounds: int
) -> dict[str, Any]:
    """Cold and warm figures of one stream (see the module's docstring)."""
    stream = generated_records(settings, seed, accounts)
    rates = settings.rules.rate_table()
    rules = ActiveRules.environment(settings.rules)
    cold, _ = take(stream, count)
    states = fresh_states(settings)
    w0, c0 = time.perf_counter(), time.thread_time()
    done = 0
    for p in cold:  # the cold messages are the warm-up's first ones
        done += _feed(settings, states, p, rates, rules)
    while done < warm:
        done += _feed(settings, states, next(stream), rates, rules)
    warm_s, warm_cpu = time.perf_counter() - w0, time.thread_time() - c0
    hot, _ = take(stream, count)
    fill = window_fill(states)
    log.info("[warm] warm-up of %d messages: %.1f s; windows: %s", done, warm_s, fill)
    out: dict[str, Any] = {
        "accounts": accounts,
        "warm_up_messages": done,
        "warm_up_us_per_msg": round(warm_cpu / done * 1e6, 2),
        "windows": fill,
    }
    log.info("[warm] cold: %d passes", rounds)
    out["cold"] = measure(settings, cold, None, rounds)
    log.info("[warm] warm: %d passes", rounds)
    out["warm"] = measure(settings, hot, states, rounds)
    return out


def _feed(settings: Settings, states: AccountStates, p: Polled, rates: Any, rules: ActiveRules) -> int:
    txns = validate_records(p, settings.validation, rates).txns
    missing = states.missing({t.account_id for t in txns})
    if missing:
        states.load(missing, [])
    evaluate_batch(Batch(txns=list(txns)), states, rules)
    states.trim()
    return len(txns)


def format_warm_bench(out: dict[str, Any]) -> str:
    cold, hot, fill = out["cold"], out["warm"], out["windows"]
    lines = [
        f"the consumer's pure path, cold and warm ({cold['messages']:,} / {hot['messages']:,} messages, "
        f"{out['accounts']:,} accounts; warm: after {out['warm_up_messages']:,} messages, "
        f"{fill['mean_events']:g} events per account, {fill['share_full'] * 100:.0f} % at the bound), "
        "CPU µs per message, best of the passes:",
        f"  {'':<46} {'cold':>8} {'warm':>8}",
    ]
    for s in STAGES:
        lines.append(f"  {s:<46} {cold['stages_us_per_msg'][s]:>8.2f} {hot['stages_us_per_msg'][s]:>8.2f}")
    lines.append(
        f"  {'pure path (sum)':<46} {cold['pure_path_us_per_msg']:>8.2f} {hot['pure_path_us_per_msg']:>8.2f}"
    )
    lines.append("  the rules stage apart (each rule alone, once a message, minus no rule):")
    lines.append(
        f"  {'windows, dispatch and loop (no rule)':<46} {cold['windows_us_per_msg']:>8.2f} {hot['windows_us_per_msg']:>8.2f}"
    )
    for name, us in hot["rules"].items():
        lines.append(f"  {'  ' + name:<46} {cold['rules'][name]:>8.2f} {us:>8.2f}")
    lines.append(
        f"  {'windows + every rule':<46} {cold['all_rules_us_per_msg']:>8.2f} {hot['all_rules_us_per_msg']:>8.2f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--warm", type=int, default=2_000_000, help="messages through the windows first (default 2,000,000)"
    )
    p.add_argument("--count", type=int, default=50_000, help="messages timed, cold and warm (default 50,000)")
    p.add_argument(
        "--rounds", type=int, default=3, help="passes of each kind; the fastest counts (default 3)"
    )
    p.add_argument(
        "--long-count", type=int, default=10_000_000, help="the long run whose account pool to use"
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = Settings()
    accounts = accounts_for(args.long_count, settings)
    # As consumer/transaction_processor.py tune_gc(), for the warm-up (the passes run without it).
    gc.collect()
    gc.freeze()
    gc.set_threshold(200_000, 100, 1000)
    out = warm_bench(settings, args.seed, args.warm, args.count, accounts, args.rounds)
    print(format_warm_bench(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
