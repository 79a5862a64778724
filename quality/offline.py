"""A quality run without Kafka or PostgreSQL: the consumer's pure core over a generated stream.

    python -m quality.offline --seed 11 --count 100000 --start 2026-11-29T05:30:28+00:00
    python -m quality.offline --seed 11 --misses account_takeover   # list the missed incidents

The same stream `python -m quality` produces for a seed and an event-time start (its JSON has
`event_time_start`), through `validate_records` and `evaluate_batch` (consumer/batch.py) in
partition order, every account starting empty, as tests/model.py does. An account lives in one
partition, so the rules see exactly what the live consumer sees on a fresh database; a
continuing run (without `--fresh`) also sees the previous runs' history, which this does not.
It takes seconds where the live run takes minutes: for finding why a rule misses an incident,
and for profiling the rules (`--profile`).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson
from kafka import TopicPartition

from consumer.account_state import AccountStates
from consumer.batch import Batch, evaluate_batch, validate_records
from producer.generator import MAX_LEAD, TransactionGenerator
from producer.pool import AccountPool
from utils.config import Settings, load_settings
from utils.rule_quality import RULE_SCENARIO, RuleScore, format_table, score_rules

__all__ = ["Record", "evaluate", "generate", "records", "score"]

TOPIC = "transactions.quality"


class Record:
    """What validate_records reads of a Kafka record."""

    __slots__ = ("key", "offset", "timestamp", "value")

    def __init__(self, offset: int, key: bytes, value: bytes, timestamp: int) -> None:
        self.offset, self.key, self.value, self.timestamp = offset, key, value, timestamp


def generate(
    settings: Settings, seed: int, count: int, start: datetime, fraud_rate: float
) -> list[dict[str, Any]]:
    ps = settings.producer
    pool = AccountPool.create(ps.accounts, ps.account_seed)
    return TransactionGenerator(seed, pool, fraud_rate, "simulated", start).next_batch(count)


def records(messages: Iterable[dict[str, Any]], partitions: int) -> dict[TopicPartition, list[Record]]:
    """The messages as one poll, by partition (a key's partition need not match Kafka's: only
    that each account stays in one matters). CreateTime is the event time: sent then."""
    offsets: dict[int, int] = defaultdict(int)
    by_tp: dict[TopicPartition, list[Record]] = defaultdict(list)
    for msg in messages:
        key = msg["account_id"].encode()
        p = zlib.crc32(key) % partitions
        sent_ms = int(datetime.fromisoformat(msg["timestamp"]).timestamp() * 1000)
        by_tp[TopicPartition(TOPIC, p)].append(Record(offsets[p], key, orjson.dumps(msg), sent_ms))
        offsets[p] += 1
    return dict(sorted(by_tp.items()))


def evaluate(
    settings: Settings, by_tp: dict[TopicPartition, list[Record]], states: AccountStates | None = None
) -> Batch:
    """`states`: the accounts' windows so far (a continuing run's), updated; None: all empty."""
    cs = settings.consumer
    batch = validate_records(by_tp, settings.validation, settings.rules.rate_table())
    if states is None:
        states = AccountStates(cs.state_max_events_per_account, cs.state_history_hours * 3600.0)
    states.load(states.missing(batch.accounts()), [])
    evaluate_batch(batch, states, settings.rules)
    return batch


def score(batch: Batch) -> tuple[list[RuleScore], dict[str, Any]]:
    by_id = {t.transaction_id: t for t in batch.txns}
    incidents = {t.simulated_incident: t.simulated_scenario for t in batch.txns if t.simulated_incident}
    alerts = [(a.alert_type, by_id[a.transaction_id].simulated_incident) for a in batch.alerts]
    ordinary = [t for t in batch.txns if t.simulated_incident is None]
    alerted = {a.transaction_id for a in batch.alerts}
    hit = sum(1 for t in ordinary if t.transaction_id in alerted)
    share = {
        "transactions": len(ordinary),
        "alerted": hit,
        "share": hit / len(ordinary) if ordinary else None,
    }
    return score_rules(len(batch.txns), incidents, alerts), share  # type: ignore[arg-type]


def misses(batch: Batch, rule: str) -> list[str]:
    """The incidents of `rule`'s scenario without an alert of `rule`, in stream order."""
    scenario = RULE_SCENARIO[rule]
    by_id = {t.transaction_id: t for t in batch.txns}
    caught = {by_id[a.transaction_id].simulated_incident for a in batch.alerts if a.alert_type == rule}
    out: list[str] = []
    for t in batch.txns:
        inc = t.simulated_incident
        if t.simulated_scenario == scenario and inc not in caught and inc not in out:
            out.append(inc)  # type: ignore[arg-type]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quality.offline", description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument(
        "--then",
        type=int,
        nargs="*",
        default=[],
        metavar="SEED",
        help="further runs continuing in event time and account history, as `python -m quality` "
        "without --fresh does (each scored on its own transactions)",
    )
    p.add_argument("--fraud-rate", type=float, default=0.03)
    p.add_argument("--start", default="2026-11-29T05:30:28+00:00", help="event time of the first message")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--misses", metavar="RULE", help="list the incidents RULE misses, with their accounts")
    p.add_argument("--profile", type=int, metavar="N", default=0, help="cProfile the rules, top N")
    args = p.parse_args(argv)
    settings = load_settings()
    cs = settings.consumer
    states = AccountStates(cs.state_max_events_per_account, cs.state_history_hours * 3600.0)
    start = datetime.fromisoformat(args.start)
    for seed in [args.seed, *args.then]:
        msgs = generate(settings, seed, args.count, start, args.fraud_rate)
        by_tp = records(msgs, args.partitions)
        started = time.perf_counter()
        if args.profile:
            prof = cProfile.Profile()
            batch = prof.runcall(evaluate, settings, by_tp, states)
            pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(args.profile)
        else:
            batch = evaluate(settings, by_tp, states)
        elapsed = time.perf_counter() - started
        scores, ordinary = score(batch)
        print(
            f"offline: {len(batch.txns):,} transactions, seed {seed}, start {start.isoformat()}, {elapsed:.1f}s\n"
        )
        print(format_table(scores))
        print(
            f"\nordinary alerted: {ordinary['alerted']} of {ordinary['transactions']} = "
            f"{100 * (ordinary['share'] or 0):.3f} %\n"
        )
        # The next run starts after this one's latest event (producer/frontier.py).
        start = max(datetime.fromisoformat(m["timestamp"]) for m in msgs) + MAX_LEAD
    if args.misses:
        by_inc: dict[str, list[Any]] = defaultdict(list)
        for t in batch.txns:
            if t.simulated_incident:
                by_inc[t.simulated_incident].append(t)
        for inc in misses(batch, args.misses):
            legs = by_inc[inc]
            print(f"\nmissed {inc}: account {legs[0].account_id}")
            for t in legs:
                print(f"  {t.timestamp} {t.transaction_type:10} {t.amount_base:10.2f} {t.merchant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
