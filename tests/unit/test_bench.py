"""The benchmark's pure helpers: percentiles, rates from commit groups, ratios, the JSON shape.
No services and no timing assertions."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bench import stats
from bench.run import build_parser, resolve_params
from bench.sections import SCALING, merge_repeats, scaling_figures

# ------------------------------------------------------------------------------------ percentiles


def test_percentile_interpolates_between_ranks() -> None:
    data = [1.0, 2.0, 3.0, 4.0]
    assert stats.percentile(data, 0) == 1.0
    assert stats.percentile(data, 100) == 4.0
    assert stats.percentile(data, 50) == pytest.approx(2.5)
    assert stats.percentile(data, 25) == pytest.approx(1.75)  # numpy's default ("linear")


def test_percentile_ignores_input_order_and_handles_edges() -> None:
    assert stats.percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert stats.percentile([7.0], 99) == 7.0
    assert math.isnan(stats.percentile([], 50))
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


def test_latency_summary_in_milliseconds() -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    s = stats.latency_summary(values)
    assert s["count"] == 100
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["max_ms"] == pytest.approx(100.0)
    assert s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"]


def test_latency_summary_of_nothing_is_explicit() -> None:
    assert stats.latency_summary([]) == {
        "count": 0,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "max_ms": None,
        "mean_ms": None,
    }


# ------------------------------------------------------------------------------------ rates


def test_steady_rate_cuts_at_commits_and_skips_the_edges() -> None:
    # Ten batches of 1,000 rows, one per second, after a slow 5 s start (a group join).
    groups = [(5.0, 1000)] + [(5.0 + i, 1000) for i in range(1, 10)]
    assert stats.steady_rate(groups) == pytest.approx(1000.0)
    # First to last commit: the first batch's rows happened before the window opened.
    assert stats.steady_rate(groups, 0.0, 1.0) == pytest.approx(9000 / 9)


def test_steady_rate_is_independent_of_group_order_and_empty_groups() -> None:
    groups = [(3.0, 10), (1.0, 10), (2.0, 10), (4.0, 0)]
    assert stats.steady_rate(groups, 0.0, 1.0) == pytest.approx(10.0)


def test_steady_rate_needs_two_commits() -> None:
    assert stats.steady_rate([]) is None
    assert stats.steady_rate([(1.0, 5000)]) is None
    assert stats.steady_rate([(1.0, 10), (1.0, 10)]) is None  # no time between them


def test_steady_window_widens_when_too_few_groups() -> None:
    # Two groups: 10 % and 90 % fall in the same group, so the window is first -> last.
    assert stats.steady_window([(1.0, 100), (2.0, 100)]) == (1.0, 2.0, 100)


def test_rate_profile_shows_a_slowdown_and_gaps() -> None:
    # 10 commits of 100 rows: 1 s apart for the first half, 2 s apart afterwards.
    ends = [1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0]
    profile = stats.rate_profile([(t, 100) for t in ends], parts=5)
    assert profile == [pytest.approx(100.0), pytest.approx(100.0), pytest.approx(200 / 3), 50.0, 50.0]
    # One big commit holds several fifths: only the first part (up to it) has a rate.
    assert stats.rate_profile([(1.0, 10), (2.0, 1000)], parts=5) == [1000.0, None, None, None, None]


def test_span_rate() -> None:
    assert stats.span_rate(100, 10.0, 12.0) == pytest.approx(50.0)
    assert stats.span_rate(1, 10.0, 12.0) is None
    assert stats.span_rate(100, 12.0, 12.0) is None


def test_interpolate_and_cpu_per_row() -> None:
    series = [(0.0, 0.0), (1.0, 1.0), (3.0, 2.0)]
    assert stats.interpolate(series, 0.5) == pytest.approx(0.5)
    assert stats.interpolate(series, 2.0) == pytest.approx(1.5)
    assert stats.interpolate(series, -1.0) == 0.0
    assert stats.interpolate(series, 9.0) == 2.0
    assert stats.interpolate([], 1.0) is None
    # Two processes, each 0.5 CPU-s over the window of 10,000 rows: 100 us per row.
    a = [(0.0, 0.0), (2.0, 1.0)]
    b = [(0.0, 5.0), (2.0, 6.0)]
    assert stats.cpu_us_per_row([a, b], (0.5, 1.5, 10_000)) == pytest.approx(100.0)
    assert stats.cpu_us_per_row([a], None) is None


def test_cpu_budget_sums_each_process_and_bounds_the_rate() -> None:
    # 10,000 rows in 1 s (0.5 -> 1.5): the consumer used 0.3 CPU-s, PostgreSQL 0.2, the broker
    # 0.1 (60 us per row in all), and the machine 1.0, so 0.4 CPU-s went to other work.
    pipeline = {
        "consumer": [(0.0, 0.0), (2.0, 0.6)],
        "postgres": [(0.0, 10.0), (2.0, 10.4)],
        "kafka": [(0.0, 3.0), (2.0, 3.2)],
    }
    machine = [(0.0, 100.0), (2.0, 102.0)]
    b = stats.cpu_budget(pipeline, machine, (0.5, 1.5, 10_000), cores=2)
    assert b is not None
    assert b["us_per_row"] == {"consumer": pytest.approx(30.0), "postgres": pytest.approx(20.0),
                               "kafka": pytest.approx(10.0)}  # fmt: skip
    assert b["pipeline_us_per_row"] == pytest.approx(60.0)
    assert b["other_us_per_row"] == pytest.approx(40.0)
    assert b["rate"] == pytest.approx(10_000.0)
    # 2 cores / 60 us per row; and on the 1.6 cores the other work left, 1.6 / 60 us
    assert b["ceiling"] == pytest.approx(33_333.3, abs=0.1)
    assert b["ceiling_left"] == pytest.approx(26_666.7, abs=0.1)
    assert b["rate_over_ceiling"] == pytest.approx(0.3, abs=1e-4)
    assert b["busy_share"] == pytest.approx(0.5)
    assert b["pipeline_cores"] == pytest.approx(0.6)  # 0.6 CPU-s in 1 s: 2 cores allow 3.3x this rate
    assert stats.cpu_budget(pipeline, machine, None, cores=2) is None
    no_machine = stats.cpu_budget(pipeline, None, (0.5, 1.5, 10_000), cores=2)
    assert no_machine is not None and no_machine["other_us_per_row"] is None
    assert no_machine["ceiling_left"] is None


def test_cpu_budget_by_tenth_follows_the_commits() -> None:
    # Ten commits of 100 rows a second apart; PostgreSQL's CPU per second doubles in the second
    # half: its CPU per row with it.
    groups = [(float(t), 100) for t in range(1, 11)]
    pg = [(0.0, 0.0), (5.0, 0.05), (10.0, 0.15)]
    parts = stats.cpu_budget_by_part(groups, {"postgres": pg}, None, cores=2, parts=2)
    assert [p["us_per_row"]["postgres"] for p in parts if p] == [pytest.approx(100.0), pytest.approx(200.0)]
    assert [p["rows"] for p in parts if p] == [400, 500]  # commit-aligned: t 1-5, 5-10


def test_format_table_shows_the_cpu_budget() -> None:
    budget = stats.cpu_budget({"consumer": [(0.0, 0.0), (2.0, 0.6)]}, [(0.0, 0.0), (2.0, 1.0)],
                              (0.5, 1.5, 10_000), cores=2)  # fmt: skip
    scaling = {"repeats": 1, "summary": [{"consumers": 2, "partitions": 6, "rate": 1.0, "rates": [1.0],
                                          "cpu_budget": budget}]}  # fmt: skip
    # a throughput run whose server CPU per row grew from the first tenth to the last
    groups = [(float(t), 100) for t in range(1, 11)]
    pg = [(0.0, 0.0), (5.0, 0.05), (10.0, 0.15)]
    tenths = stats.cpu_budget_by_part(groups, {"postgres": pg}, None, cores=2, parts=2)
    throughput = {"repeats": 1, "figures": {}, "runs": [{"consumer": {"cpu_budget": budget,
                                                                      "cpu_budget_by_tenth": tenths}}]}  # fmt: skip
    text = stats.format_table(_doc(sections={"scaling": scaling, "throughput": throughput}))
    assert "30 = consumer 30" in text
    assert "ceiling 66,667 tx/s on 2 cores" in text
    assert "CPU us/row first -> last tenth: postgres 100 -> 200" in text


# ------------------------------------------------------------------------------------ memory


def test_rss_summary_flat_and_growing() -> None:
    mb = 2**20
    flat = [(float(t), 100 * mb) for t in range(120)]
    s = stats.rss_summary(flat)
    assert (s["start_mb"], s["peak_mb"], s["end_mb"]) == (100.0, 100.0, 100.0)
    assert s["slope_mb_per_min"] == pytest.approx(0.0)
    assert s["second_half_mb"] == 0.0
    growing = [(float(t), (100 + t / 6) * mb) for t in range(121)]  # +10 MB per minute
    g = stats.rss_summary(growing)
    assert g["slope_mb_per_min"] == pytest.approx(10.0)
    assert g["second_half_mb"] == pytest.approx(10.0)


def test_rss_summary_warm_up_to_a_plateau_is_not_growth() -> None:
    mb = 2**20
    # Climbs for 30 s while state and buffers fill, then holds: what a bounded consumer does.
    plateau = [(float(t), (100 + 4 * min(t, 30)) * mb) for t in range(120)]
    s = stats.rss_summary(plateau)
    assert s["slope_mb_per_min"] == pytest.approx(0.0) and s["second_half_mb"] == 0.0
    assert (s["start_mb"], s["half_mb"], s["end_mb"]) == (100.0, 220.0, 220.0)


def test_rss_summary_window_and_short_runs() -> None:
    mb = 2**20
    samples = [(0.0, 50 * mb), (1.0, 200 * mb), (2.0, 80 * mb), (3.0, 90 * mb), (4.0, 60 * mb)]
    s = stats.rss_summary(samples, (2.0, 3.0))
    assert s["start_mb"] == 80.0 and s["end_mb"] == 90.0
    assert s["peak_mb"] == 200.0  # the peak counts wherever it happened
    assert s["slope_mb_per_min"] is None  # 1 s says nothing about a trend
    assert stats.rss_summary([])["peak_mb"] is None


def test_linear_slope() -> None:
    assert stats.linear_slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    assert stats.linear_slope([(1, 1)]) is None
    assert stats.linear_slope([(1, 1), (1, 2)]) is None


# ------------------------------------------------------------------------------------ ratios


def test_ratio_table_names_and_values() -> None:
    figures = {
        "consumer": 20_000.0,
        "naive": 2_000.0,
        "copy_ceiling": 40_000.0,
        "staging_ceiling": 25_000.0,
        "scale_c1": 10.0,
        "scale_c2": 15.0,
    }
    table = {r["name"]: r["value"] for r in stats.ratio_table(figures)}
    assert table["consumer / naive"] == pytest.approx(10.0)
    assert table["consumer / COPY ceiling"] == pytest.approx(0.5)
    assert table["consumer / staging COPY ceiling"] == pytest.approx(0.8)
    assert table["2 consumers / 1 consumer"] == pytest.approx(1.5)
    assert table["consumer / Kafka read ceiling"] is None  # not measured: no ratio, no crash
    assert [r["name"] for r in stats.ratio_table({})] == [spec[0] for spec in stats.RATIO_SPECS]


def test_ratio_guards() -> None:
    assert stats.ratio(1.0, 0.0) is None
    assert stats.ratio(None, 1.0) is None
    assert stats.ratio(math.nan, 1.0) is None


def test_median_ratio_table_takes_ratios_within_each_repeat() -> None:
    # Repeat 2 ran on a busy box: everything halved. Its ratios are the same as repeat 1's.
    repeats: list[dict[str, float | None]] = [
        {"consumer": 20_000.0, "naive": 2_000.0},
        {"consumer": 10_000.0, "naive": 1_000.0},
        {"consumer": 30_000.0, "naive": None},
    ]
    row = next(r for r in stats.median_ratio_table(repeats) if r["name"] == "consumer / naive")
    assert row["value"] == pytest.approx(10.0)
    assert row["values"] == [10.0, 10.0, None]


def test_bottleneck_and_median() -> None:
    assert stats.bottleneck({"Kafka read": 60_000.0, "COPY": 30_000.0, "x": None}) == "COPY"
    assert stats.bottleneck({}) is None
    assert stats.median_or_none([3.0, None, 1.0, 2.0]) == 2.0
    assert stats.median_or_none([None]) is None


def test_scaling_figures_and_merge_repeats() -> None:
    runs = [{"consumers": c, "partitions": p, "rate": float(c * 10 + p)} for c, p in SCALING]
    f = scaling_figures(runs)
    assert f["scale_c1"] == 16.0 and f["scale_c4"] == 46.0 and f["scale_p1"] == 11.0
    merged = merge_repeats([{"a": 1.0}, {"a": 2.0}], [{"b": 3.0}])
    assert merged == [{"a": 1.0, "b": 3.0}, {"a": 2.0}]
    assert merge_repeats() == [{}]


# ------------------------------------------------------------------------------------ parsing


def test_parse_consumer_summary_tolerates_new_fields() -> None:
    out = (
        "2026-11-24 INFO consumer: progress consumed=5 stored=5 rate=3/s\n"
        "consumer summary: consumed=100 stored=98 already_stored=2 rejected=0 alerts=3 (high_amount=3) "
        "rejected_by_reason=(none) batches=4 db_retries=0 elapsed=9.5s active=4.9s rate=20000/s\n"
    )
    s = stats.parse_consumer_summary(out)
    assert s == {"stored": 98, "elapsed": 9.5, "active": 4.9, "rate": 20000.0}
    assert stats.parse_consumer_summary("consumer summary: stored=7 rate=1.5/s") == {"stored": 7, "rate": 1.5}
    assert stats.parse_consumer_summary("crashed before the summary") is None


# ------------------------------------------------------------------------------------ document


def test_collect_warnings_finds_nested_ones_with_their_place() -> None:
    sections = {
        "throughput": {"runs": [{"consumer": {"warning": "stored 9 of 10", "rate": 1.0}}]},
        "scaling": {"runs": [{"summary_mismatch": "summary says stored=3"}, {"rate": 2.0}]},
    }
    assert stats.collect_warnings(sections) == [
        "throughput.runs[0].consumer: stored 9 of 10",
        "scaling.runs[0]: summary says stored=3",
    ]
    assert stats.collect_warnings({}) == []


def _doc(**overrides: object) -> dict:
    kwargs = {
        "started_at": "2026-11-24T21:00:00+00:00",
        "mode": "quick",
        "elapsed_s": 200.0,
        "params": {"count": 100_000, "scale_count": 100_000},
        "machine": {"nproc": 2, "python": "3.11.9", "git_commit": "abc", "git_dirty": False},
        "sections": {
            "throughput": {"repeats": 1, "figures": {"consumer": 20_000.0, "naive": 2_000.0}},
            "latency": {
                "runs": [
                    {"label": "consumer @ 3,000/s", "latency": stats.latency_summary([0.01, 0.02])},
                    {"label": "consumer @ full speed", "error": "RuntimeError('no join')"},
                ]
            },
            "scaling": {
                "repeats": 1,
                "summary": [{"consumers": 1, "partitions": 6, "rate": 1.0, "rates": [1.0]}],
            },
        },
        "ratios": stats.ratio_table({"consumer": 20_000.0, "naive": 2_000.0}),
        "errors": [],
        "warnings": ["throughput.runs[0].consumer: stored 9 of 10"],
    }
    kwargs.update(overrides)
    return stats.build_document(**kwargs)  # type: ignore[arg-type]


def test_document_shape_is_json_and_complete() -> None:
    doc = _doc()
    again = json.loads(json.dumps(doc))
    assert list(again) == list(stats.DOCUMENT_KEYS)
    assert set(again["sections"]) == set(stats.SECTIONS)
    assert again["sections"]["memory"] == {"skipped": True}  # a section not run is marked, not missing
    assert again["schema"] == stats.SCHEMA_VERSION
    stats.check_document(again)


def test_check_document_rejects_missing_parts() -> None:
    doc = _doc()
    del doc["machine"]["git_commit"]
    with pytest.raises(ValueError, match="git_commit"):
        stats.check_document(doc)
    with pytest.raises(ValueError, match="lacks"):
        stats.check_document({"schema": stats.SCHEMA_VERSION})


def test_format_table_renders_every_section_and_missing_figures() -> None:
    text = stats.format_table(_doc())
    for needle in (
        "throughput",
        "consumer @ 3,000/s",
        "no join",
        "consumer memory",
        "scaling",
        "10.00x",
        "20,000",
    ):
        assert needle in text
    assert len(text.splitlines()) < 60


def test_presets_fill_unset_flags_only() -> None:
    args = build_parser().parse_args(["--quick", "--count", "1234"])
    params = resolve_params(args)
    assert params["mode"] == "quick" and params["count"] == 1234
    assert params["scale_count"] > 0 and params["latency_seconds"] > 0
    default = resolve_params(build_parser().parse_args([]))
    assert default["mode"] == "default" and default["count"] > params["scale_count"] // 10
    with pytest.raises(SystemExit):
        resolve_params(build_parser().parse_args(["--sections", "nonsense"]))


def test_ab_unpacks_the_base_revision_as_plain_files(tmp_path: Path) -> None:
    from bench import ab

    tree = ab.unpack("HEAD", tmp_path)
    script = "consumer/transaction_processor.py"
    committed = subprocess.run(
        ["git", "show", f"HEAD:{script}"], cwd=ab.harness.REPO, capture_output=True, check=True
    ).stdout
    assert (tree / script).read_bytes() == committed
    assert not (tree / ".git").exists()


def test_naive_row_fills_every_column_by_name() -> None:
    # The baseline inserts into the real table: a column added or reordered must not shift its
    # values into the wrong place (a Kafka topic landed in an integer column once).
    from bench.naive_consumer import naive_row
    from consumer.storage import TXN_COLUMNS
    from tests.unit.test_validation import message

    row = dict(zip(TXN_COLUMNS, naive_row(message(), "t", 3, 42, 1_700_000_000_000), strict=True))
    assert (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) == ("t", 3, 42)
    assert row["kafka_timestamp_ms"] == 1_700_000_000_000
    stamp = row["timestamp"]
    assert isinstance(stamp, datetime) and stamp.tzinfo is not None
    assert row["amount_base"] is None
    assert row["transaction_id"] and row["account_id"]


def test_brokers_ratio_pairs_each_round_and_ignores_a_missing_figure() -> None:
    """bench.brokers: three brokers / one within each ABBA round, then the median of the rounds."""
    from bench.brokers import paired_ratio

    runs: list[dict[str, Any]] = [
        {"mode": "1_broker", "produce_rate": 100},
        {"mode": "3_brokers", "produce_rate": 70},
        {"mode": "3_brokers", "produce_rate": 45},  # the second round runs the cluster first
        {"mode": "1_broker", "produce_rate": 50},
        {"mode": "1_broker", "produce_rate": 80},
        {"mode": "3_brokers", "produce_rate": None},  # no figure: the round does not count
    ]
    assert paired_ratio(runs, 3, "produce_rate") == 0.8  # median of 0.7 and 0.9
    assert paired_ratio(runs[4:], 1, "produce_rate") is None


# ------------------------------------------------------------------------------------ long runs


def test_accounts_for_keeps_a_simulated_run_behind_the_present() -> None:
    """The pool `accounts_for` gives makes `count` messages before the simulated clock reaches the
    present; the settings' own pool does not (it is what stalled the 3,000,000-row run)."""
    from datetime import UTC, timedelta

    from bench.context import accounts_for
    from producer.generator import TransactionGenerator
    from producer.pool import AccountPool
    from utils.config import Settings

    base = Settings()
    settings = dataclasses.replace(
        base, producer=dataclasses.replace(base.producer, accounts=200, days_back=0.25)
    )
    count = 12_000
    present = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a fixed "now": no wall clock
    start = present - timedelta(days=settings.producer.days_back)

    def made(accounts: int) -> int:
        pool = AccountPool.create(accounts, settings.producer.account_seed)
        gen = TransactionGenerator(7, pool, settings.producer.fraud_rate, clock="simulated", start=start)
        n = 0
        while n < count and (batch := gen.next_batch(500, not_after=present)):
            n += len(batch)
        return n

    accounts = accounts_for(count, settings)
    assert accounts > settings.producer.accounts
    assert made(settings.producer.accounts) < count
    assert made(accounts) >= count
    assert accounts_for(10, settings) == settings.producer.accounts  # small runs keep the usual pool


