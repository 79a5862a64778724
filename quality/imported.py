"""Score the rules on labelled data someone else wrote: load a file through the import path
(`--from` / producer/replay.py) into a fresh database and topic, run the real consumer, and
report, per fraud type of the file's labels, which rules caught its incidents, and the share of
its ordinary (unlabelled) transactions alerted.

    python -m quality.imported --from finforge.csv --mapping examples/finforge.mapping.json

Extra environment (e.g. STATE_HISTORY_HOURS=720 for a few transactions a day) reaches the
consumer as it would in production.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from consumer.rules import RULES
from producer.replay import ReplaySummary, run_replay
from quality.run import RESULTS_DIR, _local_stack, prepare, quality_settings
from stack.demo import with_consumer
from utils import database
from utils.config import load_settings
from utils.errors import TxmonError
from utils.logs import configure_logging


def measure(settings: Any) -> dict[str, Any]:
    db = database.Database(settings.postgres, maxconn=1)
    try:
        with db.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT simulated_scenario, simulated_incident FROM transactions WHERE kafka_topic = %s "
                "AND simulated_incident IS NOT NULL GROUP BY 1, 2",
                (settings.kafka.topic,),
            )
            incidents = {i: s for s, i in cur.fetchall()}
            cur.execute(
                "SELECT a.alert_type, t.simulated_incident, t.transaction_id FROM alerts a "
                "JOIN transactions t USING (transaction_id) WHERE t.kafka_topic = %s",
                (settings.kafka.topic,),
            )
            alerts = cur.fetchall()
            cur.execute(
                "SELECT count(*) FROM transactions WHERE kafka_topic = %s AND simulated_incident IS NULL",
                (settings.kafka.topic,),
            )
            ordinary = int(cur.fetchone()[0])
    finally:
        db.close()
    per_type = Counter(incidents.values())
    caught_by: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    ordinary_alerted: set[str] = set()
    ordinary_by_rule: Counter[str] = Counter()
    for rule, incident, tid in alerts:
        if incident is None:
            ordinary_alerted.add(tid)
            ordinary_by_rule[rule] += 1
        elif incident in incidents:
            caught_by[incidents[incident]][rule].add(incident)
    types = {}
    for kind, n in sorted(per_type.items()):
        any_rule = set().union(*caught_by[kind].values()) if caught_by[kind] else set()
        types[kind] = {
            "incidents": n,
            "caught_by_any": len(any_rule),
            "recall_any": round(len(any_rule) / n, 3),
            "by_rule": {r: len(caught_by[kind][r]) for r, _ in RULES if caught_by[kind][r]},
        }
    return {
        "ordinary": ordinary,
        "ordinary_alerted": len(ordinary_alerted),
        "ordinary_share": round(len(ordinary_alerted) / ordinary, 5) if ordinary else None,
        "ordinary_alerts_by_rule": dict(ordinary_by_rule.most_common()),
        "fraud_types": types,
    }


def table(result: dict[str, Any]) -> str:
    rules = [r for r, _ in RULES if any(r in t["by_rule"] for t in result["fraud_types"].values())]
    lines = [
        "| fraud type | incidents | caught (any rule) | recall | "
        + " | ".join(f"`{r}`" for r in rules)
        + " |",
        "|---|---:|---:|---:|" + "---:|" * len(rules),
    ]
    for kind, t in result["fraud_types"].items():
        cells = " | ".join(str(t["by_rule"].get(r, 0)) for r in rules)
        lines.append(
            f"| {kind} | {t['incidents']} | {t['caught_by_any']} | {100 * t['recall_any']:.1f} % | {cells} |"
        )
    share = result["ordinary_share"]
    lines.append("")
    lines.append(
        f"ordinary transactions alerted: {result['ordinary_alerted']} of {result['ordinary']}"
        + ("" if share is None else f" = {100 * share:.2f} %")
        + f"; by rule: {result['ordinary_alerts_by_rule']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quality.imported", description=__doc__.split("\n")[0])
    p.add_argument("--from", dest="from_file", type=Path, required=True)
    p.add_argument("--mapping", type=Path, required=True)
    p.add_argument("--database", default="txmon_import")
    p.add_argument("--topic", default="transactions.import")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"), os.environ.get("LOG_FORMAT", "text"))
    started = time.monotonic()
    try:
        stack = _local_stack()
        base = load_settings()
        settings = quality_settings(base, args.database, args.topic, base.producer.fraud_rate)
        prepare(settings, base.postgres.db, fresh=True, stack=stack)

        def replay() -> ReplaySummary:
            return run_replay(settings, args.from_file, args.mapping)

        sent, consumed = with_consumer(settings, replay, idle_s=10.0, timeout_s=900.0)
        if not sent.ok:
            raise TxmonError(f"the replay acked {sent.acked} of {sent.sent}")
        result = measure(settings)
    except TxmonError as exc:
        print(f"quality.imported failed: {exc}", file=sys.stderr)
        return 2
    report = {
        "command": "python -m quality.imported " + " ".join(argv if argv is not None else sys.argv[1:]),
        "state_history_hours": settings.consumer.state_history_hours,
        "replay": sent.as_dict(),
        "consumer": {k: consumed[k] for k in ("consumed", "stored", "rejected", "alerts")},
        **result,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    path = args.json or RESULTS_DIR / f"imported-{args.from_file.stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{args.from_file}: {sent.rows} rows, {sent.mapped} mapped, {len(sent.problems)} not sent\n")
    print(table(result))
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
