"""How long the pipeline stalled: stored rows per partition, sampled while a fault runs.

Shared by the native cluster's fault test (tests/cluster/test_replication.py) and the Compose
cluster's (tests/compose/test_cluster.py). A partition that the producer keeps offering rows to
and that gains none is a stall of the pipeline for that partition, end to end: the leader
election, the producer's wait for the new leader and the consumers' refetch.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

# SELECT partition, rows: what each sample reads.
ROWS_PER_PARTITION = "SELECT kafka_partition, count(*) FROM transactions GROUP BY 1"


class ProgressMonitor(threading.Thread):
    """Calls `sample` (-> {partition: stored rows}) every `interval` seconds and keeps
    (monotonic time, counts)."""

    def __init__(self, sample: Callable[[], dict[int, int]], interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.sample, self.interval = sample, interval
        self.samples: list[tuple[float, dict[int, int]]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            counts = self.sample()
            self.samples.append((time.monotonic(), counts))
            self.stopped.wait(self.interval)

    def longest_stall(self, start: float, end: float) -> tuple[float, int | None]:
        """The longest time any partition went without a new row within [start, end], and which."""
        worst, which = 0.0, None
        partitions = {p for _, counts in self.samples for p in counts}
        for p in partitions:
            last_change, last = start, None
            for t, counts in self.samples:
                if t < start or t > end:
                    continue
                n = counts.get(p, 0)
                if n != last:
                    if last is not None and t - last_change > worst:
                        worst, which = t - last_change, p
                    last_change, last = t, n
            if last is not None and end - last_change > worst:
                worst, which = end - last_change, p
        return worst, which


# The producer's last line (producer/transaction_producer.py): what it sent and what Kafka acked.
PRODUCER_SUMMARY = re.compile(
    r"summary topic=\S+ seed=\d+ sent=(\d+) acked=(\d+) failed=(\d+) unconfirmed=(\d+)"
)
