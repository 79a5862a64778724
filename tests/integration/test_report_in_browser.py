"""The daily report of a seeded day, opened in a real browser: what a person sees.

A seeded stream goes through the real producer, Kafka, consumer and PostgreSQL; the report steps
run as the DAG runs them; then headless Chromium opens `report.html` and the test reads the page
as rendered (title, sections, charts loaded as images, tables). A full-page screenshot is left
in `tests/artifacts/` for a person to look at.
"""

from __future__ import annotations

from pathlib import Path

from producer.generator import DEFAULT_START
from reports import queries
from reports.files import write_report
from reports.scoring import SCENARIO_FOR_RULE
from tests.browser import artifact, chromium
from tests.support import consume, produce, scalar
from utils.config import Settings
from utils.database import Database

DAY = DEFAULT_START.date()
SECTIONS = [
    "Volume per hour",
    "Alerts per rule",
    "Amount distribution",
    "Summary",
    "Rules",
    "Top accounts by alerts",
    "Top merchants by alerts",
    "Reconciliation",
]


def _render_seeded_day(s: Settings, data_dir: Path) -> Path:
    produce(s, 3000, seed=41, start=DEFAULT_START)
    assert consume(s).stored == 3000
    db = Database(s.postgres)
    try:
        queries.ensure_schema(db)
        queries.build_daily_summary(db, DAY)
        queries.analyse_alerts(db, DAY)
        queries.reconcile(db, DAY, topic=s.kafka.topic)
        return write_report(DAY, queries.gather_figures(db, DAY), data_dir) / "report.html"
    finally:
        db.close()


def test_the_report_of_a_seeded_day_as_a_person_sees_it(pipeline_settings: Settings, tmp_path: Path) -> None:
    s = pipeline_settings
    page_file = _render_seeded_day(s, tmp_path)
    on_day = scalar(
        s.postgres,
        """SELECT count(*) FROM transactions WHERE ("timestamp" AT TIME ZONE 'UTC')::date = %s""",
        (DAY,),
    )

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")

        assert page.title() == f"Transaction report {DAY}"
        assert page.locator("h1").inner_text() == f"Transaction report for {DAY} (UTC)"
        assert f"{on_day:,} transactions" in page.locator("p.note").first.inner_text()
        assert page.locator("h2").all_inner_texts() == SECTIONS

        charts = page.locator("img")
        assert charts.count() == 3
        for i in range(3):
            chart = charts.nth(i)
            assert chart.get_attribute("alt") == SECTIONS[i]
            loaded = chart.evaluate("img => img.complete && img.naturalWidth > 0 && img.naturalHeight > 0")
            assert loaded, f"chart {SECTIONS[i]!r} did not load as an image"
            box = chart.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100, (SECTIONS[i], box)

        tables = page.locator("table")
        assert tables.count() >= 8  # summary breakdowns, rules, top accounts and merchants
        for i in range(tables.count()):
            assert tables.nth(i).is_visible()
        rules = page.locator("h2:text-is('Rules') + p + table")
        assert rules.locator("th").first.inner_text() == "rule"
        assert rules.locator("tbody tr").count() >= len(SCENARIO_FOR_RULE)

        shot = artifact(f"report-{DAY}.png")
        page.screenshot(path=str(shot), full_page=True)
        assert errors == []
    assert shot.stat().st_size > 10_000
