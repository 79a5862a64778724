"""What each index of `transactions` costs per stored row, on the consumer's own write path.

    python -m bench.index_cost [--preload 3000000] [--rows 50000] [--rounds 3] [--json FILE]

Against the PostgreSQL of `.env` / the environment (a dev stack: `python -m stack up`), in the
settings' database, which it migrates and fills: use a scratch database, never one with data you
keep. The day partition of today is filled with `--preload` rows (the long bench's size of one
day: realistic b-tree depths and cache misses), copied in SQL from a seed of generator rows (the
producer's own accounts, merchants and amounts) with fresh UUID4-like ids, and the indexes are
built after the load.

Then, per round and per variant (interleaved, so the machine's other load falls on every variant
alike): one database transaction that drops the variant's indexes (`DROP INDEX` is
transactional), writes `--rows` new rows with `consumer.storage.write_batch` in the consumer's
batch size (COPY into `transactions` and the `transaction_ids` registry: the bench's
`write_batch` ceiling), reads the backend's CPU time, and rolls back, so the index comes back
and the table keeps its size; a VACUUM of the partition (untimed) then clears the rolled-back
rows. A variant's cost is its backend CPU per row against the `all` variant of the same round:
`all - without X` is what X costs per row.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import statistics
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import psutil
import psycopg2

from consumer import storage
from consumer.validation import validate
from producer.generator import TransactionGenerator
from producer.pool import AccountPool
from utils import schema
from utils.config import PostgresSettings, Settings, load_settings
from utils.models import Transaction

log = logging.getLogger("bench.index_cost")

SEED_ROWS = 100_000


def _owner_dsn(pg: PostgresSettings) -> dict[str, Any]:
    user = pg.migration_user or pg.user
    password = pg.migration_password if pg.migration_user else pg.password
    return {"host": pg.host, "port": pg.port, "dbname": pg.db, "user": user, "password": password}


def generate(settings: Settings, n: int, accounts: int, seed: int) -> list[Transaction]:
    """`n` generator rows, validated as the consumer would (offsets 0..n-1 of partition 0)."""
    pool = AccountPool.create(accounts, settings.producer.account_seed)
    gen = TransactionGenerator(seed, pool, settings.producer.fraud_rate)
    out: list[Transaction] = []
    now_ms = int(time.time() * 1000)
    while len(out) < n:
        for txn in gen.next_batch(min(10_000, n - len(out))):
            item = validate(
                orjson.dumps(txn),
                topic=settings.kafka.topic,
                partition=len(out) % 6,
                offset=len(out),
                key=txn["account_id"].encode(),
                limits=settings.validation,
                kafka_timestamp_ms=now_ms,
            )
            if isinstance(item, Transaction):
                out.append(item)
    return out[:n]


def secondary_indexes(cur: psycopg2.extensions.cursor) -> dict[str, str]:
    """The partitioned indexes of `transactions` (name -> definition), the registry's excluded."""
    cur.execute(
        """SELECT c.relname, pg_get_indexdef(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           WHERE i.indrelid = 'public.transactions'::regclass ORDER BY 1"""
    )
    return {r[0]: r[1] for r in cur.fetchall()}


def preload(pg: PostgresSettings, seed: list[Transaction], rows: int) -> dict[str, Any]:
    """Fill today's partition with `rows` rows shaped like `seed` (ids fresh, offsets and event
    times shifted on), registered in transaction_ids, indexes built after the load."""
    conn = psycopg2.connect(**_owner_dsn(pg))
    conn.autocommit = True
    started = time.perf_counter()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM transactions")
            have = cur.fetchone()[0]
            if have >= rows:
                return {"rows": have, "seconds": 0.0, "reused": True}
            # A smaller earlier load: start again (the registry copy below takes every row).
            cur.execute("TRUNCATE transactions, transaction_ids")
            have = 0
            indexes = secondary_indexes(cur)
            for name in indexes:
                cur.execute(f'DROP INDEX IF EXISTS "{name}"')
            cur.execute(
                "CREATE UNLOGGED TABLE IF NOT EXISTS index_cost_seed (LIKE transactions INCLUDING DEFAULTS)"
            )
            cur.execute("TRUNCATE index_cost_seed")
            cols = storage._TXN_COLS_SQL
            cur.copy_expert(f"COPY index_cost_seed ({cols}) FROM STDIN", _reader(storage.copy_rows(seed)))
            span = seed[-1].epoch - seed[0].epoch + 1.0
            k = 0
            while have < rows:
                n = min(len(seed), rows - have)
                # md5 of a counter, formatted as a UUID: as random as the producer's UUID4s.
                cur.execute(
                    f"""INSERT INTO transactions ({cols})
                        SELECT {", ".join(_shifted(c) for c in storage.COPY_COLUMNS)}
                        FROM (SELECT *, row_number() OVER () AS rn FROM index_cost_seed LIMIT %(n)s) s""",
                    {"k": k, "n": n, "span": span, "base": k * len(seed)},
                )
                have += n
                k += 1
            cur.execute(
                f"""INSERT INTO transaction_ids ({storage._ID_COLS_SQL}, processed_at)
                    SELECT {storage._ID_COLS_SQL}, processed_at FROM transactions"""
            )
            for definition in indexes.values():
                # pg_get_indexdef names the parent ONLY; the partitions need theirs too.
                cur.execute(definition.replace(" ON ONLY ", " ON ", 1))
            cur.execute("DROP TABLE index_cost_seed")
            cur.execute("VACUUM ANALYZE transactions")
            cur.execute("VACUUM ANALYZE transaction_ids")
    finally:
        conn.close()
    return {"rows": rows, "seconds": round(time.perf_counter() - started, 1), "reused": False}


