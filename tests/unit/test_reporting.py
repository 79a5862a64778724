"""The pure parts of the report (reports/day.py, offsets.py, completeness.py, scoring.py, page.py,
files.py): day resolution, gaps and restarts of offsets, completeness, rule scoring, the page and
the files."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest

from reports.completeness import Completeness, Watermark, ready_to_report
from reports.day import day_bounds, report_day
from reports.errors import ReportError
from reports.figures import AmountBucket, HourVolume, ReportFigures, SummaryRow, TopEntry
from reports.files import write_report
from reports.offsets import Offset, OffsetRun, PartitionReconciliation, find_gaps, reconcile
from reports.page import amount_text, cell, completeness_text, render_page
from reports.scoring import noisy_rules, score_day
from utils.rule_quality import RULE_SCENARIO, RuleScore, format_table, score_rules

# --------------------------------------------------------------------------- the day


def test_report_day_is_the_utc_date_of_the_interval_start() -> None:
    # 23:30 at UTC-2 is already the next day in UTC.
    start = datetime(2026, 3, 9, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    assert report_day(start) == date(2026, 3, 10)


def test_report_day_override_wins_and_is_validated() -> None:
    start = datetime(2026, 3, 9, tzinfo=UTC)
    assert report_day(start, "2026-01-02") == date(2026, 1, 2)
    assert report_day(start, date(2026, 1, 3)) == date(2026, 1, 3)
    assert report_day(start, "  ") == date(2026, 3, 9)  # an empty form field means "not given"
    with pytest.raises(ReportError, match="YYYY-MM-DD"):
        report_day(start, "10/03/2026")


def test_report_day_needs_an_interval_or_an_override() -> None:
    with pytest.raises(ReportError, match="no data interval"):
        report_day(None)
    with pytest.raises(ReportError, match="time zone"):
        report_day(datetime(2026, 3, 9))


def test_a_run_without_a_data_interval_reports_the_last_complete_day() -> None:
    # Triggered (API or UI) without a logical date: no data interval, only the time it ran.
    assert report_day(None, run_after=datetime(2026, 3, 11, 17, 45, tzinfo=UTC)) == date(2026, 3, 10)
    assert report_day(None, run_after=datetime(2026, 3, 11, 0, 30, tzinfo=UTC)) == date(2026, 3, 10)
    assert report_day(None, "2026-01-05", run_after=datetime(2026, 3, 11, tzinfo=UTC)) == date(2026, 1, 5)


def test_day_bounds_are_a_half_open_utc_day() -> None:
    start, end = day_bounds(date(2026, 3, 10))
    assert start == datetime(2026, 3, 10, tzinfo=UTC)
    assert end - start == timedelta(days=1)


# --------------------------------------------------------------------------- gaps


@pytest.mark.parametrize(
    ("offsets", "previous", "gaps"),
    [
        ([], None, []),
        ([0, 1, 2, 3], None, []),
        ([5, 6, 7], None, []),  # a log may start above 0: nothing before it is expected
        ([0, 1, 4, 5, 9], None, [(2, 3), (6, 8)]),
        ([0, 1, 1, 2, 2, 3], None, []),  # a stored and a rejected row for one offset is no gap
        ([10, 11], 9, []),
        ([12, 13], 9, [(10, 11)]),  # the gap across midnight
        ([3, 4], 9, []),  # out of order with the day before: not a gap (reported elsewhere)
        ([], 9, []),
    ],
)
def test_find_gaps(offsets: list[int], previous: int | None, gaps: list[tuple[int, int]]) -> None:
    assert find_gaps(offsets, previous) == gaps


T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _offsets(partition: int, offsets: list[int], *, stored: bool = True, at: int = 0) -> list[Offset]:
    """Offsets processed one second apart from T0 + `at` seconds."""
    return [Offset("", partition, o, T0 + timedelta(seconds=at + i), stored) for i, o in enumerate(offsets)]


def test_reconcile_splits_stored_and_rejected_per_partition() -> None:
    items = [
        *_offsets(0, [0, 3]),
        *_offsets(0, [1], stored=False, at=5),
        *_offsets(1, [5, 7]),
        *_offsets(1, [6], stored=False, at=9),
    ]
    result = reconcile(items, {("", 0): None, ("", 1): 2})
    assert result == [
        PartitionReconciliation("", 0, None, [OffsetRun(0, 3, 2, 1, [(2, 2)])]),
        PartitionReconciliation("", 1, 2, [OffsetRun(5, 7, 2, 1, [(3, 4)])]),
    ]
    assert [(p.stored, p.rejected, p.missing, p.restarts) for p in result] == [(2, 1, 1, 0), (2, 1, 2, 0)]


def test_a_topic_recreated_within_the_day_is_a_restart_not_a_merged_range() -> None:
    # The old log ran 10,495..10,499 this morning; the recreated topic starts again at 0.
    old = _offsets(0, list(range(10495, 10500)))
    new = _offsets(0, [0, 1, 2, 3], at=3600)
    rejected_new = _offsets(0, [4], stored=False, at=3700)
    [p] = reconcile([*new, *rejected_new, *old], {("", 0): 10494})
    assert p.runs == [
        OffsetRun(10495, 10499, 5, 0, []),
        OffsetRun(0, 4, 4, 1, [], restarted=True),
    ]
    assert (p.stored, p.rejected, p.missing, p.restarts) == (9, 1, 0, 1)


def test_offsets_that_begin_again_below_the_day_before_are_a_restart() -> None:
    [p] = reconcile(_offsets(0, [0, 1, 2]), {("", 0): 66804})
    assert p.runs == [OffsetRun(0, 2, 3, 0, [], restarted=True)]  # no gap counted from 66,804
    [same_log] = reconcile(_offsets(0, [66806, 66807]), {("", 0): 66804})
    assert same_log.runs == [OffsetRun(66806, 66807, 2, 0, [(66805, 66805)])]


def test_rejections_written_after_their_batch_are_no_restart() -> None:
    # A batch stores 100..105 and then writes its rejection of 101 (a lower offset, later).
    stored = _offsets(0, [100, 102, 103, 104, 105])
    late_rejection = _offsets(0, [101], stored=False, at=10)
    [p] = reconcile([*late_rejection, *stored], {("", 0): 99})
    assert p.runs == [OffsetRun(100, 105, 5, 1, [])]


# --------------------------------------------------------------------------- rule quality


def _scores(rules: list[RuleScore]) -> dict[str, RuleScore]:
    return {r.alert_type: r for r in rules}


def test_a_day_scores_the_incidents_that_begin_on_it_whole() -> None:
    # i1 (impossible travel) began at 23:40 and was alerted on its far leg after midnight; i2
    # began on the day and was missed; i0 began yesterday, alerted today: deserved, no catch.
    incidents = {"i1": "impossible_travel", "i2": "impossible_travel", "i3": "card_testing"}
    alerts = [
        ("impossible_travel", "i0", True, 1),
        ("impossible_travel", None, True, 1),
        ("impossible_travel", "i1", False, 1),
        ("card_testing", "i3", True, 3),
        ("card_testing", None, False, 5),  # not queried in practice; past the day, on no incident
        ("velocity", None, True, 2),
    ]
    scores = _scores(score_day(2_000, incidents, alerts, ground_truth=True))
    travel = scores["impossible_travel"]
    assert (travel.incidents, travel.caught, travel.alerts, travel.alerts_on_incidents) == (2, 1, 2, 1)
    assert travel.recall == 0.5 and travel.precision == 0.5 and travel.alerts_per_1000 == 1.0
    card = scores["card_testing"]
    assert (card.incidents, card.caught, card.alerts, card.recall, card.precision) == (1, 1, 3, 1.0, 1.0)
    velocity = scores["velocity"]
    assert (velocity.scenario, velocity.incidents, velocity.recall, velocity.precision) == (
        "velocity_burst",
        0,
        None,
        0.0,
    )


def test_the_day_lists_every_rule_then_other_alert_types_it_holds() -> None:
    scores = score_day(
        100, {}, [("zz_retired", None, True, 4), ("old_elsewhere", "i", False, 1)], ground_truth=False
    )
    assert [r.alert_type for r in scores] == [*RULE_SCENARIO, "zz_retired"]
    retired = scores[-1]
    assert (retired.scenario, retired.alerts, retired.alerts_per_1000) == (None, 4, 40.0)


def test_a_day_without_labels_has_no_recall_or_precision() -> None:
    scores = score_day(1_000, {}, [("velocity", None, True, 10)], ground_truth=False)
    assert all(r.recall is None and r.precision is None for r in scores)
    assert _scores(scores)["velocity"].alerts_per_1000 == 10.0
    # The hour after midnight holding only the end of yesterday's incident still has labels.
    tail = score_day(100, {}, [("card_testing", "i0", True, 2)], ground_truth=True)
    assert _scores(tail)["card_testing"].precision == 1.0 and _scores(tail)["card_testing"].recall is None
    assert score_day(0, {}, [], ground_truth=False)[0].alerts_per_1000 is None


def test_the_same_stream_scores_alike_as_one_run_and_as_its_days() -> None:
    """A run's incidents split over two days: each day's incidents and catches add up to the run's
    (`make quality`), however the incidents fall across midnight."""
    incidents = {"a": "card_testing", "b": "card_testing", "c": "impossible_travel", "d": "high_amount"}
    first_day = {"a", "c"}  # c crosses midnight: its alert is on day two
    on = {  # (rule, incident, day of the alerted message)
        ("card_testing", "a", 1),
        ("card_testing", "b", 2),
        ("impossible_travel", "c", 2),
        ("high_amount", None, 1),
    }
    run = _scores(score_rules(100, incidents, [(r, i) for r, i, _ in on]))
    days = []
    for day in (1, 2):
        mine = {i: s for i, s in incidents.items() if (i in first_day) == (day == 1)}
        alerts = [(r, i, d == day, 1) for r, i, d in on if d == day or i in mine]
        days.append(_scores(score_day(50, mine, alerts, ground_truth=True)))
    for rule, total in run.items():
        assert sum(d[rule].incidents for d in days) == total.incidents, rule
        assert sum(d[rule].caught for d in days) == total.caught, rule
        assert sum(d[rule].alerts for d in days) == total.alerts, rule
    assert days[0]["impossible_travel"].caught == 1 and days[1]["impossible_travel"].alerts == 1


# --------------------------------------------------------------------------- report files

EVIL = "<script>alert('x')</script> & \"quotes\""


def _figures(day: date) -> ReportFigures:
    # 4 card-testing incidents, 3 caught; 10 alerts, 8 of them on incidents; 100 transactions.
    quality = RuleScore(EVIL, "card_testing", 4, 3, 10, 8, 100.0, 0.75, 0.8)
    return ReportFigures(
        day=day,
        summary=[
            SummaryRow("total", "", 100, Decimal("12345.67"), 12, Decimal("13210.87"), "USD", 0),
            SummaryRow("country", EVIL, 3, Decimal("1.00"), 0, Decimal("1.08"), "USD", 0),
        ],
        rules=[quality],
        top_accounts=[
            TopEntry(EVIL, 5, 4, Decimal("99.50"), ("card_testing", EVIL), ("EUR",), Decimal("107.46"))
        ],
        top_merchants=[
            TopEntry("Café <b>", 2, 2, Decimal("3.00"), ("duplicate",), ("EUR", "JPY"), Decimal("2.17"))
        ],
        reconciliation=[PartitionReconciliation("", 0, None, [OffsetRun(0, 99, 97, 1, [(10, 11)])])],
        hourly=[HourVolume(3, 60, Decimal("100.00"), 5), HourVolume(4, 40, Decimal("50.00"), 7)],
        amounts=[AmountBucket(1.0, 1.78, 30), AmountBucket(1.78, 3.16, 70)],
        ground_truth=True,
    )


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_report_files_are_written_escaped_and_self_contained(tmp_path: Path) -> None:
    day = date(2026, 3, 10)
    out = write_report(day, _figures(day), tmp_path)
    assert out == tmp_path / "reports" / "2026-03-10"
    assert sorted(p.name for p in out.iterdir()) == [
        "alerts.csv",
        "figures.json",
        "report.html",
        "summary.csv",
    ]

    page = (out / "report.html").read_text()
    parser = _Collector()
    parser.feed(page)
    parser.close()
    # Only our own markup: the hostile strings are text, not tags (in the tables and in the
    # per-rule chart, whose labels are rule names).
    assert "script" not in parser.tags and "b" not in parser.tags
    text = "".join(parser.text)
    assert EVIL in text and "Café <b>" in text
    assert "&lt;script&gt;" in page
    # Three charts, inline SVG (no external files), their labels kept as text.
    assert parser.tags.count("svg") == 3 and not parser.images
    for label in (
        "hour of the day (UTC)",
        "transactions",
        "alerts",
        "amount in USD (log scale)",
    ):
        assert label in text, label
    assert "10–11" in text  # the reconciliation gap is shown

    with (out / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows[0] == {
        "day": "2026-03-10",
        "dimension": "total",
        "key": "",
        "txn_count": "100",
        "amount_sum": "12345.67",
        "alert_count": "12",
        "amount_base_sum": "13210.87",
        "base_currency": "USD",
        "converted_by_report": "0",
    }
    assert rows[1]["key"] == EVIL  # CSV keeps the raw value; quoting is the csv module's job
    with (out / "alerts.csv").open() as f:
        rule = next(csv.DictReader(f))
    assert rule == {
        "day": "2026-03-10",
        "alert_type": EVIL,
        "scenario": "card_testing",
        "incidents": "4",
        "caught": "3",
        "alerts": "10",
        "alerts_on_incidents": "8",
        "alerts_per_1000": "100.0",
        "recall": "0.75",
        "precision": "0.8",
        "ground_truth": "True",
    }

    data = json.loads((out / "figures.json").read_text())
    assert data["day"] == "2026-03-10"
    assert data["reconciliation"][0]["missing"] == 2
    assert data["reconciliation"][0]["runs"][0]["gaps"] == [[10, 11]]
    assert data["rules"][0]["recall"] == 0.75 and data["ground_truth"] is True
    assert data["base_currency"] == "USD" and data["summary"][0]["amount_base_sum"] == 13210.87
    assert data["summary"][0]["amount_sum"] == pytest.approx(12345.67)


def test_rewriting_a_report_replaces_it(tmp_path: Path) -> None:
    day = date(2026, 3, 10)
    write_report(day, _figures(day), tmp_path)
    (tmp_path / "reports" / "2026-03-10" / "summary.csv").write_text("stale")
    out = write_report(day, _figures(day), tmp_path)
    assert (out / "summary.csv").read_text().startswith("day,dimension")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_an_empty_day_says_so_instead_of_drawing_empty_charts(tmp_path: Path) -> None:
    day = date(2026, 3, 11)
    empty = ReportFigures(day, [SummaryRow("total", "", 0, Decimal(0), 0)], [], [], [], [], [], [])
    page = (write_report(day, empty, tmp_path) / "report.html").read_text()
    assert "No transactions on this day." in page
    assert "<img" not in page and 'id="rules"' not in page
    assert "Nothing was processed on this day." in page


def test_figures_for_another_day_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not 2026-03-11"):
        write_report(date(2026, 3, 11), _figures(date(2026, 3, 10)), tmp_path)


def test_cells_read_as_a_person_expects() -> None:
    assert cell(None) == "–"  # not defined, rather than a misleading 0
    assert cell(1234567) == "1,234,567"
    assert cell(Decimal("1234.5")) == "1,234.50"
    assert cell(0.12345) == "0.123"
    assert cell(("card_testing", "duplicate")) == "card_testing, duplicate"
    assert cell("ACC00000042") == "ACC00000042"


SVG = ("Transactions and alerts per hour", '<svg xmlns="http://www.w3.org/2000/svg"><text>7</text></svg>')


def _text(page: str) -> str:
    parser = _Collector()
    parser.feed(page)
    return " ".join(" ".join(parser.text).split())


def test_the_page_flags_missing_offsets_and_counts_with_separators() -> None:
    day = date(2026, 3, 10)
    figures = _figures(day)
    page = render_page(figures, {"per-hour": SVG})
    text = _text(page)
    assert "100 transactions (13,210.87 USD), 10 alerts, 0 rejected messages" in text
    assert '<p class="bad">2 offsets missing</p>' in page
    assert '<figure class="chart" role="img" aria-label="Transactions and alerts per hour"><svg' in page
    clean = dataclasses.replace(
        figures, reconciliation=[PartitionReconciliation("", 0, None, [OffsetRun(0, 99, 99, 1, [])])]
    )
    assert "offsets missing" not in render_page(clean, {})


class _Rows(HTMLParser):
    """The rules table as lists of cell texts: its header, then one list per rule."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._in = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._in = ("class", "rules") in attrs
        elif self._in and tag == "tr":
            self.rows.append([])
        elif self._in and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in = False
        elif self._in and tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def rules_table(page: str) -> list[list[str]]:
    parser = _Rows()
    parser.feed(page)
    return parser.rows


