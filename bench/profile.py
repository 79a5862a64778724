"""Where one consumer's CPU goes: the consumer's own stages, run one after another in this process
over a produced topic and timed one by one (not sampled, not guessed).

    python -m bench.run --sections profile [--profile-count 100000]
    python -m bench.profile [--profile-count 100000]        # the same, nothing else

1. Kafka client: kafka-python (the consumer's fetch settings) reads every message, polled in
   batches of CONSUMER_MAX_POLL_RECORDS; the process's CPU while it does (its I/O thread included).
2. Then, batch by batch over the records as they were polled, each stage of
   consumer/processor.py `_prepare` and `_write_once` on the main thread, timed with the
   thread's CPU clock and the wall clock:
   JSON decoding (msgspec into validation's wire struct, what its fast path starts with), validation
   (consumer.batch.validate_records, minus the decoding), account loads (the SQL that fills the
   account cache), rules (evaluate_batch + trim: the rules and the account windows), building
   the COPY data (storage.copy_rows), and the database write (storage.write_batch, minus the
   COPY building it does again: the round trips and psycopg2 handing the payload over).

The shares are of the sum of those CPU times: what one process would spend per message if
nothing overlapped. The real consumer overlaps the write (its writer thread) with the next
batch; the wall column shows how long the database keeps a batch (server time included).
Not measured here: the offsets, positions and rule-set bookkeeping statements of each batch
(three small statements per batch, ~0.1 µs a message at 5,000 a batch).

3. Then the rules stage apart, rule by rule (`rule_breakdown`): `evaluate_batch` again over the
   same validated batches, in this process, with fresh account windows: with no rule (the
   windows alone: their upkeep, the dispatch, the loop), with every rule, and with each rule
   alone called RULE_REPEAT times per message, so that a rule's few tenths of a µs stand out of
   the windows' noise; a rule's cost is (that - windows alone) / RULE_REPEAT. Best of
   RULE_ROUNDS each. No SQL and no Kafka: ~20 s for 100,000 messages.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka import KafkaConsumer, TopicPartition

from bench.context import Context, produce
from consumer import storage
from consumer.account_state import AccountStates
from consumer.batch import Batch, evaluate_batch, validate_records
from consumer.positions import NIL
from consumer.rules import RULES
from consumer.rulesets.active import ActiveRules
from consumer.validation import decode_wire
from utils import database
from utils.config import Settings
from utils.models import Transaction

log = logging.getLogger("bench")

STAGES = (
    ("kafka", "Kafka client (kafka-python poll, record parsing)"),
    ("decode", "JSON decoding (msgspec, typed struct)"),
    ("validate", "validation (without the decoding)"),
    ("load", "account loads (SQL + cache fill)"),
    ("rules", "rules + account windows"),
    ("copy", "building the COPY data (copy_rows)"),
    ("write", "database write (write_batch without copy_rows)"),
)

Polled = list[dict[TopicPartition, list[Any]]]

RULE_REPEAT = 5  # calls of the one rule per message in the rule-by-rule passes
RULE_ROUNDS = 2  # passes of each kind; the fastest counts


def read_polls(settings: Settings, expected: int, timeout_s: float = 300.0) -> tuple[Polled, float, float]:
    """Every message of the topic as the consumer polls them; (polls, process CPU s, wall s)."""
    k, cs = settings.kafka, settings.consumer
    consumer = KafkaConsumer(
        **k.client_kwargs(),
        group_id=None,
        enable_auto_commit=False,
        max_poll_records=cs.max_poll_records,
        max_partition_fetch_bytes=4 * 1024 * 1024,  # as consumer/group.py
        fetch_max_bytes=32 * 1024 * 1024,
        client_id="txmon-bench-profile",
    )
    polls: Polled = []
    try:
        tps = [TopicPartition(k.topic, p) for p in sorted(consumer.partitions_for_topic(k.topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        n = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        deadline = time.monotonic() + timeout_s
        while n < expected and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500, max_records=cs.max_poll_records)
            if batch:
                polls.append(batch)
                n += sum(len(v) for v in batch.values())
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        consumer.close()
    return polls, cpu, wall


class _Clock:
    """Thread CPU and wall time per stage."""

    def __init__(self) -> None:
        self.cpu = {name: 0.0 for name, _ in STAGES}
        self.wall = {name: 0.0 for name, _ in STAGES}

    def time(self, stage: str, fn: Callable[[], Any]) -> Any:
        c0, w0 = time.thread_time(), time.perf_counter()
        out = fn()
        self.cpu[stage] += time.thread_time() - c0
        self.wall[stage] += time.perf_counter() - w0
        return out


def profile_stages(
    settings: Settings, polls: Polled, validated: list[list[Transaction]] | None = None
) -> _Clock:
    """Run the consumer's per-batch stages over `polls` into settings.postgres, timing each;
    each batch's transactions go to `validated`, for `rule_breakdown`."""
    cs = settings.consumer
    clock = _Clock()
    states = AccountStates(
        cs.state_max_events_per_account, cs.state_history_hours * 3600.0, cs.state_max_accounts
    )
    rates = settings.rules.rate_table()
    rules = ActiveRules.environment(settings.rules)
    counts = frozenset({settings.kafka.topic_partitions})
    db = database.Database(settings.postgres, maxconn=1)
    loads = decode_wire
    try:
        for records in polls:

            def decode(records: dict[TopicPartition, list[Any]] = records) -> None:
                for recs in records.values():
                    for rec in recs:
                        loads(rec.value)

            clock.time("decode", decode)
            batch = clock.time(
                "validate",
                lambda records=records: validate_records(  # type: ignore[misc]
                    records, settings.validation, rates, None, incarnation=NIL, partition_counts=counts
                ),
            )

            if validated is not None:
                validated.append(list(batch.txns))

            def load(batch: Any = batch) -> None:
                missing = states.missing(batch.accounts()) if batch.txns else set()
                if missing:
                    accounts = sorted(missing)
                    with db.connection() as conn:
                        rows = storage.load_accounts(
                            conn, settings.kafka.topic, accounts, cs.state_max_events_per_account
                        )
                    states.load(accounts, rows)

            clock.time("load", load)

            def evaluate(batch: Any = batch) -> None:
                evaluate_batch(batch, states, rules)
                states.trim()

            clock.time("rules", evaluate)
            clock.time("copy", lambda batch=batch: storage.copy_rows(batch.txns, NIL))  # type: ignore[misc]

            def write(batch: Any = batch) -> None:
                with db.connection() as conn:
                    storage.write_batch(
                        conn,
                        batch.txns,
                        batch.alerts,
                        batch.rejections,
                        alert_positions=batch.alert_positions,
                        rule_set_version=batch.rule_set_version,
                    )

            clock.time("write", write)
    finally:
        db.close()
    # validate_records decodes too, and write_batch builds the COPY data again: count each once.
    for inner, outer in (("decode", "validate"), ("copy", "write")):
        clock.cpu[outer] = max(0.0, clock.cpu[outer] - clock.cpu[inner])
        clock.wall[outer] = max(0.0, clock.wall[outer] - clock.wall[inner])
    return clock


