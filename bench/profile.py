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

4. With `--warm N` (`warm_profile`): the same breakdown over warm windows, the steady state of a
   long run. The producer's stream with the `--long` run's account pool is made and validated in
   this process; N messages of it go through the windows and rules untimed (CPU and collector
   pauses by tenth reported), then `--profile-count` more are broken down from copies of those
   windows, beside the stream's first `--profile-count` from empty windows. ~6 minutes at N =
   2,000,000 (every window at its bound, as in tenths 3-10 of the 10,000,000-row run).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import sys
import time
import zlib
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from kafka import KafkaConsumer, TopicPartition

from bench.context import Context, accounts_for, produce
from consumer import storage
from consumer.account_state import AccountHistory, AccountStates
from consumer.batch import Batch, evaluate_batch, validate_records
from consumer.positions import NIL
from consumer.rules import RULES
from consumer.rulesets.active import ActiveRules
from consumer.validation import decode_wire
from producer.generator import TransactionGenerator, simulated_start
from producer.pool import AccountPool
from quality.offline import Record
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


def clone_states(states: AccountStates) -> AccountStates:
    """A copy of `states` that evaluating more messages leaves `states` as it was: each window's
    deque and merchant index copied, the events shared (immutable). Much cheaper than loading
    them again, so each pass of `rule_breakdown` can start from the same warm windows."""
    out = AccountStates(states.max_events, states.history_seconds, states.max_accounts)
    held = out._accounts
    for account_id, history in states._accounts.items():
        copy = AccountHistory(history.max_events, history.max_age_s, history.partition)
        copy.events = deque(history.events)
        if hasattr(history, "epochs"):  # since the windows' epoch arrays (a base revision may lack them)
            copy.epochs = history.epochs[:]
        copy.by_merchant = {m: epochs[:] for m, epochs in history.by_merchant.items()}  # list or array
        held[account_id] = copy
    return out


def rule_breakdown(
    settings: Settings, batches: list[list[Transaction]], initial: AccountStates | None = None
) -> dict[str, Any]:
    """CPU µs per message of the rules stage's parts: the windows alone, each rule, all rules.
    `initial`: the windows every pass starts from (a copy of them: `clone_states`); None: fresh."""
    cs = settings.consumer
    env = ActiveRules.environment(settings.rules)
    messages = sum(len(b) for b in batches)

    def run(functions: tuple[Any, ...]) -> float:
        rules = dataclasses.replace(env, functions=functions)
        if initial is None:
            states = AccountStates(
                cs.state_max_events_per_account, cs.state_history_hours * 3600.0, cs.state_max_accounts
            )
        else:
            states = clone_states(initial)
        # The collector off while timing: which pass a collection lands in is luck, and a
        # copy's evicted events are not freed as the consumer's are (warm_profile times the
        # collector in the warm-up, where they are).
        enabled = gc.isenabled()
        gc.disable()
        try:
            c0 = time.thread_time()
            for txns in batches:
                missing = states.missing({t.account_id for t in txns})
                if missing:
                    states.load(missing, [])  # a fresh topic: no account has stored rows yet
                evaluate_batch(Batch(txns=list(txns)), states, rules)
                states.trim()
            return time.thread_time() - c0
        finally:
            if enabled:
                gc.enable()

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


def generated(settings: Settings, seed: int, accounts: int) -> Iterator[list[Transaction]]:
    """The producer's stream (its generator, a pool of `accounts`, simulated clock from midnight
    PRODUCER_DAYS_BACK ago: a fresh topic's start but for the hour) made in this process and
    validated, in consumer-sized batches: no Kafka, no SQL (`generated_records`)."""
    rates = settings.rules.rate_table()
    for by_tp in generated_records(settings, seed, accounts):
        yield validate_records(by_tp, settings.validation, rates).txns


def generated_records(
    settings: Settings, seed: int, accounts: int
) -> Iterator[dict[TopicPartition, list[Any]]]:
    """`generated`'s stream before validation: consumer-sized polls of Kafka-like records (JSON
    values as the producer sends them). Keyed to partitions by a CRC, not as Kafka's partitioner
    does, but each account stays in one, which is all the windows need."""
    ps, size = settings.producer, settings.consumer.max_poll_records
    pool = AccountPool.create(accounts, ps.account_seed)
    # Midnight of that day: the same stream in every run of a day (two revisions back to back).
    start = simulated_start(datetime.now(UTC), None, days_back=ps.days_back).replace(
        hour=0, minute=0, second=0
    )
    generator = TransactionGenerator(seed, pool, ps.fraud_rate, "simulated", start)
    partitions = settings.kafka.topic_partitions
    topic = settings.kafka.topic
    offsets: dict[int, int] = defaultdict(int)
    while True:
        by_tp: dict[TopicPartition, list[Any]] = defaultdict(list)
        for msg in generator.next_batch(size):
            key = msg["account_id"].encode()
            p = zlib.crc32(key) % partitions
            sent_ms = int(datetime.fromisoformat(msg["timestamp"]).timestamp() * 1000)
            by_tp[TopicPartition(topic, p)].append(Record(offsets[p], key, orjson.dumps(msg), sent_ms))
            offsets[p] += 1
        yield dict(sorted(by_tp.items()))


def window_fill(states: AccountStates) -> dict[str, Any]:
    """How full the windows are: events held per account, and the share at the count bound."""
    sizes = [len(h) for h in states._accounts.values()]
    full = sum(1 for n in sizes if n >= states.max_events)
    return {
        "accounts": len(sizes),
        "events": sum(sizes),
        "mean_events": round(sum(sizes) / len(sizes), 1) if sizes else 0.0,
        "share_full": round(full / len(sizes), 3) if sizes else None,
    }


