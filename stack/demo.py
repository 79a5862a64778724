"""`make demo`: the whole pipeline end to end on the local stack, then a summary.

Starts (or reuses) ZooKeeper + Kafka + PostgreSQL, starts the real consumer
(`python consumer/transaction_processor.py`), streams a seeded batch of transactions with the real
producer plus a few malformed messages (to show the dead-letter path), waits for the consumer to
drain the topic, and prints what was produced, stored, rejected and alerted. The stack is left
running so the results can be queried with psql; `make stack-down` stops it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka import KafkaProducer

from producer.transaction_producer import ProducerSummary, run_producer
from stack.orchestrator import LocalStack
from utils import database, schema
from utils.config import REPO_ROOT, Settings, load_settings, settings_to_env
from utils.errors import TxmonError
from utils.kafka_cleanup import admin_client, ensure_topics
from utils.logs import configure_logging

log = logging.getLogger("demo")
T = TypeVar("T")

# Malformed messages the demo mixes in, so the dead-letter path shows in the summary.
BAD_MESSAGES: tuple[bytes, ...] = (
    b'{"transaction_id": "truncated',
    b'{"schema_version": 1, "transaction_id": "demo-neg", "amount": -10}',
    b"\xff\xfe not even UTF-8",
    b'{"schema_version": 1, "amount": 1e30}',
    b"[1, 2, 3]",
)


def _send_bad(settings: Settings, n: int) -> int:
    producer = KafkaProducer(**settings.kafka.client_kwargs(), acks="all")
    for i in range(n):
        producer.send(settings.kafka.topic, key=b"demo-bad", value=BAD_MESSAGES[i % len(BAD_MESSAGES)])
    producer.flush(timeout=30)
    producer.close()
    return n


def _database_totals(settings: Settings, since: str | None) -> dict[str, Any]:
    db = database.Database(settings.postgres, maxconn=1)
    try:
        with db.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM transactions")
            txns = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM rejected_transactions")
            rejected = cur.fetchone()[0]
            cur.execute("SELECT alert_type, count(*) FROM alerts GROUP BY 1 ORDER BY 1")
            alerts = dict(cur.fetchall())
            # The UTC days this run's events fall on: the simulated clock continued after
            # everything already on the topic, so the events from `since` on are this run's.
            cur.execute(
                """SELECT ("timestamp" AT TIME ZONE 'UTC')::date, count(*) FROM transactions
                   WHERE "timestamp" >= %s GROUP BY 1 ORDER BY 1""",
                (since or "infinity",),
            )
            days = cur.fetchall()
    finally:
        db.close()
    return {"transactions": txns, "rejected": rejected, "alerts": alerts, "days": days}


def with_consumer(
    settings: Settings, work: Callable[[], T], *, idle_s: float, timeout_s: float
) -> tuple[T, dict[str, Any]]:
    """Run `work()` (which produces) while the real consumer (`python
    consumer/transaction_processor.py`) runs in a child process, and wait until the consumer has
    drained the topic and exited. Returns work's result and the consumer's summary; raises
    TxmonError, with the end of the consumer's log on stderr, if the consumer failed."""
    with tempfile.TemporaryDirectory(prefix="txmon-consumer-") as tmp:
        summary_path, consumer_log = Path(tmp) / "consumer.json", Path(tmp) / "consumer.log"
        env = {**os.environ, **settings_to_env(settings), "PYTHONUNBUFFERED": "1"}
        args = [sys.executable, str(REPO_ROOT / "consumer" / "transaction_processor.py")]
        args += ["--max-idle-seconds", f"{idle_s:g}", "--summary-json", str(summary_path)]
        with open(consumer_log, "wb") as out:
            consumer = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
            try:
                result = work()
                log.info("waiting for the consumer to drain the topic")
                code = consumer.wait(timeout=timeout_s)
            except BaseException:
                consumer.terminate()
                consumer.wait(30)
                raise
        if code != 0 or not summary_path.exists():
            sys.stderr.write(consumer_log.read_text(errors="replace")[-4000:])
            raise TxmonError(f"the consumer exited with {code}")
        return result, json.loads(summary_path.read_text())


