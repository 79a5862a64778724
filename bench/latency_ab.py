"""`python -m bench.ab --base REV --latency-rate 3000 [--rounds 4]`: end-to-end latency of two
revisions of the consumer and of the bare Kafka floor, interleaved round by round (A, B, floor;
then B, A, floor; ...), each on its own topic at the same offered rate. On a shared box the load
moves from minute to minute: the ratio to the floor measured in the same round is the figure
that holds, and the medians of those per-round ratios are what this prints. Each consumer run
also has a bare reader of its own topic beside it (the "same-run floor", bench/sections.py
latency_once): the ratio to it compares the two under the same producer and broker load.

Latency is taken at the COMMIT of each row's transaction where the server tracks commit
timestamps (bench/harness.py `latencies`), else at processed_at.
"""

from __future__ import annotations

import argparse
import math
import secrets
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import harness
from bench.context import Context
from bench.harness import Services, Workspace
from bench.sections import latency_floor_once, latency_once

PCTS = ("p50_ms", "p95_ms", "p99_ms")


def _figures(run: dict[str, Any]) -> dict[str, float] | None:
    lat = run.get("latency_at_commit") or run.get("latency") or {}
    if not lat.get("count"):
        return None
    return {p: float(lat[p]) for p in PCTS}


def latency_ab(args: argparse.Namespace, services: Services) -> int:
    from bench.ab import unpack

    run_id = f"lab{secrets.token_hex(3)}"
    ws = Workspace(services, run_id)
    logs = harness.REPO / "bench" / "results" / f"{run_id}-logs"
    rate = args.latency_rate
    count = int(rate * args.latency_seconds)
    accounts = max(1000, math.ceil(60 * rate / 2))  # as bench/sections.py section_latency
    ctx = Context(argparse.Namespace(seed=args.seed, profile=False), services, ws, logs)
    rounds: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="txmon-lab-") as tmp:
            trees = {"A": unpack(args.base, Path(tmp)), "B": harness.REPO}
            for r in range(args.rounds):
                one: dict[str, Any] = {}
                for side in ("A", "B") if r % 2 == 0 else ("B", "A"):
                    run = latency_once(ctx, f"{side}{r}", rate, count, accounts, tree=trees[side])
                    one[side] = run
                floor = latency_floor_once(ctx, rate, count, accounts, log_name=f"latency-floor-{r}")
                one["floor"] = {"latency": floor["latency"], "stored": floor["stored"]}
                rounds.append(one)
                print(_round_line(r, one), flush=True)
    finally:
        ws.close()
    print(f"A = {args.base}, B = working tree; {rate:,.0f}/s for {args.latency_seconds:g} s per run; "
          f"latency at COMMIT, ms; logs {logs}")  # fmt: skip
    ok = True
    for side in ("A", "B", "floor"):
        figs = [f for f in (_figures(r[side]) for r in rounds) if f]
        if not figs:
            ok = False
            continue
        med = {p: statistics.median(f[p] for f in figs) for p in PCTS}
        line = (
            f"{side:>5}: median p50/p95/p99 {med['p50_ms']:.1f} / {med['p95_ms']:.1f} / {med['p99_ms']:.1f}"
        )
        if side != "floor":
            ratios = [
                a[p] / b[p]
                for r in rounds
                if (a := _figures(r[side])) and (b := _figures(r["floor"]))
                for p in ("p99_ms",)
            ]
            if ratios:
                line += f"; p99 / floor's p99 in the same round: median {statistics.median(ratios):.2f}x"
                line += f" ({', '.join(f'{x:.2f}' for x in ratios)})"
            same = [x for x in (_same_run_ratio(r[side]) for r in rounds) if x is not None]
            if same:
                line += f"; p99 / the same-run floor's (a bare reader beside it): median {statistics.median(same):.2f}x"
                line += f" ({', '.join(f'{x:.2f}' for x in same)})"
        print(line)
    ok = ok and all(r[s].get("stored") == count for r in rounds for s in ("A", "B"))
    return 0 if ok else 1


def _same_run_ratio(run: dict[str, Any]) -> float | None:
    """The consumer's p99 over that of a bare reader of the same topic in the same run
    (bench/sections.py latency_once's probe), the same messages on both sides."""
    same = run.get("same_run_floor") or {}
    if not same.get("joined"):
        return None
    a, b = same["consumer"].get("p99_ms"), same["probe"].get("p99_ms")
    return a / b if a and b else None


def _round_line(r: int, one: dict[str, Any]) -> str:
    parts = []
    for side in ("A", "B", "floor"):
        f = _figures(one[side])
        parts.append(f"{side} " + ("-" if f is None else "/".join(f"{f[p]:.0f}" for p in PCTS)))
        probe = (one[side].get("same_run_floor") or {}).get("probe") or {}
        if probe.get("count"):
            parts[-1] += " (beside it: " + "/".join(f"{probe[p]:.0f}" for p in PCTS) + ")"
    return f"round {r}: " + ", ".join(parts) + " ms"
