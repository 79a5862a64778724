"""Measure the rules on the local stack: a seeded stream in, a table per rule out (and JSON).

    python -m quality --fresh            # a new database and topic, then one measured run
    python -m quality                    # another run over the same account pool, continuing
    python -m quality --count 20000 --seed 7 --no-stack

Runs go to their own database (`txmon_quality`) and topic (`transactions.quality`), so demo or
live data neither disturb the figures nor get disturbed. Each run continues where the previous
one ended in event time (the producer's simulated clock reads the topic), and its consumer
rebuilds the account windows from the database, as a restarted pipeline would: run two sees run
one's history. Each run is measured on its own transactions only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from producer.generator import TransactionGenerator
from producer.pool import AccountPool
from producer.transaction_producer import ProducerSummary, run_producer
from stack.demo import with_consumer
from utils import database, schema
from utils.config import REPO_ROOT, Settings, load_settings
from utils.errors import TxmonError
from utils.kafka_cleanup import admin_client, delete_topics, ensure_topics, list_consumer_groups
from utils.logs import configure_logging
from utils.rule_quality import RuleScore, format_table, score_rules

log = logging.getLogger("quality")

RESULTS_DIR = REPO_ROOT / "quality" / "results"


def _local_stack() -> Any:
    """Start or reuse the native stack (the one place that knows where it lives); it creates and
    drops the runs' database as its superuser, since the owner role may not create databases."""
    from stack.orchestrator import LocalStack

    stack = LocalStack.from_env()
    os.environ.update(stack.up().as_environ())
    return stack


def quality_settings(base: Settings, database_name: str, topic: str, fraud_rate: float) -> Settings:
    kafka = dataclasses.replace(
        base.kafka, topic=topic, dlq_topic=f"{topic}.dlq", consumer_group=f"txmon-quality-{database_name}"
    )
    return dataclasses.replace(
        base,
        kafka=kafka,
        postgres=dataclasses.replace(base.postgres, db=database_name),
        producer=dataclasses.replace(base.producer, fraud_rate=fraud_rate),
    )


def prepare(settings: Settings, admin_db: str, *, fresh: bool, stack: Any = None) -> None:
    """The run's database (created if missing, dropped first when `fresh`), schema and topics.
    `stack`: the native stack, which creates and drops databases; without it (`--no-stack`) the
    configured owner role does, and needs CREATEDB for that."""
    name = settings.postgres.db
    if stack is not None and fresh:
        stack.drop_database(name)
    owner = dataclasses.replace(settings.postgres, db=admin_db)
    conn = psycopg2.connect(owner.dsn(migration=True))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            if stack is None and fresh:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            missing = cur.fetchone() is None
            if missing and stack is None:
                try:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                except psycopg2.errors.InsufficientPrivilege as exc:
                    raise TxmonError(
                        f"{owner.migration_user or owner.user} may not create the database {name}: create it "
                        "owned by that role (as a superuser), or run without --no-stack"
                    ) from exc
    finally:
        conn.close()
    if missing and stack is not None:
        stack.create_database(name)
    schema.migrate(settings.postgres)
    admin = admin_client(settings.kafka)
    try:
        if fresh:
            existing = set(admin.list_topics())
            gone = [t for t in (settings.kafka.topic, settings.kafka.dlq_topic) if t in existing]
            if gone:
                delete_topics(admin, gone)
            if settings.kafka.consumer_group in list_consumer_groups(admin):
                admin.delete_groups([settings.kafka.consumer_group])
        _create_topics(admin, settings)
    finally:
        admin.close()


def _create_topics(admin: Any, settings: Settings) -> None:
    # A topic deleted a moment ago may still be on its way out: retry while the broker says so.
    deadline = time.monotonic() + 60
    while True:
        try:
            ensure_topics(admin, settings)
            return
        except TxmonError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def run_pipeline(
    settings: Settings, count: int, seed: int, start: datetime | None = None
) -> tuple[ProducerSummary, dict[str, Any]]:
    """The real consumer in a child process, the real producer in this one; returns both summaries.
    `start`: the event time of the first message (None: after the topic's latest event)."""

    def produce() -> ProducerSummary:
        return run_producer(settings, count=count, rate=0, seed=seed, clock="simulated", start=start)

    return with_consumer(settings, produce, idle_s=10.0, timeout_s=max(300.0, count / 200))


