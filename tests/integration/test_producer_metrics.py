"""The producer's /metrics against the real broker: live counts while it sends, never ahead of
what the broker acknowledged, and closed with the run."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from producer.transaction_producer import ProducerSummary, run_producer
from stack.orchestrator import StackEnv
from tests.unit.test_metrics import free_port
from utils.config import KafkaSettings, Settings

pytestmark = pytest.mark.integration


def _scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def test_producer_metrics_follow_the_run(stack_env: StackEnv, topic_factory: Callable[..., str]) -> None:
    port = free_port()
    base = Settings()
    settings = dataclasses.replace(
        base,
        kafka=KafkaSettings(
            bootstrap_servers=stack_env.kafka_bootstrap_servers, topic=topic_factory("pm", 3)
        ),
        producer=dataclasses.replace(base.producer, metrics_port=port),
    )
    url = f"http://127.0.0.1:{port}/metrics"
    result: list[ProducerSummary] = []
    count, rate = 3_000, 1_000.0
    thread = threading.Thread(
        target=lambda: result.append(
            run_producer(settings, count=count, rate=rate, seed=5, clock="simulated", progress_seconds=0.5)
        )
    )
    thread.start()
    scrapes: list[dict[str, float]] = []
    try:
        while thread.is_alive():
            # not listening yet, or already closed at the end of the run
            with contextlib.suppress(urllib.error.URLError, ConnectionError):
                scrapes.append(_scrape(url))
            time.sleep(0.2)
    finally:
        thread.join(timeout=60)
    (summary,) = result
    assert summary.acked == count and summary.failed == 0
    assert len(scrapes) >= 5, scrapes
    for s in scrapes:
        sent, acked, failed = (s[f"txmon_producer_messages_{k}_total"] for k in ("sent", "acked", "failed"))
        assert failed == 0 and acked <= sent <= count
        assert s["txmon_producer_messages_in_flight"] == sent - acked
        assert s["txmon_producer_target_rate_per_second"] == rate
    acked_seen = [s["txmon_producer_messages_acked_total"] for s in scrapes]
    assert acked_seen == sorted(acked_seen) and 0 < acked_seen[-1] <= summary.acked
    assert any(0 < s["txmon_producer_rate_per_second"] <= 2 * rate for s in scrapes)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        _scrape(url)  # the run is over: the port is free again