def rule_breakdown(settings: Settings, batches: list[list[Transaction]]) -> dict[str, Any]:
    """CPU µs per message of the rules stage's parts: the windows alone, each rule, all rules."""
    cs = settings.consumer
    env = ActiveRules.environment(settings.rules)
    messages = sum(len(b) for b in batches)

    def run(functions: tuple[Any, ...]) -> float:
        rules = dataclasses.replace(env, functions=functions)
        states = AccountStates(
            cs.state_max_events_per_account, cs.state_history_hours * 3600.0, cs.state_max_accounts
        )
        c0 = time.thread_time()
        for txns in batches:
            missing = states.missing({t.account_id for t in txns})
            if missing:
                states.load(missing, [])  # a fresh topic: no account has stored rows yet
            evaluate_batch(Batch(txns=list(txns)), states, rules)
            states.trim()
        return time.thread_time() - c0

    def best(functions: tuple[Any, ...]) -> float:
        return min(run(functions) for _ in range(RULE_ROUNDS)) / messages * 1e6

    windows = best(())
    every = best(env.functions)
    per_rule = [
        {
            "rule": name,
            "cpu_us_per_msg": round(max(0.0, best((fn,) * RULE_REPEAT) - windows) / RULE_REPEAT, 3),
        }
        for name, fn in RULES
    ]
    return {
        "messages": messages,
        "windows_us_per_msg": round(windows, 3),
        "all_rules_us_per_msg": round(every, 3),
        "rules": sorted(per_rule, key=lambda r: -r["cpu_us_per_msg"]),
    }


