"""Which UTC day a report run covers, and that day's bounds.

Which clock defines "the day" depends on the figure:
* summary and rule quality: the transaction's event `timestamp` (alerts belong to their
  transaction's day), so a late-arriving transaction lands in its own day when that day is rerun;
* rejected messages: `rejected_at`, since an invalid message may carry no usable timestamp;
* reconciliation: the consumer's `processed_at` / `rejected_at`, because offsets are consumed in
  order on that clock; event time is not monotonic in offsets (the producer back-dates scenario
  legs), so event-time days would show false gaps at midnight.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from reports.errors import ReportError


def report_day(
    data_interval_start: datetime | None,
    override: str | date | None = None,
    *,
    run_after: datetime | None = None,
) -> date:
    """The UTC day a run reports on: an explicit override (`YYYY-MM-DD`), else its data
    interval's start, else (a manual run triggered without a logical date has no data
    interval) the last complete day before `run_after`, as the schedule would have chosen."""
    if isinstance(override, date):
        return override
    if override is not None and str(override).strip():
        try:
            return date.fromisoformat(str(override).strip())
        except ValueError:
            raise ReportError(f"day={override!r} is not a date: use YYYY-MM-DD, e.g. 2026-03-10") from None
    moment, shift = (data_interval_start, 0) if data_interval_start is not None else (run_after, 1)
    if moment is None:
        raise ReportError("this run has no data interval: trigger it with a day (YYYY-MM-DD) in its params")
    if moment.tzinfo is None:
        raise ReportError(f"{moment} has no time zone")
    return moment.astimezone(UTC).date() - timedelta(days=shift)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of `day` in UTC, as timestamps so that range scans use the indexes."""
    start = datetime.combine(day, time(0), UTC)
    return start, start + timedelta(days=1)
