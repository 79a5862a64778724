"""docker/prometheus/: the scrape config is valid, the alerting rules pass `promtool test rules`,
and every metric they read is one the producer or consumer exports. Needs promtool (Debian's
`prometheus` package; .ci/run installs it): without it these tests fail, never skip."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumer.metrics import ConsumerMetrics
from producer.metrics import ProducerCollector, ProducerCounts

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "docker" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `apt-get install -y prometheus` (Debian) provides it")
    return path


def run(promtool: str, *args: str) -> str:
    proc = subprocess.run([promtool, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_config_and_rule_files_are_valid(promtool: str) -> None:
    out = run(promtool, "check", "config", "prometheus.yml")
    assert "SUCCESS" in out and "alerts.yml" in out


def test_alerting_rules_pass_their_tests(promtool: str) -> None:
    assert "SUCCESS" in run(promtool, "test", "rules", "alerts.test.yml")


def test_alertmanager_config_is_valid_and_delivers_where_compose_listens() -> None:
    """amtool (Debian's prometheus-alertmanager) accepts the configuration; Prometheus sends to the
    Alertmanager service, and Alertmanager to the receiver service, on the ports Compose gives."""
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.fail("amtool is missing: `apt-get install -y prometheus-alertmanager` (Debian) provides it")
    config = PROMETHEUS_DIR.parent / "alertmanager" / "alertmanager.yml"
    proc = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr
    compose = yaml.safe_load((PROMETHEUS_DIR.parents[1] / "docker-compose.yml").read_text())["services"]
    prometheus = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    targets = [
        t
        for am in prometheus["alerting"]["alertmanagers"]
        for c in am["static_configs"]
        for t in c["targets"]
    ]
    assert targets == ["alertmanager:9093"] and "alertmanager" in compose
    manager = yaml.safe_load(config.read_text())
    (receiver,) = manager["receivers"]
    assert manager["route"]["receiver"] == receiver["name"]
    assert [w["url"] for w in receiver["webhook_configs"]] == ["http://alert-receiver:9095/alerts"]
    assert compose["alert-receiver"]["command"][-4:-2] == ["--port", "9095"]


def test_every_alert_has_a_test_and_says_the_fix() -> None:
    rules = [
        r for g in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"] for r in g["rules"]
    ]
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())["tests"]
    tested = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case["exp_alerts"]}
    assert {r["alert"] for r in rules} == tested
    assert all(r["annotations"]["fix"] for r in rules)


def _exported() -> set[str]:
    consumer = ConsumerMetrics("g", CollectorRegistry())
    consumer.set_lag({("t", 0): 1})
    producer = CollectorRegistry()
    producer.register(ProducerCollector(lambda: ProducerCounts(1, 1, 0, 1.0, 0.0)))
    names = set()
    for registry in (consumer.registry, producer):
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            names.add(family.name)  # a histogram's name, as annotations mention it
            names.update(sample.name for sample in family.samples)
    return names


def test_rules_read_only_metrics_we_export() -> None:
    used = set(re.findall(r"\btxmon_[a-z_]+", (PROMETHEUS_DIR / "alerts.yml").read_text()))
    assert used, "the parse found the metrics"
    assert used <= _exported(), sorted(used - _exported())


def test_the_documented_queries_are_the_tested_ones() -> None:
    page = (PROMETHEUS_DIR.parents[1] / "docs" / "metrics.md").read_text()
    block = re.search(r"```promql\n(.*?)```", page, re.S)
    assert block, "docs/metrics.md has a ```promql block of operator queries"
    queries = [line for line in block.group(1).splitlines() if line.strip()]
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())["tests"]
    tested = [case["expr"] for t in tests for case in t.get("promql_expr_test", [])]
    assert len(queries) == 5 and queries == tested


def test_compose_runs_it_against_the_services_and_ports_it_scrapes() -> None:
    """Every target in prometheus.yml is a Compose service serving metrics on that port, on an
    address Prometheus reaches; the Prometheus service mounts the configuration and its rule
    files where the image's command and `rule_files` look for them."""
    root = PROMETHEUS_DIR.parents[1]
    services = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    targets: list[tuple[str, str]] = []
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            targets += [tuple(target.rsplit(":", 1)) for target in static["targets"]]  # type: ignore[misc]
        for dns in job.get("dns_sd_configs", []):
            targets += [(name, str(dns["port"])) for name in dns["names"]]
    scraped = set()
    for host, port in targets:
        if host == "localhost":
            continue  # Prometheus itself
        env = services[host]["environment"]
        ports = [str(value) for key, value in env.items() if key.endswith("_METRICS_PORT")]
        assert ports == [port], f"{host} serves metrics on {ports}, prometheus.yml scrapes {port}"
        assert env["METRICS_ADDRESS"] == "0.0.0.0", f"{host}'s metrics must listen beyond loopback"
        scraped.add(host)
    assert scraped == {"producer", "consumer"}

    prometheus = services["prometheus"]
    mounts = dict(volume.split(":")[:2] for volume in prometheus["volumes"])
    command = (root / "docker" / "prometheus.Dockerfile").read_text()
    assert mounts["./docker/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in command
    for rule_file in config["rule_files"]:
        assert mounts[f"./docker/prometheus/{rule_file}"] == f"/etc/prometheus/{rule_file}"
    assert f"--storage.tsdb.path={mounts['prometheus_data']}" in command