def warm_profile(settings: Settings, seed: int, warm: int, count: int, accounts: int) -> dict[str, Any]:
    """The rules stage over cold and over warm windows, in one run: the stream's first `count`
    messages from empty windows (`cold`: what the stage table above measures), then its
    `count` messages after `warm` messages (`warm`: every window at its bound, as in a long
    run's later tenths), each with `rule_breakdown`. The warm-up itself (windows and rules,
    untimed but for its CPU by tenth and the collector's pauses in it) runs here, no Kafka, no
    SQL. Every pass of the breakdown runs with the collector off (see `rule_breakdown`)."""
    cs = settings.consumer
    states = AccountStates(
        cs.state_max_events_per_account, cs.state_history_hours * 3600.0, cs.state_max_accounts
    )
    rules = ActiveRules.environment(settings.rules)
    cold: list[list[Transaction]] = []
    hot: list[list[Transaction]] = []
    tenth = max(1, warm // 10)
    by_tenth: list[float] = [0.0] * 10
    n = 0
    cuts = sorted({count, warm, warm + count})
    # The collector's pauses in the warm-up, by generation and by tenth: here, unlike in
    # rule_breakdown's passes, evicted events are freed as in the consumer.
    gc_by_tenth: list[float] = [0.0] * 10
    collections: dict[int, int] = defaultdict(int)
    began: list[float] = []

    def watch(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began.append(time.thread_time())
        elif began and n < warm:
            gc_by_tenth[min(9, n // tenth)] += time.thread_time() - began.pop()
            collections[info["generation"]] += 1

    gc.callbacks.append(watch)
    w0 = time.perf_counter()
    try:
        stream = generated(settings, seed, accounts)
        while n < warm + count:
            txns = next(stream)
            pieces, lo = [], 0  # split at the cut points, so that each part is exactly its messages
            for cut in cuts:
                if n < cut < n + len(txns):
                    pieces.append(txns[lo : cut - n])
                    lo = cut - n
            pieces.append(txns[lo:])
            for piece in pieces:
                if n >= warm + count:
                    break
                if n < count:
                    cold.append(piece)
                if n >= warm:
                    hot.append(piece)
                else:
                    c0 = time.thread_time()
                    missing = states.missing({t.account_id for t in piece})
                    if missing:
                        states.load(missing, [])  # a fresh stream: no account has stored rows
                    evaluate_batch(Batch(txns=list(piece)), states, rules)
                    states.trim()
                    by_tenth[min(9, n // tenth)] += time.thread_time() - c0
                n += len(piece)
    finally:
        gc.callbacks.remove(watch)
    log.info("[profile] warm-up of %d messages: %.1f s", warm, time.perf_counter() - w0)
    log.info("[profile] warm windows: %s", window_fill(states))
    return {
        "warm": warm,
        "accounts": accounts,
        "warm_up_rules_us_per_msg_by_tenth": [round(c / tenth * 1e6, 2) for c in by_tenth],
        "windows": window_fill(states),
        "cold": rule_breakdown(settings, cold),
        "warm_breakdown": rule_breakdown(settings, hot, states),
        "gc_us_per_msg_by_tenth": [round(c / tenth * 1e6, 2) for c in gc_by_tenth],
        "gc_collections": {str(g): k for g, k in sorted(collections.items())},
        "gc_threshold": list(gc.get_threshold()),
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
        warm = getattr(ctx.args, "warm", 0)
        if warm > 0:
            accounts = accounts_for(ctx.args.long_warmup + ctx.args.long_count, settings)
            log.info(
                "[profile] the rules over warm windows: %d messages of %d accounts first", warm, accounts
            )
            out["warm"] = warm_profile(settings, ctx.args.seed, warm, n, accounts)
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
    warm = section.get("warm")
    if warm:
        lines += format_warm(warm).splitlines()
    return "\n".join(lines)


def format_warm(warm: dict[str, Any]) -> str:
    """Cold against warm windows, rule by rule (`warm_profile`'s figures)."""
    cold, hot, fill = warm["cold"], warm["warm_breakdown"], warm["windows"]
    lines = [
        f"the rules stage over cold and warm windows ({cold['messages']:,} messages each, "
        f"{warm['accounts']:,} accounts; warm: after {warm['warm']:,} messages, "
        f"{fill['mean_events']:g} events per account, {fill['share_full'] * 100:.0f} % at the bound), CPU µs/msg:",
        f"  {'':<52} {'cold':>10} {'warm':>10}",
        f"  {'account windows, dispatch and loop (no rule)':<52} "
        f"{cold['windows_us_per_msg']:>10.2f} {hot['windows_us_per_msg']:>10.2f}",
    ]
    cold_rules = {r["rule"]: r["cpu_us_per_msg"] for r in cold["rules"]}
    for r in hot["rules"]:
        lines.append(
            f"  {'  ' + r['rule']:<52} {cold_rules.get(r['rule'], 0.0):>10.3f} {r['cpu_us_per_msg']:>10.3f}"
        )
    lines.append(
        f"  {'windows + every rule':<52} {cold['all_rules_us_per_msg']:>10.2f} {hot['all_rules_us_per_msg']:>10.2f}"
    )
    tenths = " ".join(f"{x:.1f}" for x in warm["warm_up_rules_us_per_msg_by_tenth"])
    pauses = " ".join(f"{x:.2f}" for x in warm["gc_us_per_msg_by_tenth"])
    lines += [
        f"  the warm-up's rules stage by tenth: {tenths}",
        f"  the collector's pauses in it by tenth: {pauses} (collections by generation: {warm['gc_collections']})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench import run

    return run.main(["--sections", "profile", *(argv or sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
