"""What a consumer run did, as its exit line and its `--summary-json`."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ProcessorSummary", "format_summary"]


@dataclass(slots=True)
class ProcessorSummary:
    consumed: int = 0
    stored: int = 0
    already_stored: int = 0
    rejected: int = 0
    alerts: Counter[str] = field(default_factory=Counter)
    rejected_reasons: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    db_retries: int = 0
    fenced: int = 0  # batches rolled back because another member owned a partition by then
    rewinds: int = 0  # times the consumer went back to the stored offsets and emptied its cache
    client_restarts: int = 0  # Kafka clients replaced because a partition stalled (GroupMember.stalled)
    accounts_loaded: int = 0
    dlq_published: int = 0
    elapsed_s: float = 0.0
    active_s: float = 0.0  # first message polled -> last batch committed (excludes idle waiting)
    clean_exit: bool = True

    @property
    def rate(self) -> float:
        """Transactions stored per second of active time."""
        return self.stored / self.active_s if self.active_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["alerts"] = dict(self.alerts)
        d["rejected_reasons"] = dict(self.rejected_reasons)
        d["rate"] = round(self.rate, 1)
        return d


def format_summary(s: ProcessorSummary) -> str:
    alerts = ", ".join(f"{k}={v}" for k, v in sorted(s.alerts.items())) or "none"
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(s.rejected_reasons.items())) or "none"
    return (
        f"consumer summary: consumed={s.consumed} stored={s.stored} already_stored={s.already_stored} "
        f"rejected={s.rejected} alerts={sum(s.alerts.values())} ({alerts}) rejected_by_reason=({reasons}) "
        f"batches={s.batches} db_retries={s.db_retries} fenced={s.fenced} rewinds={s.rewinds} "
        f"client_restarts={s.client_restarts} "
        f"accounts_loaded={s.accounts_loaded} dlq_published={s.dlq_published} elapsed={s.elapsed_s:.1f}s "
        f"active={s.active_s:.1f}s rate={s.rate:.0f}/s"
    )
