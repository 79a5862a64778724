"""How PostgreSQL's CPU per stored row grows as a day's tables grow, per index layout.

    python -m bench.index_growth [--rows 3000000] [--batch 5000] [--variants btree,hash] [--json FILE]

`bench.index_cost` measures indexes on a preloaded, freshly built table; the consumer's day
partition instead grows from empty by random-key inserts (half-full b-tree pages after splits,
hash buckets split as they fill), and the long run's slide is that growth. Here every variant
gets its own copy of the day's tables, empty at the start: a table shaped like `transactions`
with its indexes (the variant decides the one on `transaction_id`) and a registry shaped like
`transaction_ids` with its primary key. Each variant writes through its own connection (its own
backend), the same rows in the same batches (the consumer's COPY of the rows, then of their ids,
one commit per batch), the variants taking turns batch by batch, so the machine's other load and
PostgreSQL's shared buffers fall on all alike. Reported: each backend's CPU per row in each
tenth of the rows, and the tables' index sizes at the end.

Against the PostgreSQL of `.env` / the environment (a dev stack: `python -m stack up`), in the
settings' database, which it migrates; its scratch tables (`index_growth_*`) are dropped at the
end. Both variants' tables share the server's caches, so at `--rows N` the cache pressure is that
of ~N x variants rows of one pipeline.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import psycopg2.extensions

from bench.index_cost import _owner_dsn, generate, secondary_indexes
from consumer import storage
from utils import schema
from utils.config import load_settings
from utils.models import Transaction

log = logging.getLogger("bench.index_growth")

SEED_ROWS = 50_000
# Per variant: the index on transactions.transaction_id ({t}: the variant's table), and what
# becomes of the registry's b-tree primary key ({r}: the variant's registry; None: kept).
VARIANTS: dict[str, tuple[str, str | None]] = {
    "btree": ("CREATE INDEX ON {t} (transaction_id)", None),
    "hash": ("CREATE INDEX ON {t} USING hash (transaction_id)", None),
    # The registry's key as a hash exclusion constraint: as unique (no two equal ids commit).
    "hash+excl": (
        "CREATE INDEX ON {t} USING hash (transaction_id)",
        "ALTER TABLE {r} DROP CONSTRAINT {r}_pkey, ADD EXCLUDE USING hash (transaction_id WITH =)",
    ),
}


def create_tables(cur: psycopg2.extensions.cursor, variant: str) -> tuple[str, str]:
    """The variant's empty copy of the day partition (every index of `transactions` but the id
    index, which the variant gives) and of the registry (with its primary key)."""
    name = variant.replace("+", "_")
    table, ids = f"index_growth_{name}", f"index_growth_{name}_ids"
    cur.execute(f"DROP TABLE IF EXISTS {table}, {ids}")
    cur.execute(f"CREATE TABLE {table} (LIKE transactions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    for name, definition in secondary_indexes(cur).items():
        if name == "transactions_transaction_id_idx":
            continue
        # "CREATE INDEX name ON ONLY public.transactions USING ..." -> an unnamed index on the copy.
        using = definition.split(" USING ", 1)[1]
        cur.execute(f"CREATE INDEX ON {table} USING {using}")
    id_index, registry_key = VARIANTS[variant]
    cur.execute(id_index.format(t=table))
    cur.execute(f"CREATE TABLE {ids} (LIKE transaction_ids INCLUDING ALL)")
    if registry_key is not None:
        cur.execute(registry_key.format(r=ids))
    return table, ids


def ids_payload(txns: list[Transaction]) -> bytes:
    """The registry's COPY lines, as consumer.storage._copy_ids writes them."""
    esc = storage._copy_text
    lines = [
        f"{esc(t.transaction_id)}\t{esc(t.kafka_topic)}\t{storage.NIL}\t{t.kafka_partition}\t{t.kafka_offset}"
        for t in txns
    ]
    lines.append("")
    return "\n".join(lines).encode()


