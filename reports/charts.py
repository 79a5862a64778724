"""The report's charts (matplotlib): transactions and alerts per hour, alerts per rule, the amount
distribution, each an SVG the page embeds inline, so it stays one self-contained file and the
charts' words and numbers are text (sharp at any zoom, searchable, readable by a test).

Drawn to be read: every axis labelled, counts with thousands separators, alerts on their own
panel (not a second y-axis of nearly the same scale), a log scale with the count written on each
bar when one rule outnumbers the others, noisy rules marked. A day without transactions has no
charts: the page says so instead of drawing empty axes.
"""

from __future__ import annotations

import io
from typing import Any

from reports.figures import ReportFigures
from reports.scoring import noisy_rules

BLUE, RED, GREEN, GREY = "#4477aa", "#cc3311", "#228833", "#999999"
# One rule above this many times the smallest non-zero one gets a log scale: linear, the small
# ones would be invisible slivers.
LOG_SCALE_RATIO = 20


def _thousands(value: float, _pos: int | None = None) -> str:
    """Tick labels: 45,000; a million and up as 1 M, 10 M (long labels collide on log axes)."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:,g} M"
    return f"{value:,.0f}" if value >= 1 or value == 0 else f"{value:g}"


def _svg(fig: Any, key: str) -> str:
    """The figure as an inline `<svg>` element, its text kept as text."""
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    # The SVG canvas directly, not pyplot: no global figure registry, no GUI backend, and safe
    # in a worker process that renders several reports. A salt per chart keeps the ids of the
    # charts' clip paths and markers apart on one page.
    FigureCanvasSVG(fig)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": key}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _hourly(figures: ReportFigures) -> str:
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    by_hour = {h.hour: h for h in figures.hourly}
    hours = list(range(24))
    fig = Figure(figsize=(9, 4.4))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1], "hspace": 0.12})
    top.bar(hours, [by_hour[h].txn_count if h in by_hour else 0 for h in hours], color=BLUE)
    top.set_ylabel("transactions")
    bottom.bar(hours, [by_hour[h].alert_count if h in by_hour else 0 for h in hours], color=RED)
    bottom.set_ylabel("alerts")
    bottom.set_xlabel("hour of the day (UTC)")
    bottom.set_xticks(hours[::2])
    for ax in (top, bottom):
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
        ax.grid(axis="y", color="#e5e5e5")
        ax.set_axisbelow(True)
    top.set_title(f"Transactions and alerts per hour, {figures.day.isoformat()}")
    return _svg(fig, "per-hour")


def _per_rule(figures: ReportFigures) -> str:
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    rules = sorted(figures.rules, key=lambda r: (-r.alerts, r.alert_type))
    noisy = noisy_rules(rules, figures.noisy_alert_rate)
    counts = [r.alerts for r in rules]
    positive = [c for c in counts if c > 0]
    log = bool(positive) and max(positive) >= LOG_SCALE_RATIO * min(positive)
    fig = Figure(figsize=(9, 0.45 * len(rules) + 1.2))
    ax = fig.subplots()
    names = [r.alert_type for r in rules]
    colors = [RED if r.alert_type in noisy else BLUE for r in rules]
    # On a log scale a zero has no bar; its label still says 0.
    ax.barh(names, [c if c > 0 else 0 for c in counts], color=colors)
    ax.invert_yaxis()
    top = max(counts, default=0)
    if log:
        ax.set_xscale("log")
        ax.set_xlim(0.8, top * 40)  # room for the count after the longest bar
        ax.set_xlabel("alerts (log scale)")
    else:
        ax.set_xlim(0, max(top, 1) * 1.35)
        ax.set_xlabel("alerts")
    ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
    for i, r in enumerate(rules):
        label = f"{r.alerts:,}"
        if r.alert_type in noisy and r.alerts_per_1000 is not None:
            label += f"  (on {r.alerts_per_1000 / 1000:.0%} of transactions: flagged)"
        ax.annotate(
            label,
            (max(r.alerts, 0.8 if log else 0), i),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
            color=RED if r.alert_type in noisy else "#222222",
        )
    ax.set_title("Alerts per rule" + (": flagged rules in red" if noisy else ""))
    return _svg(fig, "per-rule")


def _amounts(figures: ReportFigures) -> str:
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    fig = Figure(figsize=(9, 3.2))
    ax = fig.subplots()
    lefts = [b.lower for b in figures.amounts]
    widths = [b.upper - b.lower for b in figures.amounts]
    ax.bar(lefts, [b.txn_count for b in figures.amounts], width=widths, align="edge", color=GREEN)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_xlabel(f"amount in {figures.base_currency} (log scale)")
    ax.set_ylabel("transactions")
    ax.set_title("Amount distribution")
    return _svg(fig, "amounts")


# Section id, title, drawing function: the page's table of contents links to the ids.
CHARTS = (
    ("per-hour", "Transactions and alerts per hour", _hourly),
    ("per-rule", "Alerts per rule", _per_rule),
    ("amounts", "Amount distribution", _amounts),
)


def render_charts(figures: ReportFigures) -> dict[str, tuple[str, str]]:
    """{section id: (title, SVG markup)}; none for a day without transactions."""
    if figures.transactions == 0:
        return {}
    # matplotlib is imported by the drawing functions: ~1.5 s, and only the report needs it.
    return {key: (title, draw(figures)) for key, title, draw in CHARTS}