def test_edge_rates_compare_the_first_and_last_rows() -> None:
    # 40 commits of 100 rows: the first 2,000 rows at 100 rows/s, the last 2,000 at 50 rows/s.
    groups = [(float(i + 1), 100) for i in range(20)] + [(20.0 + 2 * (i + 1), 100) for i in range(20)]
    edges = stats.edge_rates(groups, rows=1_000)
    assert edges["rows"] == 1_000
    assert edges["first"] == pytest.approx(100.0)
    assert edges["last"] == pytest.approx(50.0)
    assert edges["last_over_first"] == pytest.approx(0.5)
    assert stats.edge_rates(groups, rows=10_000)["rows"] == 2_000  # at most half each
    assert stats.edge_rates([])["first"] is None


def test_the_long_runs_ratio_after_its_warm_up_leaves_the_warm_up_out() -> None:
    # 1,000 rows of warm-up at 1,000 rows/s, then 2,000 at 100 rows/s and 2,000 at 50 rows/s.
    warm = [(0.1 * (i + 1), 100) for i in range(10)]
    groups = warm + [(1.0 + i + 1, 100) for i in range(20)] + [(21.0 + 2 * (i + 1), 100) for i in range(20)]
    measured = stats.after_rows(list(reversed(groups)), 1_000)  # any order in, time order out
    assert measured[0] == (1.0, 100)  # led by the commit that completed the warm-up
    assert sum(n for _, n in measured[1:]) == 4_000
    edges = stats.edge_rates(groups, rows=1_000, after=1_000)
    assert edges["rows"] == 1_000
    assert edges["first"] == pytest.approx(100.0)
    assert edges["last_over_first"] == pytest.approx(0.5)
    # Over the whole run the warm-up's fast first rows make the slow-down look worse.
    assert stats.edge_rates(groups, rows=1_000)["last_over_first"] == pytest.approx(0.05)
    assert stats.edge_rates(groups, rows=10_000, after=1_000)["rows"] == 2_000  # half of the 4,000
    assert stats.edge_rates(groups, after=5_000)["first"] is None
    assert stats.after_rows(groups, 0) == sorted(groups)
    assert stats.after_rows(groups, 10_000) == []


