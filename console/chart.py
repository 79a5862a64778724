"""The account view's chart: each transaction's amount as a bar on a time axis, alerted ones in
red, drawn as an inline SVG on the server (no script, no chart library in the page).

Pure: rows in, markup out. Every piece of text is escaped; the bars carry a <title> so a person
hovering sees the amount and the rules that fired.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from html import escape

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 760, 220, 64, 34, 12
BLUE, RED = "#4477aa", "#cc3311"


def amounts_svg(rows: Sequence[dict[str, object]]) -> str:
    """Rows with `timestamp` (datetime), `amount`, `currency` and `alert_types` (list)."""
    if not rows:
        return '<p class="muted">No transactions to chart.</p>'
    times = [r["timestamp"] for r in rows]
    assert all(isinstance(t, datetime) for t in times)
    start, end = min(times), max(times)  # type: ignore[type-var]
    span = max((end - start).total_seconds(), 1.0)  # type: ignore[operator]
    top = max(Decimal(str(r["amount"])) for r in rows) or Decimal(1)
    plot_w, plot_h = WIDTH - LEFT - 10, HEIGHT - BOTTOM - TOP
    bar = max(2.0, min(12.0, plot_w / (len(rows) * 1.5)))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="transaction amounts over time" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" class="chart">',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 10}" y2="{TOP + plot_h}" stroke="#555"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#555"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end" font-size="11">{escape(f"{top:,.0f}")}</text>',
        f'<text x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end" font-size="11">0</text>',
        f'<text x="{LEFT}" y="{HEIGHT - 8}" font-size="11">{escape(start.strftime("%Y-%m-%d %H:%M"))}</text>',  # type: ignore[attr-defined]
        f'<text x="{WIDTH - 10}" y="{HEIGHT - 8}" text-anchor="end" font-size="11">'
        f"{escape(end.strftime('%Y-%m-%d %H:%M'))} UTC</text>",  # type: ignore[attr-defined]
    ]
    for r in rows:
        amount = Decimal(str(r["amount"]))
        x = LEFT + ((r["timestamp"] - start).total_seconds() / span) * (plot_w - bar)  # type: ignore[operator]
        h = max(1.0, float(amount / top) * plot_h)
        alerts = list(r.get("alert_types") or [])  # type: ignore[call-overload]
        colour = RED if alerts else BLUE
        label = f"{amount:,.2f} {r['currency']}" + (f" - {', '.join(map(str, alerts))}" if alerts else "")
        parts.append(
            f'<rect x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}">'
            f"<title>{escape(label)}</title></rect>"
        )
    parts.append("</svg>")
    return "".join(parts)
