"""Where a message's end-to-end latency goes inside the consumer: per-batch stage times, per-message
ages, and the garbage collector's pauses, written as JSON by `--timings-json PATH`
(consumer/transaction_processor.py) and read by the benchmark's latency section.

A diagnostic only: nothing here feeds a decision (every decision stays a function of the
stream); it reads the wall clock to say how long things took. One batch's life:

    poll returns (polled) -> housekeeping (partition keeper, rebalance, rule-set check: `house`)
    -> validate and evaluate (`prepare`), load the accounts not in memory (`load`)
    -> wait for the batch in flight (`wait`)
    -> handed to the writer thread (submitted) -> the writer starts it (`queue`)
    -> offsets, txid, positions, rule_set_applied (`pre`) -> write_batch (`copy`)
    -> COMMIT (`commit`) -> stored_at

A message's latency at commit (stored_at - its `timestamp`, what a reader of the table sees) is
its age when the poll returned (`at_poll`: the broker, the fetch, and the time it sat in the
client's buffer while the main thread was busy) plus the batch's stages after it. `summarise`
reports the stages' percentiles weighted by message, and the mean of each stage over the
messages of the slowest 1 % against the middle ones: the tail's cause, measured.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BatchTiming", "TimingRecorder", "percentile", "summarise"]

# Bounded: a long run keeps its first million messages' figures and says it stopped there.
MAX_MESSAGES = 1_000_000
STAGES = ("at_poll", "house", "prepare", "load", "wait", "queue", "pre", "copy", "commit")


@dataclass(slots=True)
class BatchTiming:
    """Stamps of one batch (Unix seconds; durations in seconds). The writer thread fills the
    write stamps of the last attempt; `write_start` keeps the first."""

    polled: float = 0.0
    poll_s: float = 0.0  # the poll() call that returned the records (waiting for data included)
    house_s: float = 0.0
    prepare_s: float = 0.0  # validation and rules
    load_s: float = 0.0  # account loads (a database round trip in the main thread)
    wait_s: float = 0.0
    submitted: float = 0.0
    write_start: float = 0.0
    pre_s: float = 0.0
    copy_s: float = 0.0
    commit_s: float = 0.0
    stored_at: float = 0.0
    epochs: array = field(default_factory=lambda: array("d"))  # the unlabelled messages' timestamps

    def writer_started(self) -> None:
        if not self.write_start:
            self.write_start = time.time()


class TimingRecorder:
    """Collects BatchTimings once their batch is stored, and the collector's pauses."""

    def __init__(self, max_messages: int = MAX_MESSAGES) -> None:
        self.batches: list[BatchTiming] = []
        self.messages = 0
        self.max_messages = max_messages
        self.truncated = False
        self.gc_pauses: list[tuple[float, float, int]] = []  # (start, seconds, generation)
        self._gc_started = 0.0
        self._lock = threading.Lock()

    def watch_gc(self) -> None:
        gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.time()
        if phase == "start":
            self._gc_started = now
        elif self._gc_started and not self.truncated:
            with self._lock:
                self.gc_pauses.append((self._gc_started, now - self._gc_started, int(info["generation"])))

    def stored(self, timing: BatchTiming) -> None:
        if self.truncated:
            return
        if self.messages + len(timing.epochs) > self.max_messages:
            self.truncated = True
            return
        self.batches.append(timing)
        self.messages += len(timing.epochs)

    def write(self, path: Path) -> None:
        with self._lock:
            pauses = list(self.gc_pauses)
        doc = summarise(self.batches, pauses)
        doc["truncated"] = self.truncated
        path.write_text(json.dumps(doc, indent=2))


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank-interpolated percentile of sorted values (as bench/stats.py)."""
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def _ms(x: float) -> float:
    return round(x * 1000.0, 2)


def _pcts(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    v = sorted(values)
    return {
        "count": len(v),
        "p50_ms": _ms(percentile(v, 50)),
        "p95_ms": _ms(percentile(v, 95)),
        "p99_ms": _ms(percentile(v, 99)),
        "max_ms": _ms(v[-1]),
    }


def _counts(values: list[int]) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    v = sorted(values)
    return {"count": len(v), "p50": percentile(v, 50), "p99": percentile(v, 99), "max": v[-1]}


def _stages(b: BatchTiming, epoch: float) -> dict[str, float]:
    return {
        "at_poll": b.polled - epoch,
        "house": b.house_s,
        "prepare": b.prepare_s,
        "load": b.load_s,
        "wait": b.wait_s,
        "queue": max(0.0, b.write_start - b.submitted),
        "pre": b.pre_s,
        "copy": b.copy_s,
        "commit": b.commit_s,
    }


def summarise(
    batches: Sequence[BatchTiming], gc_pauses: Sequence[tuple[float, float, int]]
) -> dict[str, Any]:
    """The figures `--timings-json` writes (milliseconds). `tail` and `middle`: the mean of each
    stage over the messages at or above the p99 latency at commit, and between p45 and p55;
    `gc_ms` there is the collector's pause time inside each message's batch's life (poll to commit)."""
    rows: list[tuple[float, BatchTiming, float]] = []  # (latency at commit, batch, timestamp)
    for b in batches:
        for epoch in b.epochs:
            rows.append((b.stored_at - epoch, b, epoch))
    rows.sort(key=lambda r: r[0])
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    for _, b, epoch in rows:
        for name, value in _stages(b, epoch).items():
            per_stage[name].append(value)
    gc_by_gen: dict[int, list[float]] = {}
    for _, seconds, gen in gc_pauses:
        gc_by_gen.setdefault(gen, []).append(seconds)
    pauses = sorted(gc_pauses)

    def gc_within(b: BatchTiming) -> float:
        lo, hi = b.polled - b.poll_s, b.stored_at  # a pause inside poll() also delays the batch
        return sum(s for start, s, _ in pauses if lo <= start <= hi)

    def mean_breakdown(selected: list[tuple[float, BatchTiming, float]]) -> dict[str, float]:
        if not selected:
            return {}
        n = len(selected)
        out = {"messages": float(n), "latency_ms": _ms(sum(r[0] for r in selected) / n)}
        for name in STAGES:
            out[f"{name}_ms"] = _ms(sum(_stages(b, e)[name] for _, b, e in selected) / n)
        out["gc_ms"] = _ms(sum(gc_within(b) for _, b, _e in selected) / n)
        out["batch_messages"] = round(sum(len(b.epochs) for _, b, _e in selected) / n, 1)
        return out

    n = len(rows)
    tail = rows[int(n * 0.99) :] if n else []
    middle = rows[int(n * 0.45) : max(int(n * 0.55), int(n * 0.45) + 1)] if n else []
    return {
        "batches": len(batches),
        "messages": n,
        "batch_messages": _counts([len(b.epochs) for b in batches]),
        "latency_at_commit": _pcts([r[0] for r in rows]),
        "stages": {name: _pcts(values) for name, values in per_stage.items()},
        "poll_call": _pcts([b.poll_s for b in batches]),
        "tail": mean_breakdown(tail),
        "middle": mean_breakdown(middle),
        "gc": {
            str(gen): {"count": len(v), "total_ms": _ms(sum(v)), "max_ms": _ms(max(v))}
            for gen, v in sorted(gc_by_gen.items())
        },
    }
