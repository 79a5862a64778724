"""The consumer's Prometheus metrics, served on CONSUMER_METRICS_PORT.

The consumer fills a `BatchStats` with plain ints and floats while it works and hands it over
once per batch (`ConsumerMetrics.record_batch`): a handful of lock acquisitions per batch,
never one per message. The end-to-end delay histogram takes a whole batch of delays at once.

    txmon_consumer_transactions_total{outcome}         stored | rejected | already_stored
    txmon_consumer_alerts_total{rule,severity}         alerts stored
    txmon_consumer_rule_evaluation_seconds             per batch: validation and rules
    txmon_consumer_batch_write_seconds                 per batch: the database transaction
    txmon_consumer_batch_size                          messages per batch
    txmon_consumer_end_to_end_delay_seconds            per stored transaction: stored - Kafka record time
    txmon_consumer_rule_set_version{group}             active version (0: the environment's set)
    txmon_consumer_rule_set_activated_timestamp_seconds{group,version,activated_by}
                                                       when the newest activation was made, and by whom
    txmon_consumer_lag{group,topic,partition}          messages behind the partition's end
    txmon_consumer_last_batch_timestamp_seconds        when the last batch was stored (Unix time)
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from utils.metrics import MetricsServer, new_registry, serve

if TYPE_CHECKING:
    from consumer.rulesets.store import Activation

__all__ = ["OUTCOMES", "BatchStats", "ConsumerMetrics"]

OUTCOMES = ("stored", "rejected", "already_stored")
# Event time to stored: ~20-50 ms live (docs/performance.md); minutes mean a backlog; the
# simulated clock lands in +Inf.
DELAY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


@dataclass(slots=True)
class BatchStats:
    """What one batch did. `sent_epochs` are the stored transactions' Kafka record times (when
    they were sent, as the monitoring's delay reads them; not their event time, which simulated
    traffic stamps days back); `stored_at` is when their database transaction committed (Unix time)."""

    stored: int = 0
    rejected: int = 0
    already_stored: int = 0
    alerts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule, severity) -> count
    evaluation_s: float = 0.0
    write_s: float = 0.0
    sent_epochs: Iterable[float] = ()
    stored_at: float = 0.0

    @property
    def size(self) -> int:
        return self.stored + self.rejected + self.already_stored


class _BatchHistogram(Collector):
    """A histogram fed a whole batch of observations at once under one lock (prometheus_client's
    Histogram takes its lock once per observation)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation, self.bounds = name, documentation, buckets
        self._counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: Iterable[float]) -> None:
        counts = [0] * len(self._counts)
        total = 0.0
        bounds, find = self.bounds, bisect.bisect_left
        for value in values:
            counts[find(bounds, value)] += 1  # bisect_left: a value equal to a bound is in it (le)
            total += value
        with self._lock:
            for i, n in enumerate(counts):
                self._counts[i] += n
            self._sum += total

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, n in zip((*map(str, self.bounds), "+Inf"), counts, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)


class ConsumerMetrics:
    """Every metric of one consumer process, on its own registry."""

    def __init__(self, group: str, registry: CollectorRegistry | None = None) -> None:
        self.group = group
        self.registry = registry or new_registry()
        r = self.registry
        self.transactions = PromCounter(
            "txmon_consumer_transactions", "Messages by outcome.", ["outcome"], registry=r
        )
        for outcome in OUTCOMES:
            self.transactions.labels(outcome)  # present at 0 from the start, so rate() sees the first
        self.alerts = PromCounter(
            "txmon_consumer_alerts", "Alerts stored, by rule and severity.", ["rule", "severity"], registry=r
        )
        self.evaluation = Histogram(
            "txmon_consumer_rule_evaluation_seconds",
            "Time to validate a batch and evaluate the rules on it.",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.write = Histogram(
            "txmon_consumer_batch_write_seconds",
            "Time of a batch's database transaction.",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.size = Histogram(
            "txmon_consumer_batch_size", "Messages per batch.", buckets=SIZE_BUCKETS, registry=r
        )
        self.delay = _BatchHistogram(
            "txmon_consumer_end_to_end_delay_seconds",
            "Per stored transaction: the time it was stored minus its Kafka record time (sent).",
            DELAY_BUCKETS,
        )
        r.register(self.delay)
        self.rule_set_version = Gauge(
            "txmon_consumer_rule_set_version",
            "The rule-set version this consumer evaluates (0: none published, the environment's set).",
            ["group"],
            registry=r,
        )
        # One series, labelled with the newest activation: a new activation replaces it, so the
        # alert TxmonRuleSetActivated (docker/prometheus/alerts.yml) sees who and which version.
        self.rule_set_activated = Gauge(
            "txmon_consumer_rule_set_activated_timestamp_seconds",
            "When the newest rule-set activation was made (the database's time), labelled with its "
            "version and who made it (their own login); absent until one exists.",
            ["group", "version", "activated_by"],
            registry=r,
        )
        self._activation_labels: tuple[str, str, str] | None = None
        self.lag = Gauge(
            "txmon_consumer_lag",
            "Messages between this consumer's position and the end of each assigned partition.",
            ["group", "topic", "partition"],
            registry=r,
        )
        self.last_batch = Gauge(
            "txmon_consumer_last_batch_timestamp_seconds",
            "Unix time the last batch was stored.",
            registry=r,
        )
        self._lag_labels: set[tuple[str, str, str]] = set()
        self.set_rule_set_version(None)

    def record_batch(self, stats: BatchStats) -> None:
        """Once per batch, after its database transaction committed."""
        for outcome in OUTCOMES:
            n = getattr(stats, outcome)
            if n:
                self.transactions.labels(outcome).inc(n)
        for (rule, severity), n in stats.alerts.items():
            self.alerts.labels(rule, severity).inc(n)
        self.evaluation.observe(stats.evaluation_s)
        self.write.observe(stats.write_s)
        self.size.observe(stats.size)
        stored_at = stats.stored_at
        self.delay.observe_many(stored_at - epoch for epoch in stats.sent_epochs)
        self.last_batch.set(stored_at)

    def set_rule_set_version(self, version: int | None) -> None:
        self.rule_set_version.labels(self.group).set(version or 0)

    def set_rule_set_activation(self, activation: Activation | None) -> None:
        """The newest activation read from the database (None: nothing published yet)."""
        labels = (
            None if activation is None else (self.group, str(activation.version), activation.activated_by)
        )
        if self._activation_labels is not None and self._activation_labels != labels:
            self.rule_set_activated.remove(*self._activation_labels)
        if activation is not None and labels is not None:
            self.rule_set_activated.labels(*labels).set(activation.activated_at.timestamp())
        self._activation_labels = labels

    def set_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        """The lag of every partition assigned now; partitions no longer assigned disappear."""
        current = {(self.group, topic, str(partition)): n for (topic, partition), n in lag.items()}
        for labels in self._lag_labels - current.keys():
            self.lag.remove(*labels)
        for labels, n in current.items():
            self.lag.labels(*labels).set(n)
        self._lag_labels = set(current)

    def serve(self, port: int, address: str) -> MetricsServer | None:
        return serve(self.registry, port, address, "CONSUMER_METRICS_PORT")
