"""docker-compose.cluster.yml as Compose itself reads it: `extends`, `!override` and the merge with
docker-compose.yml are Compose's to resolve, so the real `docker compose config` checks what the
YAML-level unit tests (tests/unit/test_compose.py) cannot. The three-broker cluster itself is
exercised natively by `make test-cluster` (the same broker properties)."""

from __future__ import annotations

import json
import subprocess

from deploy.compose import COMPOSE_FILE, ENV_EXAMPLE, REPO_ROOT

CLUSTER_FILE = REPO_ROOT / "docker-compose.cluster.yml"


def test_compose_merges_the_cluster_override_into_three_brokers(engine: None) -> None:
    result = subprocess.run(
        [
            "docker", "compose", "--project-directory", str(REPO_ROOT), "--project-name", "txmon-cluster-config",
            "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE_FILE), "-f", str(CLUSTER_FILE),
            "config", "--format", "json",
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    brokers = {n: s for n, s in services.items() if s.get("command") == ["kafka"]}
    assert sorted(brokers) == ["kafka", "kafka-2", "kafka-3"]
    assert sorted(s["environment"]["KAFKA_BROKER_ID"] for s in brokers.values()) == ["0", "1", "2"]
    published = {p["published"] for s in brokers.values() for p in s["ports"]}
    volumes = {v["source"] for s in brokers.values() for v in s["volumes"] if v["source"] != "kafka_tls"}
    assert len(published) == 3 and len(volumes) == 3, (published, volumes)
    # Each broker reads the one key store kafka-tls made (its certificate names all three).
    assert all("kafka_tls" in {v["source"] for v in s["volumes"]} for s in brokers.values())
    for name, s in brokers.items():
        env = s["environment"]
        assert env["KAFKA_ADVERTISED_LISTENERS"].startswith(f"INTERNAL://{name}:29092,")
        assert (env["KAFKA_DEFAULT_REPLICATION_FACTOR"], env["KAFKA_MIN_INSYNC_REPLICAS"]) == ("3", "2")
        assert s["depends_on"]["zookeeper"]["condition"] == "service_healthy", name
        assert s["healthcheck"]["test"], name  # extended from the base broker
    clients = [n for n, s in services.items() if "KAFKA_BOOTSTRAP_SERVERS" in (s.get("environment") or {})]
    for name in clients:
        env = services[name]["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:29092,kafka-2:29092,kafka-3:29092", name
        assert env["KAFKA_REPLICATION_FACTOR"] == "3", name
