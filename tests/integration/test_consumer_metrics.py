"""The consumer's /metrics after a seeded run agree with what PostgreSQL holds: transactions by
outcome, alerts by rule and severity, the active rule-set version, and lag back to 0."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fleet import Consumers, seeded_stream, send, tail, wait_processed
from tests.support import query, scalar, wait_until
from tests.unit.test_metrics import free_port
from utils.config import Settings

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def labelled(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def test_the_metrics_counters_agree_with_the_database(
    settings_factory: Callable[..., Settings], tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    s = settings_factory(partitions=3, max_poll_records=500, metrics_port=port)
    url = f"http://127.0.0.1:{port}/metrics"
    _good, msgs = seeded_stream(s, 4000, seed=12)
    send(s, msgs).finish()
    fleet = Consumers(s, tmp_path, children)
    fleet.start("c")
    wait_processed(s, len(msgs))

    stored = int(scalar(s.postgres, "SELECT count(*) FROM transactions"))
    rejected = int(scalar(s.postgres, "SELECT count(*) FROM rejected_transactions"))
    alerts = {
        (rule, severity): n
        for rule, severity, n in query(
            s.postgres, "SELECT alert_type, severity::text, count(*) FROM alerts GROUP BY 1, 2"
        )
    }
    assert stored + rejected == len(msgs) and rejected > 0 and alerts

    def settled() -> Samples | None:
        samples = scrape(url)
        lag = labelled(samples, "txmon_consumer_lag")
        done = len(lag) == 3 and not any(lag.values())
        return samples if done else None

    samples: Samples = {}

    def caught() -> bool:
        nonlocal samples
        samples = settled() or {}
        return bool(samples)

    wait_until(caught, 30, what="the lag gauges at 0 for the three partitions")
    outcomes = {
        dict(k)["outcome"]: v for k, v in labelled(samples, "txmon_consumer_transactions_total").items()
    }
    assert outcomes == {"stored": stored, "rejected": rejected, "already_stored": 0}, outcomes
    scraped_alerts = {
        (dict(k)["rule"], dict(k)["severity"]): int(v)
        for k, v in labelled(samples, "txmon_consumer_alerts_total").items()
    }
    assert scraped_alerts == alerts
    assert labelled(samples, "txmon_consumer_rule_set_version") == {
        frozenset({("group", s.kafka.consumer_group)}): 0.0
    }
    delays = labelled(samples, "txmon_consumer_end_to_end_delay_seconds_count")
    assert list(delays.values()) == [stored]
    sizes = labelled(samples, "txmon_consumer_batch_size_sum")
    assert list(sizes.values()) == [len(msgs)]
    assert fleet.stop("c") == 0, tail(fleet.log("c"))