def _shifted(column: str) -> str:
    if column == "transaction_id":
        return "md5(%(k)s::text || ':' || s.rn::text)::uuid::text"
    if column == "kafka_offset":
        return "s.kafka_offset + %(base)s"
    if column == "timestamp":
        return 's."timestamp" + make_interval(secs => %(k)s * %(span)s)'
    return f's."{column}"'


def _reader(text: str) -> io.StringIO:
    return io.StringIO(text)


# Candidate replacements (`--replacements`): the index dropped, and what stands in for it, built
# inside the measured transaction before the clock starts (and rolled back with it).
REPLACEMENTS: dict[str, tuple[list[str], list[str]]] = {
    "transaction_id as a hash index": (
        ["transactions_transaction_id_idx"],
        ["CREATE INDEX index_cost_alt ON transactions USING hash (transaction_id)"],
    ),
    # Since migration 092 the index is the hash one: this is the b-tree it replaced, the same run's "before".
    "transaction_id as a b-tree (before 092)": (
        ["transactions_transaction_id_idx"],
        ["CREATE INDEX index_cost_alt ON transactions (transaction_id)"],
    ),
    "transaction_id -> (topic id, partition, offset)": (
        ["transactions_transaction_id_idx"],
        ["CREATE INDEX index_cost_alt ON transactions (kafka_topic_id, kafka_partition, kafka_offset)"],
    ),
    "with migration 080's merchant and amount indexes (before 091)": (
        [],
        [
            "CREATE INDEX index_cost_merchant ON transactions (merchant)",
            "CREATE INDEX index_cost_amount ON transactions (amount)",
        ],
    ),
    "timestamp as a BRIN": (
        ["transactions_ts_idx"],
        ['CREATE INDEX index_cost_alt ON transactions USING brin ("timestamp")'],
    ),
}

# The registry's key (`--registry`): what `transaction_ids`' b-tree primary key costs, and what a
# hash exclusion constraint (as unique as the key: no two rows with equal ids can both commit)
# would cost in its place. Statements run inside the measured transaction, as above.
_REGISTRY_PKEY = "transaction_ids_pkey"
REGISTRY: dict[str, tuple[list[str], list[str]]] = {
    "transaction_id as a hash index": REPLACEMENTS["transaction_id as a hash index"],
    "transaction_id as a b-tree (before 092)": REPLACEMENTS["transaction_id as a b-tree (before 092)"],
    "registry without its unique key (its cost)": (
        [],
        [f"ALTER TABLE transaction_ids DROP CONSTRAINT {_REGISTRY_PKEY}"],
    ),
    "registry key as a hash exclusion constraint": (
        [],
        [
            f"ALTER TABLE transaction_ids DROP CONSTRAINT {_REGISTRY_PKEY}",
            "ALTER TABLE transaction_ids ADD CONSTRAINT index_cost_excl EXCLUDE USING hash (transaction_id WITH =)",
        ],
    ),
    "both ids hashed (registry exclusion + transaction_id hash)": (
        ["transactions_transaction_id_idx"],
        [
            "CREATE INDEX index_cost_alt ON transactions USING hash (transaction_id)",
            f"ALTER TABLE transaction_ids DROP CONSTRAINT {_REGISTRY_PKEY}",
            "ALTER TABLE transaction_ids ADD CONSTRAINT index_cost_excl EXCLUDE USING hash (transaction_id WITH =)",
        ],
    ),
}


