"""The Prometheus metrics of the producer and the consumer, read back as Prometheus reads them."""

from __future__ import annotations

import socket
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumer.metrics import DELAY_BUCKETS, BatchStats, ConsumerMetrics
from consumer.rulesets.store import Activation
from producer.metrics import ProducerCollector, ProducerCounts
from utils.errors import ConfigError
from utils.metrics import new_registry, serve

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    """{(sample name, sorted labels): value}, parsed from the text exposition format."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_consumer_metrics_add_up_batches() -> None:
    m = ConsumerMetrics("g1", CollectorRegistry())
    m.record_batch(
        BatchStats(
            stored=3,
            rejected=1,
            alerts=Counter({("velocity", "medium"): 2, ("high_amount", "critical"): 1}),
            evaluation_s=0.002,
            write_s=0.03,
            sent_epochs=[100.0, 99.99, 40.0],
            stored_at=100.02,
        )
    )
    m.record_batch(BatchStats(already_stored=5, alerts=Counter({("velocity", "medium"): 1}), stored_at=200.0))
    s = scrape(m.registry)
    assert value(s, "txmon_consumer_transactions_total", outcome="stored") == 3
    assert value(s, "txmon_consumer_transactions_total", outcome="rejected") == 1
    assert value(s, "txmon_consumer_transactions_total", outcome="already_stored") == 5
    assert value(s, "txmon_consumer_alerts_total", rule="velocity", severity="medium") == 3
    assert value(s, "txmon_consumer_alerts_total", rule="high_amount", severity="critical") == 1
    assert value(s, "txmon_consumer_batch_size_count") == 2
    assert value(s, "txmon_consumer_batch_size_sum") == 9
    assert value(s, "txmon_consumer_batch_write_seconds_sum") == pytest.approx(0.03)
    assert value(s, "txmon_consumer_rule_evaluation_seconds_count") == 2
    assert value(s, "txmon_consumer_last_batch_timestamp_seconds") == 200.0
    # delays 0.02, 0.03, 60.02: buckets are cumulative, a value on a bound counts in it
    delay = "txmon_consumer_end_to_end_delay_seconds"
    assert value(s, f"{delay}_count") == 3
    assert value(s, f"{delay}_sum") == pytest.approx(60.07)
    assert value(s, f"{delay}_bucket", le="0.01") == 0
    assert value(s, f"{delay}_bucket", le="0.025") == 1
    assert value(s, f"{delay}_bucket", le="0.05") == 2
    assert value(s, f"{delay}_bucket", le="60.0") == 2
    assert value(s, f"{delay}_bucket", le="300.0") == 3
    assert value(s, f"{delay}_bucket", le="+Inf") == 3
    assert len([k for k in s if k[0] == f"{delay}_bucket"]) == len(DELAY_BUCKETS) + 1


def test_every_outcome_is_exported_from_the_start() -> None:
    s = scrape(ConsumerMetrics("g", CollectorRegistry()).registry)
    for outcome in ("stored", "rejected", "already_stored"):
        assert value(s, "txmon_consumer_transactions_total", outcome=outcome) == 0
    assert value(s, "txmon_consumer_rule_set_version", group="g") == 0


def test_lag_follows_the_assignment_and_version_is_labelled_by_group() -> None:
    m = ConsumerMetrics("g", CollectorRegistry())
    m.set_lag({("tx", 0): 10, ("tx", 1): 0})
    m.set_lag({("tx", 1): 4, ("tx", 2): 7})
    m.set_rule_set_version(3)
    s = scrape(m.registry)
    lags = {dict(k[1])["partition"]: v for k, v in s.items() if k[0] == "txmon_consumer_lag"}
    assert lags == {"1": 4, "2": 7}  # partition 0 was revoked: gone, not stuck at 10
    assert value(s, "txmon_consumer_rule_set_version", group="g") == 3


def test_rule_set_activation_is_one_series_labelled_with_the_newest_activation() -> None:
    """Absent until something is activated; each new activation replaces the series (so an alert
    on it names the version and the login), and the value is when it was activated."""
    name = "txmon_consumer_rule_set_activated_timestamp_seconds"
    m = ConsumerMetrics("g", CollectorRegistry())
    m.set_rule_set_activation(None)
    assert not [k for k in scrape(m.registry) if k[0] == name]
    at = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
    m.set_rule_set_activation(Activation(2, "alice", at, "tighter velocity"))
    m.set_rule_set_activation(Activation(3, "bob", at + timedelta(minutes=5), "roll back"))
    s = scrape(m.registry)
    assert [dict(k[1]) for k in s if k[0] == name] == [{"group": "g", "version": "3", "activated_by": "bob"}]
    assert value(s, name, group="g", version="3", activated_by="bob") == at.timestamp() + 300
    m.set_rule_set_activation(None)  # the history cannot lose rows, but a test database can be reset
    assert not [k for k in scrape(m.registry) if k[0] == name]


def test_producer_collector_reads_the_live_counts() -> None:
    counts = ProducerCounts(sent=10, acked=7, failed=1, rate=250.0, target_rate=500.0)
    registry = CollectorRegistry()
    registry.register(ProducerCollector(lambda: counts))
    s = scrape(registry)
    assert value(s, "txmon_producer_messages_sent_total") == 10
    assert value(s, "txmon_producer_messages_acked_total") == 7
    assert value(s, "txmon_producer_messages_failed_total") == 1
    assert value(s, "txmon_producer_messages_in_flight") == 2
    assert value(s, "txmon_producer_rate_per_second") == 250.0
    assert value(s, "txmon_producer_target_rate_per_second") == 500.0


def free_port() -> int:
    """A loopback port nobody listens on right now (tests/integration/test_producer_metrics.py too)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_is_off_at_port_0_and_serves_http_otherwise() -> None:
    registry = new_registry()
    assert serve(registry, 0, "127.0.0.1", "X_PORT") is None
    port = free_port()
    server = serve(registry, port, "127.0.0.1", "X_PORT")
    assert server is not None
    try:
        with urllib.request.urlopen(server.url, timeout=5) as response:
            body = response.read().decode()
        assert "process_cpu_seconds_total" in body  # the process collector is on our registry
    finally:
        server.close()


def test_a_taken_port_names_the_setting_and_the_fix() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"CONSUMER_METRICS_PORT={port}: .*choose a free port"):
            ConsumerMetrics("g", CollectorRegistry()).serve(port, "127.0.0.1")
