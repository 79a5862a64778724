"""Numbers as a person reads them: durations in s/min/h/days, counts with thousands separators,
shares as percentages. Used by the report, the monitoring lines and the runs' notes."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """0.042 s, 2.5 s, 42 s, 6 min 2 s, 3 h 12 min, 331 days 4 h; negative durations keep their sign."""
    if seconds < 0:
        return "-" + duration(-seconds)
    if seconds < 1:
        return f"{seconds:.2g} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    unit = "day" if days == 1 else "days"
    return f"{days:,} {unit} {hours} h" if hours else f"{days:,} {unit}"


def count(n: float, unit: str = "") -> str:
    """12,345 messages; fractions only where they say something (0.5, not 12,345.0)."""
    text = f"{n:,.0f}" if float(n).is_integer() or abs(n) >= 100 else f"{n:,.2f}".rstrip("0").rstrip(".")
    return f"{text} {unit}".rstrip()


def percent(value: float, *, ratio: bool = True) -> str:
    """A ratio (0.073) or a percentage (7.3) as "7.3%"."""
    pct = value * 100 if ratio else value
    return f"{pct:.1f}%" if pct >= 0.1 or pct == 0 else f"{pct:.2g}%"
