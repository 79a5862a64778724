"""Pure helpers of the benchmark: percentiles, rates from stored batches, RSS trends, ratios,
the result document and its text table. No I/O; unit-tested in tests/unit/test_bench.py."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from statistics import median
from typing import Any

SCHEMA_VERSION = 1

# The sections every result document has (a section that failed holds {"error": ...}).
SECTIONS = ("throughput", "latency", "memory", "scaling", "profile")
# Top-level keys of the result document.
DOCUMENT_KEYS = (
    "schema",
    "started_at",
    "mode",
    "elapsed_s",
    "params",
    "machine",
    "sections",
    "ratios",
    "errors",
    "warnings",
)


# ------------------------------------------------------------------------------------ numbers


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks (numpy's
    default). `values` need not be sorted. NaN for an empty sequence."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {q}")
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    frac = pos - lo
    return data[lo] + (data[hi] - data[lo]) * frac


def format_timings(t: dict[str, Any] | None) -> list[str]:
    """Where a latency run's time went (consumer/timings.py): the mean of each stage over the
    slowest 1 % of messages and over the middle ones, in ms."""
    if not t or not t.get("tail"):
        return []
    names = ("at_poll", "house", "prepare", "load", "wait", "queue", "pre", "copy", "commit", "gc")
    out = ["    where it goes (ms)  " + " ".join(f"{n:>8}" for n in ("latency", *names)) + "  msgs/batch"]
    for which in ("middle", "tail"):
        d = t[which]
        cells = [d.get("latency_ms"), *(d.get(f"{n}_ms") for n in names)]
        label = "p45-p55" if which == "middle" else ">= p99"
        out.append(
            f"    {label:<19} "
            + " ".join(f"{'-' if c is None else f'{c:.1f}':>8}" for c in cells)
            + f"  {d.get('batch_messages', 0):.0f}"
        )
    return out


def format_probe(run: Mapping[str, Any]) -> list[str]:
    """The same-run floor beside a consumer run (bench/sections.py latency_once), and where a bare
    reader's time went (producer -> broker, broker -> reader) in that run or a floor run."""
    out: list[str] = []
    same = run.get("same_run_floor") or {}
    if same.get("joined"):
        pr, cons, over = same["probe"], same["consumer"], same["over_probe"]
        out.append(
            f"    same-run floor (bare reader beside it) p50/p95/p99 {fmt_ms(pr.get('p50_ms'))} / "
            f"{fmt_ms(pr.get('p95_ms'))} / {fmt_ms(pr.get('p99_ms'))} ms; consumer p99 / it "
            f"{fmt_ratio(ratio(cons.get('p99_ms'), pr.get('p99_ms')))}"
        )
        out.append(
            f"    consumer - bare reader, same message  p50/p95/p99 {fmt_ms(over.get('p50_ms'))} / "
            f"{fmt_ms(over.get('p95_ms'))} / {fmt_ms(over.get('p99_ms'))} ms; slowest 1 %: "
            f"{fmt_ms(same['tail'].get('over_probe_ms'))} of {fmt_ms(same['tail'].get('latency_ms'))} ms"
        )
        slices = same.get("by_slice") or {}
        for key, what in (("probe", "bare reader"), ("over_probe", "consumer - reader")):
            cells = [fmt_ms(c.get("p99_ms")) if c else "-" for c in slices.get(key) or []]
            if cells:
                out.append(f"    p99 by tenth of the run, {what}: {' '.join(cells)} ms")
    split = run.get("probe_split") or {}
    if split.get("count"):
        tb, tr, tail = split["to_broker"], split["to_reader"], split["tail"]
        out.append(
            f"    bare reader: producer -> broker p50/p99 {fmt_ms(tb.get('p50_ms'))} / {fmt_ms(tb.get('p99_ms'))}, "
            f"broker -> reader {fmt_ms(tr.get('p50_ms'))} / {fmt_ms(tr.get('p99_ms'))} ms; slowest 1 %: "
            f"{fmt_ms(tail.get('to_broker_ms'))} + {fmt_ms(tail.get('to_reader_ms'))} ms"
        )
    return out


