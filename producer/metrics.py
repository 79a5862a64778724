"""The producer's Prometheus metrics: messages sent, acked and failed, and the rate.

Read from the producer's own counters when Prometheus scrapes (a custom collector), so sending
a message costs nothing extra.

    txmon_producer_messages_sent_total     handed to the Kafka client
    txmon_producer_messages_acked_total    acknowledged by the broker (acks=all): delivered
    txmon_producer_messages_failed_total   failed for good (the summary's `failed`)
    txmon_producer_messages_in_flight      sent, neither acked nor failed yet
    txmon_producer_rate_per_second         acked per second over the last progress interval
    txmon_producer_target_rate_per_second  --rate / PRODUCER_RATE (0: as fast as possible)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from utils.metrics import MetricsServer, new_registry, serve


class ProducerCounts(NamedTuple):
    sent: int
    acked: int
    failed: int
    rate: float
    target_rate: float


class ProducerCollector(Collector):
    def __init__(self, read: Callable[[], ProducerCounts]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        c = self._read()
        for name, value, text in (
            ("sent", c.sent, "handed to the Kafka client"),
            ("acked", c.acked, "acknowledged by the broker (acks=all): delivered"),
            ("failed", c.failed, "failed for good"),
        ):
            yield CounterMetricFamily(f"txmon_producer_messages_{name}", f"Messages {text}.", value=value)
        yield GaugeMetricFamily(
            "txmon_producer_messages_in_flight",
            "Messages sent, neither acked nor failed yet.",
            value=c.sent - c.acked - c.failed,
        )
        yield GaugeMetricFamily(
            "txmon_producer_rate_per_second",
            "Messages acked per second over the last progress interval.",
            value=c.rate,
        )
        yield GaugeMetricFamily(
            "txmon_producer_target_rate_per_second",
            "The configured rate (PRODUCER_RATE / --rate); 0 means as fast as possible.",
            value=c.target_rate,
        )


def serve_producer_metrics(
    read: Callable[[], ProducerCounts], port: int, address: str
) -> MetricsServer | None:
    """Serve the producer's metrics on PRODUCER_METRICS_PORT (None when it is 0)."""
    registry = new_registry()
    registry.register(ProducerCollector(read))
    return serve(registry, port, address, "PRODUCER_METRICS_PORT")