def run_demo(count: int, seed: int, bad: int, stack: LocalStack | None) -> int:
    started_stack = "reused"
    if stack is not None:
        env = stack.up()
        os.environ.update(env.as_environ())
        started_stack = "local stack"
    settings = load_settings()
    schema.migrate(settings.postgres)
    admin = admin_client(settings.kafka)
    try:
        ensure_topics(admin, settings)
    finally:
        admin.close()

    def produce() -> tuple[ProducerSummary, int]:
        # No start: the simulated clock continues after the topic's latest event, so a second
        # demo never rewrites the accounts' history of the first.
        produced = run_producer(settings, count=count, seed=seed, clock="simulated", progress_seconds=5.0)
        return produced, _send_bad(settings, bad)

    try:
        (produced, sent_bad), c = with_consumer(
            settings, produce, idle_s=5.0, timeout_s=max(120.0, count / 500)
        )
    except TxmonError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1

    totals = _database_totals(settings, produced.start)
    pg = settings.postgres
    alerts = ", ".join(f"{k}={v}" for k, v in sorted(c["alerts"].items())) or "none"
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(c["rejected_reasons"].items())) or "none"
    lines = [
        "",
        "== txmon demo ==",
        f"services   kafka {settings.kafka.bootstrap_servers}, postgres {pg.host}:{pg.port}/{pg.db} ({started_stack})",
        f"produced   {produced.acked:,} transactions acked (failed {produced.failed}) at {produced.rate:,.0f}/s, "
        f"seed {seed}, event time from {produced.start}; plus {sent_bad} malformed messages",
        f"consumed   {c['consumed']:,}: stored {c['stored']:,}, already stored {c['already_stored']:,}, "
        f"rejected {c['rejected']:,} ({reasons})",
        f"alerts     {sum(c['alerts'].values()):,}: {alerts}",
        f"throughput consumer {c['rate']:,.0f} transactions/s stored ({c['active_s']:.1f}s active, one process)",
        f"database   {totals['transactions']:,} transactions, {totals['rejected']:,} rejected, "
        f"{sum(totals['alerts'].values()):,} alerts in total",
        "",
        'next       eval "$(make -s stack-up)"   # export the connection settings into this shell',
        '           PGPASSWORD="$POSTGRES_PASSWORD" psql -h "$POSTGRES_HOST" -p "$POSTGRES_PORT" -U "$POSTGRES_USER" '
        '-d "$POSTGRES_DB" -c "SELECT alert_type, severity, count(*) FROM alerts GROUP BY 1, 2"',
        "console    python -m console add-user NAME --role lead   # password on stdin; then `make console`:",
        f"           http://127.0.0.1:{settings.console.port}/alerts   # the analysts' console (docs/console.md)",
        "           make stack-down                # stop the local stack (data is kept)",
    ]
    for day, n in totals["days"]:  # the report of each day the run filled
        lines.insert(
            -1,
            f"report     python -m reports --day {day}   # {n:,} transactions; or trigger "
            f"transaction_reporting with day {day}",
        )
    print("\n".join(lines), flush=True)
    # Leftovers of an interrupted earlier run may be consumed too, hence ">=".
    ok = (
        produced.failed == 0
        and c["stored"] + c["already_stored"] >= produced.acked
        and c["rejected"] >= sent_bad
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stack.demo", description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=20_000, help="transactions to stream (default 20000)")
    p.add_argument("--seed", type=int, default=None, help="generator seed (default: random, printed)")
    p.add_argument("--bad", type=int, default=len(BAD_MESSAGES), help="malformed messages to mix in")
    p.add_argument(
        "--no-stack", action="store_true", help="use the configured services as they are; start nothing"
    )
    args = p.parse_args(argv)
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"), os.environ.get("LOG_FORMAT", "text"))
    seed = args.seed if args.seed is not None else secrets.randbits(31)
    t0 = time.monotonic()
    try:
        code = run_demo(args.count, seed, args.bad, None if args.no_stack else LocalStack.from_env())
    except TxmonError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 2
    log.info("demo finished in %.1fs", time.monotonic() - t0)
    return code


if __name__ == "__main__":
    sys.exit(main())