def test_the_profile_breaks_the_rules_stage_down_rule_by_rule() -> None:
    from bench.profile import format_profile, rule_breakdown
    from consumer.rules import RULES
    from tests.unit.test_rules_equivalence import produced
    from utils.config import Settings

    txns = list(produced(11, 1500))
    out = rule_breakdown(Settings(), [txns[:700], txns[700:]])
    assert out["messages"] == 1500
    assert sorted(r["rule"] for r in out["rules"]) == sorted(name for name, _fn in RULES)
    assert out["windows_us_per_msg"] > 0.0 and out["all_rules_us_per_msg"] > 0.0
    costs = [r["cpu_us_per_msg"] for r in out["rules"]]
    assert costs == sorted(costs, reverse=True) and min(costs) >= 0.0
    text = format_profile({"messages": 1500, "stages": [], "rule_breakdown": out})
    assert all(name in text for name, _fn in RULES) and "no rule" in text


def test_a_copy_of_warm_windows_leaves_them_as_they_were() -> None:
    """`clone_states` is what every pass of the warm breakdown starts from: evaluating more
    messages on the copy (appends, evictions, new accounts) must not reach the original."""
    from bench.profile import clone_states
    from consumer.account_state import AccountStates
    from consumer.batch import Batch, evaluate_batch
    from tests.unit.test_rules_equivalence import produced
    from utils.config import Settings

    settings = Settings()
    txns = list(produced(11, 1200))
    states = AccountStates(5, 86_400.0)
    states.load({t.account_id for t in txns[:600]}, [])
    evaluate_batch(Batch(txns=txns[:600]), states, settings.rules)

    def snapshot(s: AccountStates) -> dict[str, tuple[list[str], list[float], dict[str | None, list[float]]]]:
        return {
            a: (
                [e.transaction_id for e in h.events],
                list(h.epochs),
                {m: list(v) for m, v in h.by_merchant.items()},
            )
            for a, h in s._accounts.items()
        }

    before = snapshot(states)
    copy = clone_states(states)
    assert snapshot(copy) == before
    copy.load(copy.missing({t.account_id for t in txns[600:]}), [])
    evaluate_batch(Batch(txns=txns[600:]), copy, settings.rules)
    assert snapshot(states) == before
    assert snapshot(copy) != before


