"""Reconciliation's arithmetic, pure functions over plain data: which offsets of a partition the
consumer accounted for on a day (stored or rejected), the ranges it skipped, and where the
offsets restarted because the topic was recreated (or its offsets reset).

A restart is read from the stored offsets themselves. Within one incarnation of a topic, the
transactions of a partition are stored in offset order (one consumer owns a partition at a time,
and every batch writes its rows in offset order), so a stored offset *below* the one stored just
before it, in processing order, can only mean a new log: offsets began again. Rejected messages
are written after the stored rows of their batch, so they are not used to find restarts; each
belongs to the run that was current when it was rejected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Offset:
    """One message the consumer accounted for: where it was and when it was stored or rejected."""

    topic: str  # "" until transactions record their topic (the consumer reads one topic)
    partition: int
    offset: int
    at: datetime
    stored: bool


@dataclass(frozen=True, slots=True)
class OffsetRun:
    """A stretch of one partition's offsets from one incarnation of the topic."""

    first_offset: int
    last_offset: int
    stored: int
    rejected: int
    gaps: list[tuple[int, int]] = field(default_factory=list)  # inclusive ranges neither stored nor rejected
    restarted: bool = False  # began below the offsets accounted for before it

    @property
    def missing(self) -> int:
        return sum(last - first + 1 for first, last in self.gaps)


@dataclass(frozen=True, slots=True)
class PartitionReconciliation:
    topic: str
    partition: int
    previous_offset: int | None  # the last offset accounted for before the day, if any
    runs: list[OffsetRun]

    @property
    def stored(self) -> int:
        return sum(r.stored for r in self.runs)

    @property
    def rejected(self) -> int:
        return sum(r.rejected for r in self.runs)

    @property
    def missing(self) -> int:
        return sum(r.missing for r in self.runs)

    @property
    def restarts(self) -> int:
        return sum(r.restarted for r in self.runs)


def find_gaps(offsets: Iterable[int], previous: int | None = None) -> list[tuple[int, int]]:
    """Inclusive ranges of offsets missing from an ascending sequence (repeats allowed).

    `previous` is the highest offset accounted for before the sequence (the day before), so a
    gap across midnight is found too. Without it the sequence is taken to start where it starts:
    a topic may legitimately begin above 0 (retention, a purge, a consumer attached later).
    Our producer is idempotent but not transactional, so a partition's offsets are contiguous;
    a transactional producer's commit markers would show up here as one-offset gaps.
    """
    gaps: list[tuple[int, int]] = []
    last = previous
    for offset in offsets:
        if last is not None and offset > last + 1:
            gaps.append((last + 1, offset - 1))
        if last is None or offset > last:
            last = offset
    return gaps


def split_runs(items: Sequence[Offset], previous: int | None) -> list[OffsetRun]:
    """One partition's offsets of a day, in processing order, cut where a stored offset falls
    below the stored offset before it (the first against `previous`, the last offset accounted
    for before the day). Each run's gaps are checked from its own start; the first run's from
    `previous` too, unless it is itself a restart."""
    runs: list[list[Offset]] = []
    restarted: list[bool] = []
    last_stored = previous
    for item in items:
        if item.stored:
            if last_stored is not None and item.offset < last_stored:
                runs.append([])
                restarted.append(True)
            last_stored = item.offset
        if not runs:
            runs.append([])
            restarted.append(False)
        runs[-1].append(item)
    out = []
    for i, (members, began_anew) in enumerate(zip(runs, restarted, strict=True)):
        offsets = sorted(m.offset for m in members)
        n_stored = sum(1 for m in members if m.stored)
        before = previous if i == 0 and not began_anew else None
        out.append(
            OffsetRun(
                first_offset=offsets[0],
                last_offset=offsets[-1],
                stored=n_stored,
                rejected=len(members) - n_stored,
                gaps=find_gaps(offsets, before),
                restarted=began_anew,
            )
        )
    return out


def reconcile(
    items: Iterable[Offset], previous: Mapping[tuple[str, int], int | None]
) -> list[PartitionReconciliation]:
    """Per (topic, partition): the day's runs of offsets, their counts and gaps. `items` in any
    order; `previous` maps (topic, partition) to the last offset accounted for before the day."""
    by_partition: dict[tuple[str, int], list[Offset]] = {}
    for item in items:
        by_partition.setdefault((item.topic, item.partition), []).append(item)
    out = []
    for key, members in sorted(by_partition.items()):
        # Processing order; at one instant, stored rows before rejected ones (the batch's order).
        members.sort(key=lambda m: (m.at, not m.stored, m.offset))
        out.append(
            PartitionReconciliation(key[0], key[1], previous.get(key), split_runs(members, previous.get(key)))
        )
    return out