def index_sizes(cur: psycopg2.extensions.cursor, table: str) -> dict[str, int]:
    cur.execute(
        """SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           WHERE i.indrelid = %s::regclass ORDER BY 1""",
        (table,),
    )
    return {r[0]: r[1] for r in cur.fetchall()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=3_000_000, help="rows each variant writes [3000000]")
    ap.add_argument("--batch", type=int, default=5_000, help="rows per commit (the consumer's batch) [5000]")
    ap.add_argument("--variants", default="btree,hash", help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--accounts", type=int, default=10_000, help="the generator's account pool [10000]")
    ap.add_argument("--keep", action="store_true", help="keep the scratch tables")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}")
    settings = load_settings()
    pg = settings.postgres
    schema.migrate(pg)
    log.info("generating %d seed rows", SEED_ROWS)
    seed = generate(settings, SEED_ROWS, args.accounts, seed=7)
    span = max(t.timestamp for t in seed) - min(t.timestamp for t in seed) + timedelta(seconds=1)

    conns: dict[str, psycopg2.extensions.connection] = {}
    backends: dict[str, psutil.Process] = {}
    tables: dict[str, tuple[str, str]] = {}
    for v in variants:
        conn = psycopg2.connect(**_owner_dsn(pg))
        with conn.cursor() as cur:
            tables[v] = create_tables(cur, v)
            cur.execute("SELECT pg_backend_pid()")
            backends[v] = psutil.Process(cur.fetchone()[0])
        conn.commit()
        conns[v] = conn

    tenth = max(args.rows // 10, args.batch)
    cpu = {v: [0.0] * 10 for v in variants}
    wall = {v: [0.0] * 10 for v in variants}
    written = 0
    try:
        while written < args.rows:
            n = min(args.batch, args.rows - written)
            # Fresh random ids, offsets on, and each pass over the seed later by the seed's span:
            # every batch is new rows, as the consumer's are (repeated keys would let the b-trees
            # deduplicate and stay small).
            txns = [
                dataclasses.replace(
                    seed[(written + i) % len(seed)],
                    transaction_id=str(uuid.uuid4()),
                    kafka_offset=written + i,
                    timestamp=seed[(written + i) % len(seed)].timestamp + span * ((written + i) // len(seed)),
                )
                for i in range(n)
            ]
            payload = storage.copy_rows(txns)
            ids = ids_payload(txns)
            k = min(written // tenth, 9)
            for v in variants:
                table, registry = tables[v]
                t0, w0 = backends[v].cpu_times(), time.perf_counter()
                with conns[v].cursor() as cur:
                    storage._copy_in(cur, table, payload)
                    cur.copy_expert(
                        f"COPY {registry} ({storage._ID_COLS_SQL}) FROM STDIN",
                        io.BytesIO(ids),
                        size=len(ids) + 1,
                    )
                conns[v].commit()
                t1 = backends[v].cpu_times()
                wall[v][k] += time.perf_counter() - w0
                cpu[v][k] += (t1.user - t0.user) + (t1.system - t0.system)
            written += n
            if written % tenth < args.batch:
                log.info(
                    "%d rows: %s", written,
                    "  ".join(f"{v} {cpu[v][k] / tenth * 1e6:.1f} us/row" for v in variants),
                )  # fmt: skip
        sizes: dict[str, dict[str, int]] = {}
        for v in variants:
            with conns[v].cursor() as cur:
                sizes[v] = index_sizes(cur, tables[v][0]) | index_sizes(cur, tables[v][1])
    finally:
        for v, conn in conns.items():
            conn.rollback()
            if not args.keep:
                with conn.cursor() as cur:
                    cur.execute(f"DROP TABLE IF EXISTS {tables[v][0]}, {tables[v][1]}")
                conn.commit()
            conn.close()

    rows_in = [min(tenth, args.rows - i * tenth) for i in range(10)]
    per_row = {
        v: [c / r * 1e6 if r > 0 else 0.0 for c, r in zip(cpu[v], rows_in, strict=True)] for v in variants
    }
    print(
        f"\n{args.rows:,} rows per variant from empty, batches of {args.batch:,}; backend CPU us/row by tenth"
    )
    print(f"{'variant':<8} " + " ".join(f"{i + 1:>6}" for i in range(10)) + f" {'last/first':>11} {'all':>6}")
    for v in variants:
        first, last = per_row[v][0], per_row[v][9]
        total = sum(cpu[v]) / args.rows * 1e6
        print(
            f"{v:<8} " + " ".join(f"{x:>6.1f}" for x in per_row[v]) + f" {last / first:>10.2f}x {total:>6.1f}"
        )
    base = variants[0]
    for v in variants[1:]:
        ratio = [b and x / b for x, b in zip(per_row[v], per_row[base], strict=True)]
        print(f"{v}/{base} by tenth: " + " ".join(f"{r:.2f}" for r in ratio))
    for v in variants:
        print(f"index sizes, {v} (MB): " + ", ".join(f"{k} {s / 2**20:.0f}" for k, s in sizes[v].items()))
    if args.json:
        out: dict[str, Any] = {"args": vars(args) | {"json": str(args.json)}, "cpu_us_per_row_by_tenth": per_row,
                               "wall_s_by_tenth": wall, "sizes": sizes}  # fmt: skip
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