def test_the_warm_profile_compares_cold_and_warm_windows_of_one_stream() -> None:
    from bench.profile import format_profile, warm_profile
    from consumer.rules import RULES
    from utils.config import Settings

    settings = Settings()
    out = warm_profile(settings, 7, warm=3_000, count=400, accounts=40)
    assert out["cold"]["messages"] == out["warm_breakdown"]["messages"] == 400
    # 3,000 messages of 40 accounts (and the incidents' own): most windows at their bound of 50.
    assert out["windows"]["share_full"] >= 0.5 and out["windows"]["mean_events"] >= 30
    assert (
        out["windows"]["events"]
        <= out["windows"]["accounts"] * settings.consumer.state_max_events_per_account
    )
    assert len(out["warm_up_rules_us_per_msg_by_tenth"]) == len(out["gc_us_per_msg_by_tenth"]) == 10
    text = format_profile({"messages": 0, "stages": [], "warm": out})
    assert "cold" in text and "warm" in text and all(name in text for name, _fn in RULES)


# ------------------------------------------------------------------------------------ same-run floor


def _dump(rows: list[tuple[int, int, int, float, float]]) -> str:
    return "".join(f"{p} {o} {t} {s:.6f} {r:.6f}\n" for p, o, t, s, r in rows)


def test_probe_dump_round_trips_and_splits_at_the_broker() -> None:
    # 100 messages: the broker appends each 5 ms after its stamp and the reader has it 2 ms
    # later, except one the producer held for 80 ms before the broker had it.
    rows = []
    for i in range(100):
        stamp = 1000.0 + i * 0.01
        to_broker = 0.080 if i == 42 else 0.005
        append_ms = round((stamp + to_broker) * 1000)
        rows.append((i % 3, i, append_ms, stamp, append_ms / 1000 + 0.002))
    probe = stats.parse_probe_dump(_dump(rows) + "\n")
    assert len(probe) == 100 and probe[(0, 42)][1] == pytest.approx(1000.42)
    split = stats.probe_split(probe)
    assert split["count"] == 100
    assert split["to_broker"]["p50_ms"] == pytest.approx(5.0, abs=0.01)
    assert split["to_reader"]["max_ms"] == pytest.approx(2.0, abs=0.01)
    # The slowest 1 % is the one held message, and the split says where it waited.
    assert split["tail"] == {"messages": 1, "latency_ms": pytest.approx(82.0, abs=0.01),
                             "to_broker_ms": pytest.approx(80.0, abs=0.01),
                             "to_reader_ms": pytest.approx(2.0, abs=0.01)}  # fmt: skip
    assert stats.probe_split({}) == {"count": 0}


