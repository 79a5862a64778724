"""Is a day complete? A day is reported once every partition has stored an event past its end.

The watermark of a partition is the latest event time it has stored: once each partition that
carried the day's transactions has a watermark past midnight, the consumer has caught up with
the day on every partition (consumer lag at midnight is over). Events can still arrive later
than that (the simulator back-dates legs of fraud scenarios; a terminal may upload a batch a
day late): the report counts how many of the day's transactions were stored after the day ended,
and a rerun (Clear in Airflow) picks up any that came after the report.

The scheduled run waits for completeness at most REPORT_MAX_WAIT_MINUTES after the day's end,
then reports anyway and says which partitions were behind. The wall clock only bounds that
wait; whether the day is complete is read from the stored data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg2.extensions

from reports.day import day_bounds


@dataclass(frozen=True, slots=True)
class Watermark:
    partition: int
    latest_event: datetime  # the latest event time this partition has stored


@dataclass(frozen=True, slots=True)
class Completeness:
    day: date
    checked_at: datetime  # when the stored data was read
    watermarks: list[Watermark]  # partitions that stored transactions of the day
    late: int  # transactions of the day stored after the day had ended
    last_stored_at: datetime | None  # when the last transaction of the day was stored

    @property
    def end(self) -> datetime:
        return day_bounds(self.day)[1]

    @property
    def behind(self) -> list[Watermark]:
        """Partitions that had not stored any event past the day's end."""
        return [w for w in self.watermarks if w.latest_event < self.end]

    @property
    def complete(self) -> bool:
        return not self.behind

    @property
    def day_over(self) -> bool:
        return self.checked_at >= self.end

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "complete": self.complete,
            "day_over": self.day_over,
            "checked_at": self.checked_at.isoformat(),
            "behind": {w.partition: w.latest_event.isoformat() for w in self.behind},
            "late": self.late,
        }


def ready_to_report(c: Completeness, *, now: datetime, max_wait: timedelta, wait: bool) -> bool:
    """Whether a run should report now: at once when it is not meant to wait (a manual run),
    when the day is complete, or once `max_wait` after the day's end has passed."""
    return not wait or c.complete or now >= c.end + max_wait


_COMPLETENESS_SQL = """
WITH day AS (
    SELECT kafka_partition, processed_at FROM transactions
    WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s
), parts AS (
    SELECT DISTINCT kafka_partition FROM day
)
SELECT 'watermark', p.kafka_partition,
       (SELECT max(t."timestamp") FROM transactions t WHERE t.kafka_partition = p.kafka_partition), NULL::bigint
FROM parts p
UNION ALL
SELECT 'late', NULL, max(processed_at), count(*) FILTER (WHERE processed_at >= %(end)s) FROM day
"""


def read_completeness(
    cur: psycopg2.extensions.cursor, day: date, *, now: datetime | None = None
) -> Completeness:
    """How complete `day` is in the stored data, as of now. Each partition's watermark is one
    backward scan of index (kafka_partition, "timestamp")."""
    start, end = day_bounds(day)
    cur.execute(_COMPLETENESS_SQL, {"start": start, "end": end})
    watermarks, late, last = [], 0, None
    for kind, partition, moment, n in cur.fetchall():
        if kind == "watermark":
            watermarks.append(Watermark(int(partition), moment))
        else:
            late, last = int(n or 0), moment
    watermarks.sort(key=lambda w: w.partition)
    return Completeness(day, now or datetime.now(UTC), watermarks, late, last)
