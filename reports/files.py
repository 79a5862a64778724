"""The report's files: `<data_dir>/reports/<day>/` with report.html, summary.csv, alerts.csv and
figures.json, each written atomically so a reader never sees half a file."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from reports.charts import render_charts
from reports.errors import ReportError
from reports.figures import RULE_QUALITY_COLUMNS, SUMMARY_COLUMNS, ReportFigures
from reports.page import render_page

log = logging.getLogger(__name__)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def figures_to_json(figures: ReportFigures) -> str:
    data = dataclasses.asdict(figures)
    data["reconciliation"] = [
        {
            **dataclasses.asdict(p),
            "stored": p.stored,
            "rejected": p.rejected,
            "missing": p.missing,
            "restarts": p.restarts,
            "runs": [{**dataclasses.asdict(r), "missing": r.missing} for r in p.runs],
        }
        for p in figures.reconciliation
    ]
    if figures.completeness is not None:
        data["completeness"] = figures.completeness.to_dict()
    return json.dumps(data, default=_json_default, indent=2, sort_keys=True)


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return buf.getvalue()


def _write_atomic(path: Path, text: str) -> None:
    # A reader (the UI, a browser) never sees half a report: write aside, then rename.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def report_dir(data_dir: str | Path, day: date) -> Path:
    return Path(data_dir) / "reports" / day.isoformat()


def write_report(day: date, figures: ReportFigures, data_dir: str | Path) -> Path:
    """Write `<data_dir>/reports/<day>/` report.html (self-contained: charts as inline SVG),
    summary.csv (daily_summary's columns), alerts.csv (one row per rule: rule_quality's columns)
    and figures.json; returns the directory.
    A rerun replaces the files."""
    if figures.day != day:
        raise ReportError(f"figures are for {figures.day}, not {day}")
    out = report_dir(data_dir, day)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "report.html", render_page(figures, render_charts(figures)))
    _write_atomic(
        out / "summary.csv",
        _csv(
            ("day", *SUMMARY_COLUMNS),
            ((day, *dataclasses.astuple(r)) for r in figures.summary),
        ),
    )
    _write_atomic(
        out / "alerts.csv",
        _csv(
            ("day", *RULE_QUALITY_COLUMNS, "ground_truth"),
            ((day, *dataclasses.astuple(r), figures.ground_truth) for r in figures.rules),
        ),
    )
    _write_atomic(out / "figures.json", figures_to_json(figures))
    log.info("report for %s written to %s", day, out)
    return out