def test_the_rules_table_shows_the_incident_level_figures_of_make_quality() -> None:
    rules = score_day(
        4_000,
        {"i1": "card_testing", "i2": "card_testing", "i3": "impossible_travel"},
        [
            ("card_testing", "i1", True, 3),
            ("card_testing", None, True, 1),
            ("impossible_travel", "i3", False, 1),
        ],
        ground_truth=True,
    )
    page = render_page(dataclasses.replace(_figures(date(2026, 3, 10)), rules=rules), {})
    header, *rows = rules_table(page)
    # The columns of `make quality`'s table, in its order.
    assert header == [c.strip() for c in format_table([]).splitlines()[0].strip("|").split("|")]
    assert header[2:5] == ["incidents", "caught", "recall"] and header[-1] == "per 1,000 txns"
    by_rule = {r[0]: r for r in rows}
    assert [r[0] for r in rows] == list(RULE_SCENARIO)
    assert by_rule["card_testing"] == [
        "card_testing",
        "card_testing",
        "2",
        "1",
        "50.0%",
        "4",
        "3",
        "75.0%",
        "1.00",
    ]
    # Caught on its far leg past midnight: the alert is the next day's, the catch this day's.
    assert by_rule["impossible_travel"][2:8] == ["1", "1", "100.0%", "0", "0", "–"]
    assert by_rule["velocity"][1:5] == ["velocity_burst", "0", "0", "–"]
    assert 'id="no-labels"' not in page and "Scored per incident" in _text(page)