def test_beside_probe_joins_by_kafka_position_and_separates_the_consumers_share() -> None:
    # The reader has every message 10 ms after its stamp; the consumer stores each 20 ms after
    # that, except the last, which waited 100 ms more in the consumer; one row the probe missed.
    probe = {(0, i): (1000.0 + i + 0.005, 1000.0 + i, 1000.0 + i + 0.010) for i in range(200)}
    rows = [(0, i, 1000.0 + i, 1000.0 + i + 0.030 + (0.100 if i == 199 else 0.0)) for i in range(200)]
    rows.append((5, 0, 1.0, 2.0))
    out = stats.beside_probe(rows, probe)
    assert out["joined"] == 200
    assert out["probe"]["p99_ms"] == pytest.approx(10.0, abs=0.01)
    assert out["over_probe"]["p50_ms"] == pytest.approx(20.0, abs=0.01)
    assert out["tail"]["messages"] == 2 and out["tail"]["probe_ms"] == pytest.approx(10.0, abs=0.01)
    assert out["tail"]["over_probe_ms"] == pytest.approx(70.0, abs=0.01)  # (20 + 120) / 2
    assert out["middle"]["over_probe_ms"] == pytest.approx(20.0, abs=0.01)
    # The consumer's extra 100 ms sits in the last tenth of the run, not in the reader's.
    assert out["by_slice"]["over_probe"][-1]["p99_ms"] > 100.0
    assert out["by_slice"]["over_probe"][0]["p99_ms"] == pytest.approx(20.0, abs=0.01)
    assert all(s["p99_ms"] == pytest.approx(10.0, abs=0.01) for s in out["by_slice"]["probe"])
    assert stats.beside_probe(rows[-1:], probe) == {"joined": 0}