def measure(
    pg: PostgresSettings, rows: list[Transaction], batch: int, drop: list[str], create: Sequence[str] = ()
) -> dict[str, float]:
    """Write `rows` in one transaction without the indexes `drop` (and with `create`), roll back;
    the backend's CPU and the wall time of the writes."""
    conn = psycopg2.connect(**_owner_dsn(pg))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            backend = psutil.Process(cur.fetchone()[0])
            for name in drop:
                cur.execute(f'DROP INDEX "{name}"')
            for statement in create:
                cur.execute(statement)
        t0 = backend.cpu_times()
        w0 = time.perf_counter()
        for i in range(0, len(rows), batch):
            storage.write_batch(conn, rows[i : i + batch], [], [])
        wall = time.perf_counter() - w0
        t1 = backend.cpu_times()
        conn.rollback()
        with conn.cursor() as cur:
            conn.autocommit = True
            cur.execute("VACUUM transactions")
            cur.execute("VACUUM transaction_ids")
    finally:
        conn.close()
    cpu = (t1.user - t0.user) + (t1.system - t0.system)
    return {"cpu_us_per_row": cpu / len(rows) * 1e6, "rate": len(rows) / wall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preload", type=int, default=3_000_000, help="rows in today's partition [3000000]")
    ap.add_argument("--rows", type=int, default=50_000, help="rows written per measurement [50000]")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--accounts", type=int, default=10_000, help="the generator's account pool [10000]")
    ap.add_argument("--migrations", type=Path, default=schema.MIGRATIONS_DIR)
    ap.add_argument(
        "--only", default="", help="comma-separated indexes to measure alone (default: every one; none: none)"
    )
    ap.add_argument("--replacements", action="store_true", help="also measure the candidate replacements")
    ap.add_argument(
        "--registry",
        action="store_true",
        help="also measure the registry's unique key and hash stand-ins for both id indexes",
    )
    ap.add_argument(
        "--before-091", action="store_true", help="also measure with the two indexes migration 091 dropped"
    )
    ap.add_argument(
        "--without",
        action="append",
        default=[],
        metavar="IDX+IDX",
        help="also measure without these indexes together (repeatable; e.g. migration 091's two)",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = load_settings()
    pg = settings.postgres
    schema.migrate(pg, args.migrations)
    conn = psycopg2.connect(**_owner_dsn(pg))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT public.ensure_partitions(1)")
    conn.close()

    log.info("generating %d seed rows", SEED_ROWS)
    seed = generate(settings, SEED_ROWS + args.rows, args.accounts, seed=7)
    fresh_src, seed = seed[SEED_ROWS:], seed[:SEED_ROWS]
    load = preload(pg, seed, args.preload)
    log.info("preload: %s", load)
    conn = psycopg2.connect(**_owner_dsn(pg))
    with conn.cursor() as cur:
        indexes = secondary_indexes(cur)
        cur.execute(
            """SELECT c.relname, pg_relation_size(c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_class p ON p.oid = i.inhparent WHERE p.relkind = 'I'
               AND p.relname = ANY(%s) AND pg_relation_size(c.oid) > 8192""",
            (list(indexes),),
        )
        sizes = {r[0]: r[1] for r in cur.fetchall()}
        cur.execute(
            """SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               WHERE i.indrelid = 'public.transaction_ids'::regclass"""
        )
        sizes.update({r[0]: r[1] for r in cur.fetchall()})
        cur.execute('SELECT max(kafka_offset), max("timestamp") FROM transactions')
        max_offset, max_ts = cur.fetchone()
    conn.close()
    only = [] if args.only == "none" else [x for x in args.only.split(",") if x] or list(indexes)
    variants: dict[str, tuple[list[str], list[str]]] = {"all": ([], [])}
    variants.update({f"without {name}": ([name], []) for name in only})
    variants.update({f"without {' + '.join(c.split('+'))}": (c.split("+"), []) for c in args.without})
    variants["without every secondary"] = (list(indexes), [])
    if args.replacements:
        variants.update(REPLACEMENTS)
    if args.registry:
        variants.update(REGISTRY)
    if args.before_091:
        name = "with migration 080's merchant and amount indexes (before 091)"
        variants[name] = REPLACEMENTS[name]
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    shift = max_ts - fresh_src[0].timestamp + timedelta(seconds=1)
    for r in range(args.rounds):
        # Fresh ids every round: the rolled-back ones are gone, but fresh keeps it plain.
        fresh = [
            dataclasses.replace(
                t,
                transaction_id=str(uuid.uuid4()),
                kafka_offset=max_offset + 1 + i,
                timestamp=t.timestamp + shift,
            )
            for i, t in enumerate(fresh_src)
        ]
        for name, (drop, create) in variants.items():
            m = measure(pg, fresh, settings.consumer.max_poll_records, drop, create)
            results[name].append(m)
            log.info("round %d %-45s %6.1f us/row  %8.0f rows/s", r + 1, name, m["cpu_us_per_row"], m["rate"])
    base = [m["cpu_us_per_row"] for m in results["all"]]
    summary = []
    print(
        f"\n{args.preload:,} rows in the day partition; {args.rows:,} rows per measurement, {args.rounds} rounds"
    )
    print(f"{'variant':<50} {'backend us/row':>14} {'cost of the index':>18} {'rows/s':>9}")
    for name, ms in results.items():
        cpu = statistics.median(m["cpu_us_per_row"] for m in ms)
        cost = statistics.median(b - m["cpu_us_per_row"] for b, m in zip(base, ms, strict=True))
        rate = statistics.median(m["rate"] for m in ms)
        summary.append({"variant": name, "cpu_us_per_row": cpu, "cost_us_per_row": cost, "rate": rate})
        print(f"{name:<50} {cpu:>14.1f} {cost:>18.1f} {rate:>9.0f}")
    print(
        "\nindex sizes in the day partition and the registry (MB): "
        + ", ".join(f"{k} {v / 2**20:.0f}" for k, v in sorted(sizes.items()))
    )
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"migrations": str(args.migrations), "json": str(args.json)},
                                         "summary": summary, "rounds": results, "sizes": sizes}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