def test_a_day_without_labels_says_so_instead_of_showing_empty_ratios() -> None:
    rules = score_day(1_000, {}, [("velocity", None, True, 7)], ground_truth=False)
    figures = dataclasses.replace(_figures(date(2026, 3, 10)), rules=rules, ground_truth=False)
    page = render_page(figures, {})
    assert "No incident labels on this day." in _text(page)
    header, *rows = rules_table(page)
    assert header == ["rule", "alerts", "per 1,000 txns"]
    assert ["velocity", "7", "7.00"] in rows
    assert "recall" not in header and "Scored per incident" not in _text(page)


def test_the_table_of_contents_links_every_section() -> None:
    page = render_page(_figures(date(2026, 3, 10)), {"per-hour": SVG})
    parser = _Collector()
    parser.feed(page)
    assert "nav" in parser.tags
    for section in (
        "completeness",
        "per-hour",
        "summary",
        "rules",
        "top-accounts",
        "top-merchants",
        "reconciliation",
    ):
        assert f'<a href="#{section}">' in page and f'id="{section}"' in page


def test_amounts_are_added_across_currencies_only_in_the_base_currency() -> None:
    figures = dataclasses.replace(
        _figures(date(2026, 3, 10)),
        summary=[
            SummaryRow("total", "", 100, Decimal("999999.00"), 12, Decimal("7925.36"), "USD", 40),
            SummaryRow(
                "transaction_type", "purchase", 100, Decimal("999999.00"), 12, Decimal("7925.36"), "USD", 40
            ),
            SummaryRow("currency", "EUR", 60, Decimal("1234.50"), 7, Decimal("1333.26"), "USD", 0),
            SummaryRow("currency", "JPY", 40, Decimal("983910.00"), 5, Decimal("6592.10"), "USD", 40),
        ],
    )
    page = render_page(figures, {})
    text = _text(page)
    assert "999,999.00" not in text  # the nominal total and per-type sums add yen to euros
    assert "100 transactions (7,925.36 USD)" in text
    assert "1,234.50 EUR" in text and "983,910 JPY" in text  # each currency as sent, its own decimals
    assert "amount as sent amount in USD" in text and "7,925.36" in text
    assert "40 of the day's 100 transactions were stored before amounts were converted" in text
    # Top lists: one currency as sent and in USD; several only in USD.
    assert "99.50 EUR = 107.46 USD" in text and "2.17 USD (2 currencies)" in text
    entry = TopEntry("m", 1, 1, Decimal("1500"), ("duplicate",), ("JPY",), Decimal("10.05"))
    assert amount_text(entry, "USD") == "1,500 JPY = 10.05 USD"
    assert amount_text(dataclasses.replace(entry, currencies=("USD",)), "USD") == "10.05 USD"
    # Figures from before base sums existed never add currencies.
    old = dataclasses.replace(entry, currencies=("EUR", "JPY"), amount_base_sum=None)
    assert amount_text(old, "USD") == "not converted (2 currencies)"
    before = dataclasses.replace(
        figures, summary=[SummaryRow("total", "", 100, Decimal("999999.00"), 12), *figures.summary[2:]]
    )
    assert "computed before the report added amounts in the base currency; rerun the day" in _text(
        render_page(before, {})
    )


