"""The pure parts of the report (reports/day.py, offsets.py, completeness.py, scoring.py, page.py,
files.py): day resolution, gaps and restarts of offsets, completeness, rule scoring, the page and
the files."""

from __future__ import annotations

import csv
import dataclasses
import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest

from reports.completeness import Completeness, Watermark, ready_to_report
from reports.day import day_bounds, report_day
from reports.errors import ReportError
from reports.figures import AmountBucket, HourVolume, ReportFigures, RuleCounts, SummaryRow, TopEntry
from reports.files import write_report
from reports.offsets import Offset, OffsetRun, PartitionReconciliation, find_gaps, reconcile
from reports.page import amount_text, cell, completeness_text, render_page
from reports.scoring import noisy_rules, score_rule

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


def _counts(**kw: object) -> RuleCounts:
    base: dict[str, object] = {
        "alert_type": "card_testing",
        "scenario": "card_testing",
        "alerts": 10,
        "true_positives": 8,
        "alerts_on_fraud": 9,
        "labelled": 20,
        "labelled_accounts": 4,
        "detected_accounts": 3,
    }
    return RuleCounts(**{**base, **kw})  # type: ignore[arg-type]


def test_precision_recall_and_error_counts() -> None:
    q = score_rule(_counts(), 1000, labels_present=True)
    assert (q.true_positives, q.false_positives, q.false_negatives) == (8, 2, 12)
    assert q.precision == pytest.approx(0.8)
    assert q.recall == pytest.approx(0.4)
    assert q.precision_any_fraud == pytest.approx(0.9)
    assert q.alert_rate == pytest.approx(0.01)
    assert (q.labelled_accounts, q.detected_accounts) == (4, 3)


def test_a_rule_without_a_scenario_reports_counts_only() -> None:
    q = score_rule(
        _counts(alert_type="velocity", scenario=None, true_positives=0, labelled=0), 500, labels_present=True
    )
    assert q.alerts == 10 and q.alert_rate == pytest.approx(0.02)
    assert q.precision is None and q.recall is None and q.true_positives is None
    assert q.false_negatives is None and q.labelled is None
    # "Any fraud" precision still has a meaning: it needs labels, not a scenario.
    assert q.precision_any_fraud == pytest.approx(0.9)


def test_without_labels_nothing_is_scored() -> None:
    q = score_rule(_counts(true_positives=0, alerts_on_fraud=0, labelled=0), 1000, labels_present=False)
    assert q.alerts == 10
    assert q.precision is None and q.recall is None and q.precision_any_fraud is None
    assert q.false_positives is None


def test_undefined_ratios_are_none_not_zero() -> None:
    q = score_rule(
        _counts(alerts=0, true_positives=0, alerts_on_fraud=0, labelled=0, detected_accounts=0),
        0,
        labels_present=True,
    )
    assert q.precision is None and q.recall is None and q.alert_rate is None
    assert (q.false_positives, q.false_negatives) == (0, 0)
    # A scenario that happened but was never alerted: recall 0, precision undefined.
    missed = score_rule(_counts(alerts=0, true_positives=0, alerts_on_fraud=0), 100, labels_present=True)
    assert missed.recall == 0.0 and missed.precision is None and missed.false_negatives == 20


# --------------------------------------------------------------------------- report files

EVIL = "<script>alert('x')</script> & \"quotes\""


def _figures(day: date) -> ReportFigures:
    quality = score_rule(_counts(alert_type=EVIL), 100, labels_present=True)
    return ReportFigures(
        day=day,
        summary=[
            SummaryRow("total", "", 100, Decimal("12345.67"), 12),
            SummaryRow("country", EVIL, 3, Decimal("1.00"), 0),
        ],
        rules=[quality],
        top_accounts=[TopEntry(EVIL, 5, 4, Decimal("99.50"), ("card_testing", EVIL), ("EUR",))],
        top_merchants=[TopEntry("Café <b>", 2, 2, Decimal("3.00"), ("duplicate",), ("EUR", "JPY"))],
        reconciliation=[PartitionReconciliation("", 0, None, [OffsetRun(0, 99, 97, 1, [(10, 11)])])],
        hourly=[HourVolume(3, 60, Decimal("100.00"), 5), HourVolume(4, 40, Decimal("50.00"), 7)],
        amounts=[AmountBucket(1.0, 1.78, 30), AmountBucket(1.78, 3.16, 70)],
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
        "amount in the transaction's own currency",
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
    }
    assert rows[1]["key"] == EVIL  # CSV keeps the raw value; quoting is the csv module's job
    with (out / "alerts.csv").open() as f:
        rule = next(csv.DictReader(f))
    assert rule["alert_type"] == EVIL and rule["precision"] == "0.8" and rule["labelled"] == "20"

    data = json.loads((out / "figures.json").read_text())
    assert data["day"] == "2026-03-10"
    assert data["reconciliation"][0]["missing"] == 2
    assert data["reconciliation"][0]["runs"][0]["gaps"] == [[10, 11]]
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
    assert "100 transactions, 10 alerts, 0 rejected messages" in text
    assert '<p class="bad">2 offsets missing</p>' in page
    assert "8 of 4" not in text and "3 of 4" in text  # accounts detected
    assert '<figure class="chart" role="img" aria-label="Transactions and alerts per hour"><svg' in page
    clean = dataclasses.replace(
        figures, reconciliation=[PartitionReconciliation("", 0, None, [OffsetRun(0, 99, 99, 1, [])])]
    )
    assert "offsets missing" not in render_page(clean, {})


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


def test_amounts_are_never_summed_over_currencies() -> None:
    figures = dataclasses.replace(
        _figures(date(2026, 3, 10)),
        summary=[
            SummaryRow("total", "", 100, Decimal("999999.00"), 12),
            SummaryRow("transaction_type", "purchase", 100, Decimal("999999.00"), 12),
            SummaryRow("currency", "EUR", 60, Decimal("1234.50"), 7),
            SummaryRow("currency", "JPY", 40, Decimal("998764.50"), 5),
        ],
    )
    text = _text(render_page(figures, {}))
    assert "999,999.00" not in text  # the total and the per-type sums add yen to euros
    assert "1,234.50 EUR" in text and "998,764.50 JPY" in text
    assert "Amount: not converted (2 currencies): see the table by currency." in text
    assert "not converted (2 currencies)" in text  # the merchant with EUR and JPY transactions
    assert amount_text(Decimal("99.5"), ("EUR",)) == "99.50 EUR"


def test_rules_with_absurd_alert_rates_are_flagged() -> None:
    rules = [
        score_rule(
            _counts(alert_type="velocity", scenario=None, alerts=340, true_positives=0),
            1000,
            labels_present=True,
        ),
        score_rule(_counts(), 1000, labels_present=True),
    ]
    assert noisy_rules(rules, 0.05) == {"velocity"}  # 34% of transactions; card_testing 1%
    figures = dataclasses.replace(_figures(date(2026, 3, 10)), rules=rules)
    page = render_page(figures, {})
    assert '<tr class="flagged">' in page and page.count('<span class="flag">flagged</span>') == 1
    assert "Flagged: velocity alerted on more than 5.0% of the day's transactions." in _text(page)


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
