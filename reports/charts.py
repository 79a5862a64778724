"""The report's charts (matplotlib): volume per hour, alerts per rule, the amount distribution,
each a base64 PNG so the page embeds them and stays one self-contained file."""

from __future__ import annotations

import base64
import io
from typing import Any

from reports.figures import ReportFigures


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    # The Agg canvas directly, not pyplot: no global figure registry, no GUI backend, and safe
    # in a worker process that renders several reports.
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def render_charts(figures: ReportFigures) -> dict[str, str]:
    """{title: base64 PNG} for volume per hour, alerts per rule and the amount distribution."""
    from matplotlib.figure import Figure  # imported here: ~1.5 s, and only the report needs it

    charts: dict[str, str] = {}

    fig = Figure(figsize=(8, 3))
    ax = fig.subplots()
    counts = {h.hour: h for h in figures.hourly}
    hours = list(range(24))
    ax.bar(
        hours,
        [counts[h].txn_count if h in counts else 0 for h in hours],
        color="#4477aa",
        label="transactions",
    )
    ax.set_xlabel("hour (UTC)")
    ax.set_ylabel("transactions")
    ax.set_xticks(hours[::2])
    alerts_ax = ax.twinx()
    alerts_ax.plot(
        hours, [counts[h].alert_count if h in counts else 0 for h in hours], color="#cc3311", marker="."
    )
    alerts_ax.set_ylabel("alerts", color="#cc3311")
    ax.set_title(f"Volume per hour, {figures.day.isoformat()}")
    charts["Volume per hour"] = _png(fig)

    fig = Figure(figsize=(8, 3))
    ax = fig.subplots()
    names = [r.alert_type for r in figures.rules]
    ax.barh(names, [r.alerts for r in figures.rules], color="#cc3311")
    ax.invert_yaxis()
    ax.set_xlabel("alerts")
    ax.set_title("Alerts per rule")
    charts["Alerts per rule"] = _png(fig)

    fig = Figure(figsize=(8, 3))
    ax = fig.subplots()
    if figures.amounts:
        lefts = [b.lower for b in figures.amounts]
        widths = [b.upper - b.lower for b in figures.amounts]
        ax.bar(lefts, [b.txn_count for b in figures.amounts], width=widths, align="edge", color="#228833")
        ax.set_xscale("log")
    ax.set_xlabel("amount (nominal, log scale)")
    ax.set_ylabel("transactions")
    ax.set_title("Amount distribution")
    charts["Amount distribution"] = _png(fig)
    return charts