def test_rules_with_absurd_alert_rates_are_flagged() -> None:
    rules = score_day(
        1_000,
        {"i": "card_testing"},
        [("velocity", None, True, 340), ("card_testing", "i", True, 10)],
        ground_truth=True,
    )
    assert noisy_rules(rules, 0.05) == {"velocity"}  # 34% of transactions; card_testing 1%
    figures = dataclasses.replace(_figures(date(2026, 3, 10)), rules=rules)
    page = render_page(figures, {})
    assert '<tr class="flagged">' in page and page.count('<span class="flag">flagged</span>') == 1
    assert "Flagged: velocity alerted on more than 5.0% of the day's transactions." in _text(page)
    assert noisy_rules(rules, 0.34) == set()  # strictly above the limit


def _completeness(day: date, checked: datetime, *watermarks: datetime, late: int = 0) -> Completeness:
    return Completeness(day, checked, [Watermark(i, w) for i, w in enumerate(watermarks)], late, None)


def test_a_day_is_complete_once_every_partition_stored_past_its_end() -> None:
    day, end = date(2026, 3, 10), datetime(2026, 3, 11, tzinfo=UTC)
    behind = _completeness(
        day, end + timedelta(minutes=5), end + timedelta(minutes=1), end - timedelta(hours=2)
    )
    assert not behind.complete and [w.partition for w in behind.behind] == [1]
    wait = timedelta(minutes=120)
    assert not ready_to_report(behind, now=end + timedelta(minutes=5), max_wait=wait, wait=True)
    assert ready_to_report(behind, now=end + timedelta(minutes=121), max_wait=wait, wait=True)
    assert ready_to_report(behind, now=end + timedelta(minutes=5), max_wait=wait, wait=False)  # manual
    done = _completeness(day, end + timedelta(minutes=5), end + timedelta(minutes=1), end, late=12)
    assert done.complete and ready_to_report(done, now=end, max_wait=wait, wait=True)

    ok, text = completeness_text(done, 1000)
    assert (
        ok
        and text.startswith("Complete:")
        and "12 of its 1,000 transactions were stored after the day had ended" in text
    )
    ok, text = completeness_text(behind, 1000)
    assert not ok and "1 of 2 partitions had not stored any event past this day's end" in text
    assert "partition 1 up to 2026-03-10 22:00" in text
    stopped = Completeness(
        day,
        end + timedelta(days=200),
        [Watermark(0, end - timedelta(hours=22))],
        40,
        end + timedelta(days=199),
    )
    ok, text = completeness_text(stopped, 40)
    assert not ok and "no partition had stored an event past this day's end" in text
    assert "the latest stored event is from 2026-03-10 02:00" in text
    assert "All 40 of its transactions were stored after the day had ended (by 2026-09-26)" in text
    ok, text = completeness_text(_completeness(day, end - timedelta(hours=3), end - timedelta(hours=3)), 10)
    assert not ok and text.startswith("The day is not over")