def measure(settings: Settings, ids: list[str]) -> tuple[int, list[RuleScore], dict[str, Any]]:
    """Score the rules on the transactions `ids` (one run) as stored: (stored count, scores, the
    ordinary traffic's share alerted: unlabelled transactions with at least one alert)."""
    db = database.Database(settings.postgres, maxconn=1)
    try:
        with db.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM transactions WHERE transaction_id = ANY(%s)", (ids,))
            stored = int(cur.fetchone()[0])
            cur.execute(
                "SELECT DISTINCT simulated_incident, simulated_scenario FROM transactions "
                "WHERE transaction_id = ANY(%s) AND simulated_incident IS NOT NULL",
                (ids,),
            )
            incidents = dict(cur.fetchall())
            cur.execute(
                "SELECT a.alert_type, t.simulated_incident FROM alerts a JOIN transactions t "
                "USING (transaction_id) WHERE t.transaction_id = ANY(%s)",
                (ids,),
            )
            alerts = cur.fetchall()
            cur.execute(
                "SELECT count(*), count(*) FILTER (WHERE EXISTS (SELECT 1 FROM alerts a "
                "WHERE a.transaction_id = t.transaction_id)) FROM transactions t "
                "WHERE t.transaction_id = ANY(%s) AND t.simulated_incident IS NULL",
                (ids,),
            )
            ordinary_n, ordinary_alerted = (int(v) for v in cur.fetchone())
    finally:
        db.close()
    ordinary = {
        "transactions": ordinary_n,
        "alerted": ordinary_alerted,
        "share": round(ordinary_alerted / ordinary_n, 6) if ordinary_n else None,
    }
    return stored, score_rules(stored, incidents, alerts), ordinary


def run_ids(settings: Settings, produced: ProducerSummary, count: int) -> list[str]:
    """The run's transaction ids: the generator is deterministic given the seed and the start."""
    assert produced.start is not None
    ps = settings.producer
    gen = TransactionGenerator(
        produced.seed,
        AccountPool.create(ps.accounts, ps.account_seed),
        ps.fraud_rate,
        "simulated",
        datetime.fromisoformat(produced.start),
    )
    return [t["transaction_id"] for t in gen.next_batch(count)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quality", description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=100_000, help="transactions in the run (default 100000)")
    p.add_argument("--seed", type=int, default=11, help="stream seed (default 11)")
    p.add_argument("--fraud-rate", type=float, default=0.03, help="share of incident messages (default 0.03)")
    p.add_argument("--fresh", action="store_true", help="drop the quality database and topic first")
    p.add_argument(
        "--start",
        type=datetime.fromisoformat,
        default=None,
        help="event time of the first message, ISO 8601 with offset (default: after the topic's latest "
        "event, or PRODUCER_DAYS_BACK days ago): a run with --fresh, --seed and --start is repeatable",
    )
    p.add_argument("--database", default="txmon_quality", help="database of the runs (default txmon_quality)")
    p.add_argument("--topic", default="transactions.quality", help="topic of the runs")
    p.add_argument(
        "--json", type=Path, default=None, help=f"where to write the JSON (default {RESULTS_DIR}/...)"
    )
    p.add_argument("--no-stack", action="store_true", help="use the configured services; start nothing")
    args = p.parse_args(argv)
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"), os.environ.get("LOG_FORMAT", "text"))
    started = time.monotonic()
    try:
        stack = None if args.no_stack else _local_stack()
        base = load_settings()
        settings = quality_settings(base, args.database, args.topic, args.fraud_rate)
        prepare(settings, base.postgres.db, fresh=args.fresh, stack=stack)
        produced, consumed = run_pipeline(settings, args.count, args.seed, args.start)
        if not produced.ok or produced.acked != args.count:
            raise TxmonError(f"the producer acked {produced.acked} of {args.count} ({produced.first_error})")
        stored, scores, ordinary = measure(settings, run_ids(settings, produced, args.count))
    except TxmonError as exc:
        print(f"quality failed: {exc}", file=sys.stderr)
        return 2
    report = {
        "command": "python -m quality " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": args.seed,
        "count": args.count,
        "fraud_rate": args.fraud_rate,
        "accounts": settings.producer.accounts,
        "account_seed": settings.producer.account_seed,
        "event_time_start": produced.start,
        "database": args.database,
        "topic": args.topic,
        "stored": stored,
        "consumer": {k: consumed[k] for k in ("consumed", "stored", "rejected", "alerts")},
        "rules": [s.as_dict() for s in scores],
        "ordinary": ordinary,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    path = args.json or RESULTS_DIR / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-seed{args.seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nrule quality: {stored:,} transactions, seed {args.seed}, fraud rate {args.fraud_rate:g}, "
          f"event time from {produced.start}\n")  # fmt: skip
    print(format_table(scores))
    if ordinary["transactions"]:
        print(
            f"\nordinary (unlabelled) transactions alerted: {ordinary['alerted']:,} of "
            f"{ordinary['transactions']:,} = {100 * ordinary['share']:.3f} % (budget 1 %)"
        )
    print(f"\nJSON: {path}")
    return 0 if stored == args.count else 1
