"""The report page: `templates/report.html.j2` rendered with Jinja2 (autoescaped) from the
figures and the charts' PNGs."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from reports.figures import SUMMARY_DIMENSIONS, ReportFigures

TEMPLATES = Path(__file__).resolve().parent / "templates"


def cell(value: Any) -> str:
    """A value as a table cell shows it: thousands separators, money to the cent, ratios to
    three places, '–' for a figure that is not defined."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, Decimal):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, tuple | list):
        return ", ".join(str(v) for v in value)
    return str(value)


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt name fails the render, not a blank cell
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["cell"] = cell
    return env


def render_page(figures: ReportFigures, charts: Mapping[str, str]) -> str:
    """The report as one HTML page; `charts` maps each chart's title to its base64 PNG."""
    total = next((r for r in figures.summary if r.dimension == "total"), None)
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            figures=figures,
            charts=charts,
            day=figures.day.isoformat(),
            generated_at=figures.generated_at.isoformat(timespec="seconds"),
            transactions=total.txn_count if total else 0,
            alerts=sum(r.alerts for r in figures.rules),
            missing=sum(r.missing for r in figures.reconciliation),
            dimensions=SUMMARY_DIMENSIONS,
        )
    )
