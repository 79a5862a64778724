"""The pure parts of the report (reports/day.py, scoring.py, page.py, files.py): day resolution, gap
detection, rule scoring, the page and the files."""

from __future__ import annotations

import base64
import csv
import dataclasses
import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest

from reports.day import day_bounds, report_day
from reports.errors import ReportError
from reports.figures import (
    AmountBucket,
    HourVolume,
    PartitionReconciliation,
    ReportFigures,
    RuleCounts,
    SummaryRow,
    TopEntry,
)
from reports.files import write_report
from reports.page import cell, render_page
from reports.scoring import find_gaps, reconcile_partitions, score_rule

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


def test_reconcile_partitions_splits_stored_and_rejected_per_partition() -> None:
    rows = [(1, 7, True), (0, 0, True), (0, 1, False), (0, 3, True), (1, 5, True), (1, 6, False)]
    result = reconcile_partitions(rows, {0: None, 1: 2})
    assert result == [
        PartitionReconciliation(0, 0, 3, None, 2, 1, [(2, 2)]),
        PartitionReconciliation(1, 5, 7, 2, 2, 1, [(3, 4)]),
    ]
    assert [r.missing for r in result] == [1, 2]


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
        top_accounts=[TopEntry(EVIL, 5, 4, Decimal("99.50"), ("card_testing", EVIL))],
        top_merchants=[TopEntry("Café <b>", 2, 2, Decimal("3.00"), ("duplicate",))],
        reconciliation=[PartitionReconciliation(0, 0, 99, None, 97, 1, [(10, 11)])],
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
    # Only our own markup: the hostile strings are text, not tags.
    assert "script" not in parser.tags and "b" not in parser.tags
    text = "".join(parser.text)
    assert EVIL in text and "Café <b>" in text
    assert "&lt;script&gt;" in page
    # Three charts, each a real PNG embedded in the page (no external files).
    assert len(parser.images) == 3
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "10-11" in text  # the reconciliation gap is shown

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
    assert data["summary"][0]["amount_sum"] == pytest.approx(12345.67)


def test_rewriting_a_report_replaces_it(tmp_path: Path) -> None:
    day = date(2026, 3, 10)
    write_report(day, _figures(day), tmp_path)
    (tmp_path / "reports" / "2026-03-10" / "summary.csv").write_text("stale")
    out = write_report(day, _figures(day), tmp_path)
    assert (out / "summary.csv").read_text().startswith("day,dimension")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_an_empty_day_still_gives_a_report(tmp_path: Path) -> None:
    day = date(2026, 3, 11)
    empty = ReportFigures(day, [SummaryRow("total", "", 0, Decimal(0), 0)], [], [], [], [], [], [])
    page = (write_report(day, empty, tmp_path) / "report.html").read_text()
    assert "nothing processed on this day" in page


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


def test_the_page_flags_missing_offsets_and_counts_with_separators() -> None:
    day = date(2026, 3, 10)
    figures = _figures(day)
    page = render_page(figures, {"Volume per hour": "iVBORw0KGgo="})
    parser = _Collector()
    parser.feed(page)
    text = " ".join(" ".join(parser.text).split())
    assert "100 transactions, 10 alerts, 2 offsets missing in reconciliation" in text
    assert '<p class="bad">2 offsets missing</p>' in page
    assert "12,345.67" in text and "8 of 4" not in text and "3 of 4" in text  # accounts detected
    assert parser.images == ["data:image/png;base64,iVBORw0KGgo="]
    clean = dataclasses.replace(figures, reconciliation=[PartitionReconciliation(0, 0, 99, None, 99, 1, [])])
    assert 'class="bad"' not in render_page(clean, {})