def shares(messages: int, kafka_cpu: float, kafka_wall: float, clock: _Clock) -> dict[str, Any]:
    cpu = {**clock.cpu, "kafka": kafka_cpu}
    wall = {**clock.wall, "kafka": kafka_wall}
    total = sum(cpu.values())
    rows = [
        {
            "stage": name,
            "what": what,
            "cpu_us_per_msg": round(cpu[name] / messages * 1e6, 2),
            "share": round(cpu[name] / total, 4) if total else None,
            "wall_us_per_msg": round(wall[name] / messages * 1e6, 2),
        }
        for name, what in STAGES
    ]
    return {
        "messages": messages,
        "stages": rows,
        "cpu_us_per_msg": round(total / messages * 1e6, 2),
        # One process doing every stage in turn, with no overlap: a floor for the real consumer.
        "serial_rate": messages / total if total else None,
    }


def section_profile(ctx: Context) -> dict[str, Any]:
    """Produce `--profile-count` transactions, read them as the consumer does, run its stages."""
    ws, n = ctx.ws, ctx.args.profile_count
    settings = ws.settings("profile")
    saved = gc.get_threshold()
    try:
        log.info("[profile] producing %d transactions", n)
        produce(settings, n, ctx.args.seed)
        # As consumer/transaction_processor.py tune_gc(): the same collector work per message.
        gc.collect()
        gc.freeze()
        gc.set_threshold(200_000, 100, 1000)
        log.info("[profile] Kafka client: reading them")
        polls, kafka_cpu, kafka_wall = read_polls(settings, n)
        messages = sum(len(v) for p in polls for v in p.values())
        log.info("[profile] the consumer's stages over %d messages in %d polls", messages, len(polls))
        validated: list[list[Transaction]] = []
        clock = profile_stages(settings, polls, validated)
        out = shares(messages, kafka_cpu, kafka_wall, clock)
        out["polls"] = len(polls)
        out["batch_size"] = settings.consumer.max_poll_records
        log.info("[profile] the rules stage rule by rule")
        out["rule_breakdown"] = rule_breakdown(settings, validated)
        return out
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()
        ws.release(settings)


def format_profile(section: dict[str, Any]) -> str:
    """The table docs/performance.md shows."""
    lines = [
        f"one consumer's CPU by stage ({section.get('messages', 0):,} messages, "
        f"{section.get('polls', 0)} polls of up to {section.get('batch_size')})",
        f"  {'stage':<52} {'CPU µs/msg':>10} {'share':>7} {'wall µs/msg':>12}",
    ]
    for r in section.get("stages", []):
        share = "-" if r["share"] is None else f"{r['share'] * 100:.1f}%"
        lines.append(
            f"  {r['what']:<52} {r['cpu_us_per_msg']:>10.2f} {share:>7} {r['wall_us_per_msg']:>12.2f}"
        )
    rate = section.get("serial_rate")
    lines.append(
        f"  {'total':<52} {section.get('cpu_us_per_msg', 0):>10.2f} {'100%':>7}   "
        f"(serial: {'-' if rate is None else f'{rate:,.0f}'} msg/s)"
    )
    rb = section.get("rule_breakdown")
    if rb:
        lines += [
            f"the rules stage alone, again over the same {rb['messages']:,} messages (fresh windows, no SQL):",
            f"  {'account windows, dispatch and loop (no rule)':<52} {rb['windows_us_per_msg']:>10.2f}",
        ]
        for r in rb["rules"]:
            lines.append(f"  {'  ' + r['rule']:<52} {r['cpu_us_per_msg']:>10.3f}")
        lines.append(f"  {'windows + every rule':<52} {rb['all_rules_us_per_msg']:>10.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench import run

    return run.main(["--sections", "profile", *(argv or sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