def test_reconciliation_says_whether_it_agrees_with_the_rejection_table() -> None:
    figures = dataclasses.replace(
        _figures(date(2026, 3, 10)),
        summary=[
            SummaryRow("total", "", 100, Decimal(1), 0),
            SummaryRow("rejection_reason", "invalid_json", 1, Decimal(0), 0),
        ],
    )
    assert "The rejected messages are the 1 of the summary's rejection table" in _text(
        render_page(figures, {})
    )
    off = dataclasses.replace(
        figures, summary=[*figures.summary, SummaryRow("rejection_reason", "empty_message", 4, Decimal(0), 0)]
    )
    assert "The summary's rejection table counts 5" in _text(render_page(off, {}))
    restarted = dataclasses.replace(
        figures,
        reconciliation=[PartitionReconciliation("", 0, 66804, [OffsetRun(0, 10, 10, 1, [], restarted=True)])],
    )
    text = _text(render_page(restarted, {}))
    assert "offsets restarted: began at 0, below 66,804" in text
    assert "Offsets restarted 1 time(s): a topic was recreated or its offsets were reset on this day." in text


def test_analysts_verdicts_are_shown_beside_the_simulators_precision() -> None:
    from utils.verdicts import scores

    figures = _figures(date(2026, 3, 10))
    assert 'id="verdicts"' not in render_page(figures, {})  # no closed case: no table
    labelled = dataclasses.replace(
        figures,
        verdicts=scores([(EVIL, "confirmed_fraud"), (EVIL, "false_positive"), (EVIL, "confirmed_fraud")]),
    )
    page = render_page(labelled, {})
    table = page[page.index('id="verdicts"') :]
    table = table[: table.index("</table>")]
    # rule (escaped), confirmed, decided, verdict precision, the simulator's precision (0.8)
    assert "&lt;script&gt;" in table and "<script>" not in table
    assert re.search(r">2</td><td class=\"n\">3</td><td class=\"n\">67%</td><td class=\"n\">80%</td>", table)