def latency_summary(latencies_s: Sequence[float]) -> dict[str, Any]:
    """p50/p95/p99/max/mean in milliseconds of per-row latencies given in seconds."""
    if not latencies_s:
        return {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    data = sorted(latencies_s)
    return {
        "count": len(data),
        "p50_ms": round(percentile(data, 50) * 1000, 2),
        "p95_ms": round(percentile(data, 95) * 1000, 2),
        "p99_ms": round(percentile(data, 99) * 1000, 2),
        "max_ms": round(data[-1] * 1000, 2),
        "mean_ms": round(sum(data) / len(data) * 1000, 2),
    }


def parse_probe_dump(text: str) -> dict[tuple[int, int], tuple[float, float, float]]:
    """bench/latency_floor.py `--dump` lines `partition offset record_ms stamp recv` ->
    {(partition, offset): (record timestamp s, stamp s, receive s)}."""
    out: dict[tuple[int, int], tuple[float, float, float]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        part, off, record_ms, stamp, recv = line.split()
        out[(int(part), int(off))] = (int(record_ms) / 1000.0, float(stamp), float(recv))
    return out


def beside_probe(
    rows: Iterable[tuple[int, int, float, float]],
    probe: Mapping[tuple[int, int], tuple[float, float, float]],
) -> dict[str, Any]:
    """The consumer's latency against a bare reader of the same topic in the same run, message
    by message. `rows`: (partition, offset, stamp s, stored s) of the consumer's rows; `probe`:
    parse_probe_dump. `probe`: the bare reader's own latency (receive - stamp) over the joined
    messages; `over_probe`: stored - the reader's receive, what the consumer adds for the same
    message; `tail_over_probe`: that added part over the messages in the slowest 1 % of the
    consumer's latency, against the middle 10 %; `by_slice`: the reader's latency and the added
    part in each tenth of the run (latency_by_slice): a start-up transient of the consumer's own
    shows in the first tenth of `over_probe`."""
    joined: list[tuple[float, float, float]] = []  # (consumer latency, probe latency, added)
    stamps: list[float] = []
    for part, off, stamp, stored in rows:
        hit = probe.get((part, off))
        if hit is None:
            continue
        recv = hit[2]
        joined.append((stored - stamp, recv - stamp, stored - recv))
        stamps.append(stamp)
    if not joined:
        return {"joined": 0}
    by_slice = {
        "probe": latency_by_slice([(t, j[1]) for t, j in zip(stamps, joined, strict=True)]),
        "over_probe": latency_by_slice([(t, j[2]) for t, j in zip(stamps, joined, strict=True)]),
    }
    joined.sort()
    n = len(joined)
    tail = joined[int(n * 0.99) :]
    middle = joined[int(n * 0.45) : max(int(n * 0.55), int(n * 0.45) + 1)]

    def means(sel: Sequence[tuple[float, float, float]]) -> dict[str, float]:
        k = len(sel)
        return {
            "messages": k,
            "latency_ms": round(sum(r[0] for r in sel) / k * 1000, 2),
            "probe_ms": round(sum(r[1] for r in sel) / k * 1000, 2),
            "over_probe_ms": round(sum(r[2] for r in sel) / k * 1000, 2),
        }

    return {
        "joined": n,
        "consumer": latency_summary([r[0] for r in joined]),
        "probe": latency_summary([r[1] for r in joined]),
        "over_probe": latency_summary([r[2] for r in joined]),
        "tail": means(tail),
        "middle": means(middle),
        "by_slice": by_slice,
    }


def probe_split(probe: Mapping[tuple[int, int], tuple[float, float, float]]) -> dict[str, Any]:
    """A bare reader's latency cut where the broker appended each message, on a topic with
    `message.timestamp.type=LogAppendTime` (the record timestamp is then the broker's): `to_broker`
    (append - stamp: the producer's generation, batching and send, on this box's CPU) and
    `to_reader` (receive - append: the broker's fetch and the reader's poll). `tail`: their means
    over the slowest 1 % of the reader's messages. On a CreateTime topic `to_broker` is only the
    producer's send() delay: read it as a split only where the bench made the topic."""
    data = sorted(((recv - stamp, rec - stamp, recv - rec) for rec, stamp, recv in probe.values()))
    if not data:
        return {"count": 0}
    tail = data[int(len(data) * 0.99) :]
    k = len(tail)
    return {
        "count": len(data),
        "to_broker": latency_summary([d[1] for d in data]),
        "to_reader": latency_summary([d[2] for d in data]),
        "tail": {
            "messages": k,
            "latency_ms": round(sum(d[0] for d in tail) / k * 1000, 2),
            "to_broker_ms": round(sum(d[1] for d in tail) / k * 1000, 2),
            "to_reader_ms": round(sum(d[2] for d in tail) / k * 1000, 2),
        },
    }


def latency_by_slice(rows: Iterable[tuple[float, float]], slices: int = 10) -> list[dict[str, Any] | None]:
    """p50/p99 latency (ms) of the messages in each of `slices` equal spans of stamp time.
    `rows`: (stamp s, latency s). Says whether the tail sits at the start (a warm-up transient)
    or is spread over the run. None for a span without messages."""
    data = sorted(rows)
    if not data:
        return []
    t0, t1 = data[0][0], data[-1][0]
    width = (t1 - t0) / slices or 1.0
    buckets: list[list[float]] = [[] for _ in range(slices)]
    for stamp, lat in data:
        buckets[min(slices - 1, int((stamp - t0) / width))].append(lat)
    out: list[dict[str, Any] | None] = []
    for b in buckets:
        if not b:
            out.append(None)
            continue
        v = sorted(b)
        out.append(
            {
                "count": len(v),
                "p50_ms": round(percentile(v, 50) * 1000, 2),
                "p99_ms": round(percentile(v, 99) * 1000, 2),
            }
        )
    return out


def span_rate(count: int, first: float, last: float) -> float | None:
    """Rows per second between the first and the last stored row; None when undefined."""
    if count < 2 or last <= first:
        return None
    return count / (last - first)


def steady_window(
    groups: Iterable[tuple[float, int]], lo: float = 0.1, hi: float = 0.9, *, widen: bool = True
) -> tuple[float, float, int] | None:
    """(start, end, rows) between the commits that completed `lo` and `hi` of all rows.

    `groups` are (end time in seconds, rows) of each database transaction that stored rows (one
    consumer batch; one row for the naive consumer). Cutting at commit boundaries makes the
    window an exact count over an exact time; leaving out the first and last tenth leaves out
    group joins, rebalances and the tail of unevenly loaded consumers. With too few groups for
    that, the window widens to the first and last group (unless `widen` is false); with one
    group there is no window.
    """
    ordered = sorted((t, n) for t, n in groups if n > 0)
    if len(ordered) < 2:
        return None
    total = sum(n for _, n in ordered)
    cumulative = []
    running = 0
    for _, n in ordered:
        running += n
        cumulative.append(running)
    a = next(i for i, c in enumerate(cumulative) if c >= lo * total)
    b = next(i for i, c in enumerate(cumulative) if c >= hi * total)
    if b <= a:
        if not widen:
            return None
        a, b = 0, len(ordered) - 1
    if ordered[b][0] <= ordered[a][0]:
        return None
    return ordered[a][0], ordered[b][0], cumulative[b] - cumulative[a]


def steady_rate(groups: Iterable[tuple[float, int]], lo: float = 0.1, hi: float = 0.9) -> float | None:
    """Rows per second over `steady_window` (lo=0, hi=1: from the first commit to the last)."""
    window = steady_window(groups, lo, hi)
    if window is None:
        return None
    start, end, rows = window
    return rows / (end - start)


def rate_profile(groups: Sequence[tuple[float, int]], parts: int = 10) -> list[float | None]:
    """The rate within each successive `parts`-th of the rows (commit-aligned): flat for a
    consumer whose speed does not depend on how much it has already stored. None where a part
    falls within one commit."""
    out: list[float | None] = []
    for i in range(parts):
        window = steady_window(groups, i / parts, (i + 1) / parts, widen=False)
        out.append(None if window is None else window[2] / (window[1] - window[0]))
    return out


def edge_rates(groups: Sequence[tuple[float, int]], rows: int = 1_000_000, after: int = 0) -> dict[str, Any]:
    """The rate over the first and over the last `rows` rows (commit-aligned; at most half of
    them each) and last / first: does a long run slow down as its tables grow? `after`: rows
    left out at the start (a warm-up); the first window starts at the commit that completed them."""
    total = sum(n for _, n in groups if n > 0)
    measured = total - max(0, after)
    if measured <= 0:
        return {"rows": 0, "first": None, "last": None, "last_over_first": None}
    span = min(rows, measured // 2)
    rates = []
    for lo, hi in (
        ((total - measured) / total, (total - measured + span) / total),
        (1.0 - span / total, 1.0),
    ):
        window = steady_window(groups, lo, hi, widen=False)
        rates.append(None if window is None else window[2] / (window[1] - window[0]))
    return {
        "rows": span,
        "first": rates[0],
        "last": rates[1],
        "last_over_first": ratio(rates[1], rates[0]),
    }


def after_rows(groups: Sequence[tuple[float, int]], rows: int) -> list[tuple[float, int]]:
    """The commits after the one that completed the first `rows` rows, led by that one: its end
    time starts the first commit-aligned window, so none of its rows are counted there (they
    only count toward a total, by at most one batch). All of them for `rows` <= 0."""
    ordered = sorted((t, n) for t, n in groups if n > 0)
    if rows <= 0:
        return ordered
    running = 0
    for i, (_, n) in enumerate(ordered):
        running += n
        if running >= rows:
            return ordered[i:]
    return []


def interpolate(series: Sequence[tuple[float, float]], t: float) -> float | None:
    """The value of a sampled, time-ordered series at `t` (linear; clamped at both ends)."""
    if not series:
        return None
    if t <= series[0][0]:
        return series[0][1]
    for (t0, v0), (t1, v1) in itertools.pairwise(series):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return series[-1][1]


def cpu_us_per_row(
    cpu_series: Iterable[Sequence[tuple[float, float]]], window: tuple[float, float, int] | None
) -> float | None:
    """CPU microseconds per stored row within `window`, summed over processes whose cumulative
    CPU seconds were sampled as (time, cpu_s). Start-up (imports, group join) is left out; on
    a busy shared box this moves less than a rate does."""
    if window is None or window[2] <= 0:
        return None
    start, end, rows = window
    used = 0.0
    for series in cpu_series:
        a, b = interpolate(series, start), interpolate(series, end)
        if a is not None and b is not None:
            used += b - a
    return used / rows * 1e6


def cpu_budget(
    pipeline: Mapping[str, Sequence[tuple[float, float]]],
    machine: Sequence[tuple[float, float]] | None,
    window: tuple[float, float, int] | None,
    cores: int,
) -> dict[str, Any] | None:
    """Where the CPU of the rows stored in `window` went, and the rate it bounds.

    `pipeline`: label -> cumulative CPU seconds sampled as (time, s) for every process the rows
    pass through (each consumer, the broker, ZooKeeper, PostgreSQL's process tree); `machine`:
    the busy CPU of the whole box likewise. Per row: each process's µs, their sum, and what the
    rest of the machine used in the same window (`other`: the bench itself, neighbours). The
    ceiling is `cores` / the pipeline's CPU seconds per row: the rate at which it would fill
    every core; `ceiling_left` counts only the cores the other work left free.
    """
    if window is None or window[2] <= 0 or window[1] <= window[0]:
        return None
    start, end, rows = window
    seconds = end - start

    def used(series: Sequence[tuple[float, float]]) -> float | None:
        a, b = interpolate(series, start), interpolate(series, end)
        return None if a is None or b is None else max(0.0, b - a)

    per: dict[str, float] = {}
    for label, series in pipeline.items():
        u = used(series)
        if u is not None:
            per[label] = u
    total = sum(per.values())
    busy = used(machine) if machine else None
    other = None if busy is None else max(0.0, busy - total)
    out: dict[str, Any] = {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rate": round(rows / seconds, 1),
        "us_per_row": {k: round(v / rows * 1e6, 2) for k, v in per.items()},
        "pipeline_us_per_row": round(total / rows * 1e6, 2),
        "other_us_per_row": None if other is None else round(other / rows * 1e6, 2),
        "cores": cores,
        # cores the pipeline kept busy: with `cores` of them, cores / this is the most a run with
        # the same CPU per row can gain over this one (e.g. a second consumer over the first)
        "pipeline_cores": round(total / seconds, 3),
        # how full the cores were in the window (1.0: every core busy all the time)
        "busy_share": None if busy is None else round(busy / (cores * seconds), 3),
        "ceiling": round(cores * rows / total, 1) if total > 0 else None,
        "ceiling_left": (
            round(max(0.0, cores * seconds - other) / total * rows / seconds, 1)
            if total > 0 and other is not None
            else None
        ),
    }
    out["rate_over_ceiling"] = ratio(out["rate"], out["ceiling"])
    return out


def cpu_budget_by_part(
    groups: Sequence[tuple[float, int]],
    pipeline: Mapping[str, Sequence[tuple[float, float]]],
    machine: Sequence[tuple[float, float]] | None,
    cores: int,
    parts: int = 10,
) -> list[dict[str, Any] | None]:
    """`cpu_budget` within each successive `parts`-th of the rows (commit-aligned, as
    `rate_profile`): which process's CPU per row grows when a later tenth runs slower."""
    return [
        cpu_budget(pipeline, machine, steady_window(groups, i / parts, (i + 1) / parts, widen=False), cores)
        for i in range(parts)
    ]


def linear_slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope dy/dx; None with fewer than two distinct x."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def rss_summary(
    samples: Sequence[tuple[float, float]],
    window: tuple[float, float] | None = None,
    *,
    min_slope_s: float = 20.0,
) -> dict[str, Any]:
    """Start/peak/end RSS (MB) and whether it still grows in the second half of the busy part.

    `window` restricts start/end/slope to the busy part (first to last stored row); the peak is
    over every sample, since memory held before or after the busy part is held all the same.
    The allocator climbs to a plateau while the account windows and buffers fill, so a line
    through the whole run reads warm-up as a leak: the slope and `second_half_mb` (end minus the
    RSS halfway through) look at the second half only, where a leak would still show.
    """
    if not samples:
        return {"samples": 0, "start_mb": None, "peak_mb": None, "end_mb": None, "slope_mb_per_min": None}
    mb = [(t, r / 2**20) for t, r in samples]
    busy = mb
    if window is not None:
        inside = [(t, r) for t, r in mb if window[0] <= t <= window[1]]
        busy = inside or mb
    t0, t1 = busy[0][0], busy[-1][0]
    half = t0 + 0.5 * (t1 - t0)
    second = [(t, r) for t, r in busy if t >= half]
    # Over a few seconds a slope says nothing about a leak: only report it for longer halves.
    long_enough = t1 - half >= min_slope_s
    slope = linear_slope([((t - half) / 60.0, r) for t, r in second]) if long_enough else None
    return {
        "samples": len(mb),
        "start_mb": round(busy[0][1], 1),
        "peak_mb": round(max(r for _, r in mb), 1),
        "half_mb": round(second[0][1], 1) if second else None,
        "end_mb": round(busy[-1][1], 1),
        "second_half_mb": round(busy[-1][1] - second[0][1], 1) if long_enough and second else None,
        "slope_mb_per_min": None if slope is None else round(slope, 2),
        "busy_seconds": round(t1 - t0, 1),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    if math.isnan(numerator) or math.isnan(denominator):
        return None
    return numerator / denominator


def median_or_none(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return median(present) if present else None


# ------------------------------------------------------------------------------------ ratios

# (name, numerator path, denominator path, what it tells). Paths point into the `figures` dict.
RATIO_SPECS: tuple[tuple[str, str, str, str], ...] = (
    ("consumer / naive", "consumer", "naive", "what batching + COPY buy over row-by-row commits"),
    ("consumer / COPY ceiling", "consumer", "copy_ceiling", "share of the database stage's raw speed"),
    (
        "consumer / staging COPY ceiling",
        "consumer",
        "staging_ceiling",
        "share of the idempotent staging-table COPY (the issue's reference)",
    ),
    (
        "consumer / psql COPY ceiling",
        "consumer",
        "psql_copy_ceiling",
        "share of PostgreSQL's own client loading the same rows: the physical ceiling",
    ),
    (
        "COPY ceiling / psql COPY ceiling",
        "copy_ceiling",
        "psql_copy_ceiling",
        "what write_batch's batches and Python leave of the physical ceiling",
    ),
    ("consumer / Kafka read ceiling", "consumer", "kafka_ceiling", "share of the raw consume speed"),
    (
        "COPY ceiling / Kafka read ceiling",
        "copy_ceiling",
        "kafka_ceiling",
        "< 1: the database is the slower stage",
    ),
    (
        "consumer / its CPU ceiling",
        "consumer",
        "consumer_cpu_ceiling",
        "rate against cores / (consumer + broker + ZooKeeper + PostgreSQL CPU per row)",
    ),
    ("produce / consumer", "produce", "consumer", "> 1: a full-speed producer outruns one consumer"),
    ("2 consumers / 1 consumer", "scale_c2", "scale_c1", "scaling out on 6 partitions"),
    ("4 consumers / 1 consumer", "scale_c4", "scale_c1", "scaling out on 6 partitions"),
    (
        "2 consumers' CPU ceiling / 1 consumer",
        "scale_c2_ceiling",
        "scale_c1",
        "the most 2 consumers can reach on these cores (their run's CPU per row), over 1 consumer",
    ),
    ("1 consumer: 1 / 6 partitions", "scale_p1", "scale_c1", "partition count alone, one consumer"),
    ("1 consumer: 3 / 6 partitions", "scale_p3", "scale_c1", "partition count alone, one consumer"),
)


def ratio_table(figures: Mapping[str, float | None]) -> list[dict[str, Any]]:
    """Every ratio of RATIO_SPECS over `figures` (rates by name); None where a figure is missing."""
    rows = []
    for name, num, den, meaning in RATIO_SPECS:
        value = ratio(figures.get(num), figures.get(den))
        rows.append(
            {
                "name": name,
                "numerator": num,
                "denominator": den,
                "value": None if value is None else round(value, 3),
                "meaning": meaning,
            }
        )
    return rows


def median_ratio_table(per_repeat: Sequence[Mapping[str, float | None]]) -> list[dict[str, Any]]:
    """Ratios per repeat, then the median of each: a repeat slowed down as a whole by a noisy
    neighbour still yields fair ratios, which a ratio of medians would not."""
    tables = [ratio_table(f) for f in per_repeat] or [ratio_table({})]
    out = []
    for i, row in enumerate(tables[0]):
        values = [t[i]["value"] for t in tables]
        m = median_or_none(values)
        out.append({**row, "value": None if m is None else round(m, 3), "values": values})
    return out


def bottleneck(stages: Mapping[str, float | None]) -> str | None:
    """The name of the slowest stage among those measured."""
    present = {k: v for k, v in stages.items() if v is not None and not math.isnan(v)}
    return min(present, key=lambda k: present[k]) if present else None


# ------------------------------------------------------------------------------------ parsing

_SUMMARY_FIELD = re.compile(r"\b(stored|elapsed|active|rate)=([0-9.]+)")


def parse_consumer_summary(output: str) -> dict[str, float] | None:
    """`stored`, `rate` (and `elapsed`, `active` when present) from the last `consumer summary:`
    line: a cross-check only, the database is the source of truth. Unknown fields are ignored,
    so the consumer may add or reorder fields."""
    lines = [line for line in output.splitlines() if "consumer summary:" in line]
    if not lines:
        return None
    line = lines[-1].split("consumer summary:", 1)[1]
    found: dict[str, float] = {}
    for key, value in _SUMMARY_FIELD.findall(line):
        found.setdefault(key, int(value) if key == "stored" else float(value))
    return found if "stored" in found else None


# ------------------------------------------------------------------------------------ document

WARNING_KEYS = ("warning", "summary_mismatch")


def collect_warnings(node: Any, path: str = "") -> list[str]:
    """Every `warning` / `summary_mismatch` in a nested result, prefixed with where it was found."""
    found: list[str] = []
    if isinstance(node, Mapping):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key in WARNING_KEYS and isinstance(value, str):
                found.append(f"{path}: {value}")
            else:
                found.extend(collect_warnings(value, where))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(collect_warnings(value, f"{path}[{i}]"))
    return found


def build_document(
    *,
    started_at: str,
    mode: str,
    elapsed_s: float,
    params: Mapping[str, Any],
    machine: Mapping[str, Any],
    sections: Mapping[str, Any],
    ratios: Sequence[Mapping[str, Any]],
    errors: Sequence[str] = (),
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    doc = {
        "schema": SCHEMA_VERSION,
        "started_at": started_at,
        "mode": mode,
        "elapsed_s": round(elapsed_s, 1),
        "params": dict(params),
        "machine": dict(machine),
        "sections": {name: sections.get(name, {"skipped": True}) for name in SECTIONS},
        "ratios": [dict(r) for r in ratios],
        "errors": list(errors),
        "warnings": list(warnings),
    }
    check_document(doc)
    return doc


def check_document(doc: Mapping[str, Any]) -> None:
    """Raise ValueError when `doc` lacks what readers of results/*.json rely on."""
    missing = [k for k in DOCUMENT_KEYS if k not in doc]
    if missing:
        raise ValueError(f"result document lacks {missing}")
    if doc["schema"] != SCHEMA_VERSION:
        raise ValueError(f"result schema {doc['schema']!r}, expected {SCHEMA_VERSION}")
    absent = [s for s in SECTIONS if s not in doc["sections"]]
    if absent:
        raise ValueError(f"result document lacks sections {absent}")
    for r in doc["ratios"]:
        if not {"name", "value"} <= set(r):
            raise ValueError(f"ratio row without name/value: {r}")
    for key in ("nproc", "python", "git_commit"):
        if key not in doc["machine"]:
            raise ValueError(f"machine info lacks {key!r}")


# ------------------------------------------------------------------------------------ table


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _fmt_mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _fmt_budget(budget: Mapping[str, Any]) -> str:
    """'58 = consumer 30 + postgres 20 + kafka 8 + zookeeper 0' (µs of CPU per row)."""
    parts = " + ".join(f"{k} {v:.0f}" for k, v in budget["us_per_row"].items())
    return f"{budget['pipeline_us_per_row']:.0f} = {parts}"


def _fmt_ceiling(budget: Mapping[str, Any]) -> str:
    other = budget.get("other_us_per_row")
    busy = budget.get("busy_share")
    return (
        f"ceiling {fmt_rate(budget.get('ceiling'))} tx/s on {budget['cores']} cores "
        f"(rate {fmt_ratio(budget.get('rate_over_ceiling'))}); other work {'-' if other is None else f'{other:.0f}'} "
        f"us/row, cores {'-' if busy is None else f'{busy:.0%}'} busy, "
        f"{fmt_rate(budget.get('ceiling_left'))} tx/s on what it left"
    )


def _tenths_cpu_note(tenths: Sequence[Mapping[str, Any] | None] | None) -> str:
    """'CPU us/row first -> last tenth: consumer 21 -> 22, postgres 15 -> 23, ...': which process
    pays for a later tenth running slower (the rate alone moves with the neighbours' load too)."""
    if not tenths or not tenths[0] or not tenths[-1]:
        return ""
    first, last = tenths[0]["us_per_row"], tenths[-1]["us_per_row"]
    parts = [f"{k} {first[k]:.0f} -> {last[k]:.0f}" for k in first if k in last]
    return "CPU us/row first -> last tenth: " + ", ".join(parts)


def format_table(doc: Mapping[str, Any]) -> str:
    """The readable summary printed at the end of a run."""
    m, s = doc["machine"], doc["sections"]
    lines = [
        f"txmon benchmark {doc['started_at']}  mode={doc['mode']}  nproc={m.get('nproc')}  "
        f"load={m.get('loadavg_start')}  commit={str(m.get('git_commit'))[:10]}"
        f"{' (dirty)' if m.get('git_dirty') else ''}  took {doc['elapsed_s']:.0f}s"
        f"{'  PROFILED (pyinstrument): figures are low' if doc['params'].get('profile') else ''}",
    ]

    def row(label: str, unit: str, value: str, note: str = "") -> None:
        lines.append(f"  {label:<34} {unit:<20} {value:>20}  {note}".rstrip())

    tp = s.get("throughput", {})
    lines.append(f"throughput (N={doc['params'].get('count')}, repeats={tp.get('repeats', '-')}, medians)")
    if "error" in tp and "figures" not in tp:
        row("error", "", "", tp["error"])
    f = tp.get("figures", {})
    row("produce, acks=all", "msgs/s", fmt_rate(f.get("produce")))
    row(
        "consumer (real entry point)",
        "tx/s steady",
        fmt_rate(f.get("consumer")),
        f"span {fmt_rate(f.get('consumer_span'))}, own summary {fmt_rate(f.get('consumer_summary'))}",
    )
    row("consumer CPU", "us/row", fmt_rate(f.get("consumer_cpu_us_per_row")))
    budget = ((tp.get("runs") or [{}])[0].get("consumer") or {}).get("cpu_budget")
    if budget:
        row("CPU budget (first repeat)", "us/row", _fmt_budget(budget), _fmt_ceiling(budget))
    row(
        "consumer, first -> last tenth",
        "tx/s",
        f"{fmt_rate(f.get('consumer_first_tenth'))} -> {fmt_rate(f.get('consumer_last_tenth'))}",
        _tenths_cpu_note(((tp.get("runs") or [{}])[0].get("consumer") or {}).get("cpu_budget_by_tenth")),
    )
    row("naive consumer (row + commit)", "tx/s", fmt_rate(f.get("naive")))
    row("COPY ceiling (write_batch)", "rows/s", fmt_rate(f.get("copy_ceiling")))
    row("staging COPY ceiling (ON CONFLICT)", "rows/s", fmt_rate(f.get("staging_ceiling")))
    row("psql \\copy ceiling (one statement)", "rows/s", fmt_rate(f.get("psql_copy_ceiling")))
    row("Kafka read ceiling (decode)", "msgs/s", fmt_rate(f.get("kafka_ceiling")))
    if tp.get("slowest_stage"):
        row("slower consumer-side stage", "", tp["slowest_stage"])

    lat = s.get("latency", {})
    lines.append("latency (processed_at - timestamp, unlabelled rows)")
    if "error" in lat and not lat.get("runs"):
        row("error", "", "", lat["error"])
    for run in lat.get("runs", []):
        label = run.get("label") or "?"
        summ = run.get("latency") or {}
        value = f"{fmt_ms(summ.get('p50_ms'))} / {fmt_ms(summ.get('p95_ms'))} / {fmt_ms(summ.get('p99_ms'))}"
        note = f"n={summ.get('count', 0):,}, offered at {fmt_rate(run.get('produce_rate'))}/s"
        if run.get("error"):
            note = run["error"]
        row(label, "p50/p95/p99 ms", value, note)
        commit = run.get("latency_at_commit") or {}
        if commit.get("count"):
            value = f"{fmt_ms(commit.get('p50_ms'))} / {fmt_ms(commit.get('p95_ms'))} / {fmt_ms(commit.get('p99_ms'))}"
            row("  at COMMIT (visible)", "p50/p95/p99 ms", value, "pg_xact_commit_timestamp - timestamp")
        lines.extend(format_timings(run.get("timings")))
        lines.extend(format_probe(run))

    mem = s.get("memory", {})
    lines.append("consumer memory (RSS)")
    for name, rss in mem.get("runs", {}).items():
        value = (
            f"{_fmt_mb(rss.get('start_mb'))} / {_fmt_mb(rss.get('peak_mb'))} / {_fmt_mb(rss.get('end_mb'))}"
        )
        slope, later = rss.get("slope_mb_per_min"), rss.get("second_half_mb")
        trend = "" if slope is None else f"second half {later:+.1f} MB, slope {slope:+.2f} MB/min"
        row(name, "start/peak/end MB", value, trend)
    long_run = (mem.get("long") or {}).get("consumer") or {}
    if long_run:
        tenths = long_run.get("rate_by_tenth") or [None]
        row(
            f"long run ({mem['long'].get('count', 0):,}"
            + (f" after {mem['long']['warmup']:,})" if mem["long"].get("warmup") else ")"),
            "tx/s steady",
            fmt_rate(long_run.get("rate")),
            f"first -> last tenth {fmt_rate(tenths[0])} -> {fmt_rate(tenths[-1])}; "
            + _tenths_cpu_note(long_run.get("cpu_budget_by_tenth")),
        )
        warmup = mem["long"].get("warmup") or 0
        for key, label, note in (
            ("first_last_million", f"after {warmup:,} rows of warm-up" if warmup else "", "target >= 0.80x"),
            ("first_last_million_from_empty", "from empty windows", "the warm-up included"),
        ):
            edges = mem["long"].get(key) or {}
            if edges.get("rows") and (key == "first_last_million" or warmup):
                row(
                    f"long run, first / last {edges['rows']:,} rows{', ' if label else ''}{label}",
                    "tx/s",
                    f"{fmt_rate(edges.get('first'))} / {fmt_rate(edges.get('last'))}",
                    f"last / first {fmt_ratio(edges.get('last_over_first'))} ({note})",
                )
    if "error" in mem:
        row("error", "", "", mem["error"])

    sc = s.get("scaling", {})
    lines.append(
        f"scaling (N={doc['params'].get('scale_count')}, repeats={sc.get('repeats', '-')}, steady tx/s)"
    )
    if "error" in sc and not sc.get("runs"):
        row("error", "", "", sc["error"])
    for run in sc.get("summary", []):
        label = f"{run['consumers']} consumer(s), {run['partitions']} partitions"
        rates = [r for r in run.get("rates", []) if r is not None]
        note = f"runs: {', '.join(fmt_rate(r) for r in rates)}" if len(rates) > 1 else ""
        cpu = run.get("cpu_us_per_row")
        note = f"{note}{'; ' if note else ''}{cpu:.0f} us CPU/row" if cpu is not None else note
        row(label, "tx/s", fmt_rate(run.get("rate")), note)
        if run.get("cpu_budget"):
            row("  CPU budget", "us/row", _fmt_budget(run["cpu_budget"]), _fmt_ceiling(run["cpu_budget"]))

    lines.append("ratios (medians of per-repeat ratios: what holds on a noisy box)")
    for r in doc["ratios"]:
        row(r["name"], "", fmt_ratio(r["value"]))
    for title in ("errors", "warnings"):
        if doc.get(title):
            lines.append(title)
            lines.extend(f"  {e}" for e in doc[title])
    return "\n".join(lines)