def test_latency_by_slice_says_where_in_the_run_the_tail_sits() -> None:
    # A start-up transient: the first tenth of the run 200 ms, the rest 10 ms.
    rows = [(float(t), 0.200 if t < 10 else 0.010) for t in range(100)]
    slices = stats.latency_by_slice(rows)
    assert len(slices) == 10
    assert slices[0] == {"count": 10, "p50_ms": 200.0, "p99_ms": 200.0}
    assert all(s is not None and s["p99_ms"] == 10.0 for s in slices[1:-1])
    assert stats.latency_by_slice([]) == []
    gappy = stats.latency_by_slice([(0.0, 0.001), (10.0, 0.002)], slices=5)
    assert gappy[1] is None and gappy[0] is not None and gappy[4] is not None


def test_format_table_shows_both_floors_plainly() -> None:
    run = {
        "label": "consumer @ 3,000/s",
        "latency": {"count": 10, "p50_ms": 20.0, "p95_ms": 40.0, "p99_ms": 60.0},
        "same_run_floor": {
            "joined": 10,
            "consumer": {"p99_ms": 60.0},
            "probe": {"p50_ms": 12.0, "p95_ms": 30.0, "p99_ms": 48.0},
            "over_probe": {"p50_ms": 8.0, "p95_ms": 10.0, "p99_ms": 14.0},
            "tail": {"latency_ms": 70.0, "over_probe_ms": 15.0},
        },
        "probe_split": {
            "count": 10,
            "to_broker": {"p50_ms": 6.0, "p99_ms": 40.0},
            "to_reader": {"p50_ms": 3.0, "p99_ms": 9.0},
            "tail": {"to_broker_ms": 41.0, "to_reader_ms": 8.0},
        },
    }
    lines = stats.format_probe(run)
    assert (
        "same-run floor (bare reader beside it) p50/p95/p99 12 / 30 / 48 ms; consumer p99 / it 1.25x"
        in lines[0]
    )
    assert "15 of 70 ms" in lines[1]
    assert "producer -> broker p50/p99 6.0 / 40" in lines[2] and "41 + 8.0 ms" in lines[2]
    assert stats.format_probe({"label": "x"}) == []


def test_the_warm_bench_times_the_pure_path_and_each_rule_cold_and_warm() -> None:
    """bench.warm over a small stream: every stage and every rule reported, for the same number
    of messages cold and warm, the warm windows filled, and every record valid (the bench keys
    its records by a CRC, so a placement check would have rejected most of them)."""
    from bench.warm import STAGES, format_warm_bench, warm_bench
    from consumer.rules import RULES
    from utils.config import Settings

    settings = Settings()
    out = warm_bench(settings, 7, warm=3_000, count=400, accounts=40, rounds=1)
    for side in ("cold", "warm"):
        figures = out[side]
        assert figures["messages"] == figures["records"] >= 400
        assert set(figures["stages_us_per_msg"]) == set(STAGES)
        assert all(v > 0.0 for v in figures["stages_us_per_msg"].values())
        assert set(figures["rules"]) == {name for name, _fn in RULES}
        assert figures["pure_path_us_per_msg"] == min(figures["pure_path_passes"])
    assert out["warm_up_messages"] >= 3_000
    assert out["windows"]["share_full"] >= 0.5
    text = format_warm_bench(out)
    assert "cold" in text and "warm" in text and all(name in text for name, _fn in RULES)
